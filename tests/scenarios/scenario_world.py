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

    def day_start(self, index: int) -> datetime:
        return datetime.combine(self.start + timedelta(days=index), datetime.min.time(), tzinfo=UTC)


def shipped_gate_policy():
    """The shipped gate policy with the serving-path checks (latency, infra) off: the worlds have no online
    store, and the scenarios are about what is decided from data."""
    from loopline.gating.policy import default_policy_path, load_policy

    policy = load_policy(default_policy_path(REPO_ROOT))
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
    from loopline.features.training_sets import build_training_set
    from loopline.gating.gate import run_gate
    from loopline.gating.holdout import build_holdout, plan_holdout
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
    now = world.day_start(serve_from)
    policy = shipped_gate_policy()
    plan = plan_holdout(settings, policy, now)
    manifest = build_training_set(
        settings,
        root / "train.parquet",
        start=world.day_start(warmup_days),
        end=plan.windows.train_end,
        labels_as_of=now,
    )
    holdout = build_holdout(
        settings, policy, root / "holdout.parquet", labels_as_of=now, windows=plan.windows
    )
    world.holdout = Path(holdout.path)
    result = train(
        manifest.path,
        load_config(TRAINING_CONFIG, FAST_TRAINING),
        tracking_uri=settings.mlflow_uri,
        register_name=MODEL_NAME,
    )
    run_gate(settings, result.version, holdout.path, model_name=MODEL_NAME, policy=policy)
    mlflow_client(settings.mlflow_uri).set_registered_model_alias(MODEL_NAME, "champion", result.version)
    world.version = result.version
    return world


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
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    specs = model.metadata.get_input_schema().inputs
    categorical = [s.name for s in specs if s.type.name == "string"]
    numeric = [s.name for s in specs if s.type.name != "string"]
    inputs = as_model_input(frame[[*categorical, *numeric]], categorical, numeric)
    frame["score"] = np.asarray(model.predict(inputs)["score"], dtype="float64")
    frame["model_version"] = str(version)
    return frame


def log_served(world: World, served: pd.DataFrame, variant: str = "champion", threshold: float = 0.5) -> int:
    """Append ``served`` rows to the world's prediction log, each at its transaction's time."""
    from loopline.serving.prediction_log import LoggedPrediction, open_prediction_log

    request_fields = [
        "transaction_id",
        "customer_id",
        "card_id",
        "merchant_id",
        "merchant_category",
        "merchant_country",
        "amount",
        "channel",
        "device_id",
        "customer_age_band",
        "customer_region",
    ]
    feature_columns = [
        c
        for c in served.columns
        if c
        not in (*request_fields, "event_timestamp", "is_fraud", "label_timestamp", "score", "model_version")
    ]
    rows = []
    for record in served.to_dict("records"):
        ts = pd.Timestamp(record["event_timestamp"]).timestamp()
        inputs = {k: record[k] for k in request_fields if k in record}
        features = {
            k: (None if isinstance(record[k], float) and np.isnan(record[k]) else record[k])
            for k in feature_columns
        }
        rows.append(
            LoggedPrediction(
                uuid.uuid4().hex,
                ts,
                str(record["transaction_id"]),
                str(record["customer_id"]),
                inputs,
                features,
                float(record["score"]),
                bool(record["score"] >= threshold),
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
