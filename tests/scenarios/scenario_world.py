"""Simulated worlds for the decision scenarios: real data, real features, a real trained champion.

A world is one run of the transaction simulator published into a curated store, its features
materialised by Feast, a fraud detector trained on the first days (the real trainer, a small config) and
registered as the champion in a SQLite MLflow. The days after the training window are then *served*: each
transaction scored by the champion on its point-in-time features (what serving sees when the online store
is fresh) and appended to a real prediction log with the transaction's own time, so the real drift monitor
(``run_check``) reads them exactly as it reads live traffic.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopline.config import Settings
from loopline.usecases.fraud.simulator import Drift, SimulationConfig, simulate

MODEL_NAME = "fraud_detector"
REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINING_CONFIG = REPO_ROOT / "include" / "loopline" / "usecases" / "fraud" / "policies" / "training.yaml"
# Small and quick, but a real model: it ranks fraud far above chance on these worlds.
FAST_TRAINING = [
    "epochs=6",
    "batch_size=256",
    "model.hidden_sizes=[32, 16]",
    "early_stopping.patience=3",
    "device=cpu",
]
START = date(2026, 3, 2)  # a Monday


@dataclass
class World:
    settings: Settings
    start: date
    days: int
    serve_from: int  # the first served day: the champion was trained with the labels known at its start
    version: str
    sim: object
    holdout: Path | None = None
    training_set: Path | None = None  # what the champion was trained on
    model_name: str = MODEL_NAME

    def day_start(self, index: int) -> datetime:
        return datetime.combine(self.start + timedelta(days=index), datetime.min.time(), tzinfo=UTC)


def shipped_gate_policy():
    """The shipped gate policy with the serving-path checks (latency, infra) off: the worlds have no online
    store, and the scenarios are about what is decided from data."""
    from loopline.gating.policy import load_policy

    # The worlds are fraud's (its simulator): its gate policy, whatever the environment's use case is.
    policy = load_policy(Settings(use_case="fraud", project_dir=REPO_ROOT).policy_file("gate"))
    return policy.model_copy(
        update={
            "latency": policy.latency.model_copy(update={"enabled": False}),
            "infra": policy.infra.model_copy(update={"enabled": False}),
        }
    )


def build_world(
    root: Path,
    *,
    seed: int,
    customers: int,
    days: int,
    serve_from: int,
    warmup_days: int = 0,
    drift: Drift | None = None,
) -> World:
    """Simulate ``days`` days, publish every transaction and label (labels keep their real, delayed
    timestamps: a reader at time T sees only those landed by T) and compute the offline feature tables.
    Then do what ``train_model`` does at the start of day ``serve_from``: plan the gate holdout behind the
    label frontier, train on the labelled days before it (from day ``warmup_days``: a simulated world
    starts without history, so its first month of 30-day aggregates is unlike a live issuer's), register,
    gate the version (logging its holdout scores, the concept-drift baseline) and make it the champion."""
    from loopline.data.ingest import publish
    from loopline.features.curated import curated_time_range
    from loopline.features.materialize import offline_sink
    from loopline.features.offline_refresh import refresh_aggregates
    from loopline.gating.gate import run_gate
    from loopline.platform.feast_store import apply_feature_repo
    from loopline.platform.mlflow_util import mlflow_client
    from loopline.training.config import load_config
    from loopline.training.train import train

    root.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        state_dir=root / "state", mlflow_tracking_uri=f"sqlite:///{root / 'state' / 'mlflow.db'}"
    )
    settings.state.ensure()
    sim = simulate(SimulationConfig(days=days, start=START, seed=seed, n_customers=customers, drift=drift))
    publish(settings, sim.transactions, "transactions", "sim")
    publish(settings, sim.labels, "labels", "sim")
    # Offline tables and the feature registry only: served rows get point-in-time features (what a fresh
    # online store serves), so the online store is not loaded (it would double the build time).
    first, last = curated_time_range(settings)
    refresh_aggregates(
        settings.state.curated, offline_sink(settings), pd.Timestamp(first), pd.Timestamp(last)
    )
    apply_feature_repo(settings)
    world = World(settings, START, days, serve_from, "", sim)
    policy = shipped_gate_policy()
    manifest = training_and_holdout(world, policy, root, first_day=warmup_days)
    result = train(
        manifest,
        load_config(TRAINING_CONFIG, FAST_TRAINING),
        tracking_uri=settings.mlflow_uri,
        register_name=MODEL_NAME,
    )
    run_gate(settings, result.version, world.holdout, model_name=MODEL_NAME, policy=policy)
    mlflow_client(settings.mlflow_uri).set_registered_model_alias(MODEL_NAME, "champion", result.version)
    world.version = result.version
    return world


def training_and_holdout(world: World, policy: Any, root: Path, first_day: int) -> str:
    """Build the gate's holdout (kept as ``world.holdout``) and the training set before it, from
    ``first_day`` to the holdout, labels as of the first served day; returns the training set's path."""
    from loopline.features.training_sets import build_training_set
    from loopline.gating.holdout import build_holdout, plan_holdout

    now = world.day_start(world.serve_from)
    plan = plan_holdout(world.settings, policy, now)
    manifest = build_training_set(
        world.settings,
        root / "train.parquet",
        start=world.day_start(first_day),
        end=plan.windows.train_end,
        labels_as_of=now,
    )
    holdout = build_holdout(
        world.settings, policy, root / "holdout.parquet", labels_as_of=now, windows=plan.windows
    )
    world.holdout, world.training_set = Path(holdout.path), Path(manifest.path)
    return manifest.path


def served_rows(world: World, first_day: int, last_day: int, version: str | None = None) -> pd.DataFrame:
    """Days ``first_day``..``last_day`` (inclusive) scored by ``version`` (default the champion) on their
    point-in-time features, as prediction-log rows would hold them."""
    import mlflow

    from loopline.features.training_sets import build_training_set
    from loopline.training.pyfunc import as_model_input

    version = version or world.version
    out = world.settings.state.root / f"served-{first_day}-{last_day}.parquet"
    frame = pd.read_parquet(
        build_training_set(
            world.settings, out, start=world.day_start(first_day), end=world.day_start(last_day + 1)
        ).path
    )
    mlflow.set_tracking_uri(world.settings.mlflow_uri)
    model = mlflow.pyfunc.load_model(f"models:/{world.model_name}/{version}")
    specs = model.metadata.get_input_schema().inputs
    categorical = [s.name for s in specs if s.type.name == "string"]
    numeric = [s.name for s in specs if s.type.name != "string"]
    inputs = as_model_input(frame[[*categorical, *numeric]], categorical, numeric)
    frame["score"] = np.asarray(model.predict(inputs)["score"], dtype="float64")
    frame["model_version"] = str(version)
    return frame


def log_served(world: World, served: pd.DataFrame, variant: str = "champion", threshold: float = 0.5) -> int:
    """Append ``served`` rows to the world's prediction log, each at its event's time: the event's columns as
    the request, the rest (but its label) as the features it was scored with; a classifier's decision at
    ``threshold``, a regressor's none."""
    from loopline.config.use_case import load_use_case
    from loopline.serving.prediction_log import LoggedPrediction, open_prediction_log

    use_case = load_use_case(world.settings.use_case)
    time = use_case.time_column
    request_fields = [c for c in use_case.event_columns if c != time]
    not_features = {*request_fields, time, *use_case.label_columns, "score", "model_version"}
    feature_columns = [c for c in served.columns if c not in not_features]
    classifier = use_case.task == "binary_classification"
    rows = []
    for record in served.to_dict("records"):
        ts = pd.Timestamp(record[time]).timestamp()
        inputs = {k: record[k] for k in request_fields if k in record}
        features = {
            k: (None if isinstance(record[k], float) and np.isnan(record[k]) else record[k])
            for k in feature_columns
        }
        unit = record.get(use_case.unit_column) if use_case.unit_column else None
        rows.append(
            LoggedPrediction(
                uuid.uuid4().hex,
                ts,
                str(record[use_case.id_column]),
                None if unit is None else str(unit),
                inputs,
                features,
                float(record["score"]),
                bool(record["score"] >= threshold) if classifier else None,
                variant,
                str(record["model_version"]),
                3.0,
            )
        )
    log = open_prediction_log(world.settings)
    try:
        return log.append(rows)
    finally:
        log.close()
