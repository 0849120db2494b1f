"""Replayed days: the champion is served the features it was trained on.

A simulated world's first days are ingested and materialised and a champion is trained on them. The next
days are then *served before their batch is ingested*, as in production: every transaction goes through
the real serving engine (micro-batches of concurrent requests, the Feast online store, the prediction
log), and only after the day is its batch published and materialised (with what was served). Then:

* ``check-served`` finds the features serving logged equal to the offline point-in-time features of the
  same transactions (mismatches <= 1 % of the compared rows);
* the champion's PR-AUC on the scores serving logged is within 0.02 of its PR-AUC on offline features;
* the same day served without fresh features (the online store as of the last batch) is caught: the
  check reports most rows mismatched — the measurement can fail.

``LOOPLINE_SCENARIO_WORLDS="replay:SEED:CUSTOMERS,..."`` replays other worlds.
"""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scenario_world import FAST_TRAINING, MODEL_NAME, START, TRAINING_CONFIG

from loopline.config import Settings

TRAIN_DAYS = 8  # ingested before serving starts; the champion learns on days 1..7
SERVED_DAYS = 3  # then served one by one, each ingested only after it was served
WAVE = 16  # concurrent single-transaction requests: the engine scores them as one micro-batch
DEFAULT_WORLDS = [(23, 300)]
LATER = datetime(2100, 1, 1, tzinfo=UTC)


def _worlds() -> list[tuple[int, int]]:
    configured = os.environ.get("LOOPLINE_SCENARIO_WORLDS", "")
    worlds = [
        tuple(int(x) for x in spec.split(":")[1:3])
        for spec in configured.split(",")
        if spec.startswith("replay:")
    ]
    return worlds or DEFAULT_WORLDS


def _day(index: int) -> datetime:
    return datetime.combine(START + timedelta(days=index), datetime.min.time(), tzinfo=UTC)


def _request(row: dict) -> dict:
    fields = (
        "transaction_id",
        "customer_id",
        "card_id",
        "merchant_id",
        "merchant_category",
        "merchant_country",
        "channel",
        "device_id",
    )
    return {
        **{k: str(row[k]) for k in fields},
        "amount": float(row["amount"]),
        "event_timestamp": pd.Timestamp(row["event_timestamp"]).isoformat(),
    }


def serve(settings: Settings, predictor, transactions: pd.DataFrame, *, fresh: bool) -> int:
    """Send ``transactions`` in time order, ``WAVE`` concurrent requests at a time, through a real engine."""
    from loopline.features.fresh import FreshFeatures
    from loopline.serving.engine import Deployment, Engine
    from loopline.serving.prediction_log import AnsweredFeed, open_prediction_log, served_events_lookback

    plog = open_prediction_log(settings)
    features = None
    if fresh:
        features = FreshFeatures(settings, refresh_interval_s=0.2)
        features.served = AnsweredFeed(plog, known=features.windows.__contains__, settings=settings)
        since = datetime.now(UTC) - served_events_lookback(settings)
        features.bootstrap(features.served.backlog(since)).start()
    engine = Engine(plog, max_rows=128, fresh=features)
    engine.swap(Deployment(champion=predictor))
    rows = [_request(r) for r in transactions.sort_values("event_timestamp").to_dict("records")]
    answered = 0
    try:
        for i in range(0, len(rows), WAVE):
            wave = rows[i : i + WAVE]
            done = threading.Semaphore(0)
            results: list = []

            def resolve(result, results=results, done=done) -> None:
                results.append(result)
                done.release()

            for tx in wave:
                engine.route([tx], uuid.uuid4().hex, resolve)
            for _ in wave:
                assert done.acquire(timeout=60), "the engine did not answer within a minute"
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, errors[0]
            answered += len(results)
    finally:
        engine.close()
        if features is not None:
            features.close()
        plog.close()
    return answered


def ingest_day(settings: Settings, sim, index: int) -> None:
    from loopline.data.ingest import publish
    from loopline.features.materialize import materialize
    from loopline.serving.prediction_log import answered_events

    day = sim.transactions[
        (sim.transactions["event_timestamp"] >= _day(index))
        & (sim.transactions["event_timestamp"] < _day(index + 1))
    ]
    publish(settings, day, "transactions", f"day-{index}")
    materialize(settings, _day(index), _day(index + 1), served=answered_events(settings))


def offline_scores(settings: Settings, root: Path, version: str) -> pd.DataFrame:
    """The served days scored by ``version`` on offline point-in-time features, with labels."""
    import mlflow

    from loopline.features.training_sets import build_training_set
    from loopline.training.pyfunc import as_model_input

    out = build_training_set(
        settings,
        root / "served-offline.parquet",
        start=_day(TRAIN_DAYS),
        end=_day(TRAIN_DAYS + SERVED_DAYS),
        labels_as_of=LATER,
    )
    frame = pd.read_parquet(out.path)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}")
    specs = model.metadata.get_input_schema().inputs
    categorical = [s.name for s in specs if s.type.name == "string"]
    numeric = [s.name for s in specs if s.type.name != "string"]
    frame["offline_score"] = np.asarray(
        model.predict(as_model_input(frame[[*categorical, *numeric]], categorical, numeric))["score"],
        dtype="float64",
    )
    return frame[["transaction_id", "is_fraud", "offline_score"]]


@pytest.fixture(scope="module", params=_worlds(), ids=lambda w: f"seed{w[0]}-{w[1]}customers")
def replayed(request, tmp_path_factory):
    """(settings, stale-log settings, champion version, root) after the replay."""
    import mlflow

    from loopline.data.ingest import publish
    from loopline.features.materialize import materialize
    from loopline.features.training_sets import build_training_set
    from loopline.platform.mlflow_util import mlflow_client
    from loopline.serving.predictor import Predictor
    from loopline.training.config import load_config
    from loopline.training.train import train
    from loopline.usecases.fraud.simulator import SimulationConfig, simulate

    seed, customers = request.param
    root = tmp_path_factory.mktemp(f"replay-{seed}")
    settings = Settings(
        state_dir=root / "state", mlflow_tracking_uri=f"sqlite:///{root / 'state' / 'mlflow.db'}"
    )
    settings.state.ensure()
    stale = settings.model_copy(update={"prediction_log_url": f"sqlite:///{root / 'stale-predictions.db'}"})
    sim = simulate(
        SimulationConfig(days=TRAIN_DAYS + SERVED_DAYS, start=START, seed=seed, n_customers=customers)
    )
    history = sim.transactions[sim.transactions["event_timestamp"] < _day(TRAIN_DAYS)]
    publish(settings, history, "transactions", "history")
    publish(settings, sim.labels, "labels", "all")  # training reads only the labels known at its time
    materialize(settings, _day(0), _day(TRAIN_DAYS))
    # Every label of the training days (some land weeks later): the champion only has to be a real model.
    manifest = build_training_set(
        settings, root / "train.parquet", start=_day(1), end=_day(TRAIN_DAYS), labels_as_of=LATER
    )
    result = train(
        manifest.path,
        load_config(TRAINING_CONFIG, FAST_TRAINING),
        tracking_uri=settings.mlflow_uri,
        register_name=MODEL_NAME,
    )
    mlflow_client(settings.mlflow_uri).set_registered_model_alias(MODEL_NAME, "champion", result.version)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    predictor = Predictor.load(
        f"models:/{MODEL_NAME}/{result.version}",
        version=result.version,
        variant="champion",
        settings=settings,
        warmup_rounds=2,
    )
    for index in range(TRAIN_DAYS, TRAIN_DAYS + SERVED_DAYS):
        day = sim.transactions[
            (sim.transactions["event_timestamp"] >= _day(index))
            & (sim.transactions["event_timestamp"] < _day(index + 1))
        ]
        if index == TRAIN_DAYS:  # the contrast: the first served day once more, without fresh features
            assert serve(stale, predictor, day, fresh=False) == len(day)
        assert serve(settings, predictor, day, fresh=True) == len(day)
        ingest_day(settings, sim, index)
    return settings, stale, result.version, root


def test_served_features_equal_offline_point_in_time_features(replayed):
    from loopline.monitoring.served_check import check_served

    settings, _, _, _ = replayed
    report = check_served(settings, sample=100_000)
    assert report.judged, report.reason
    assert report.waiting == 0 and report.compared == report.served > 1000
    assert report.mismatches <= 0.01 * report.compared, (report.worst_features, report.examples)
    print(f"\nreplay: {report.compared} compared, {report.mismatches} mismatched")


def test_champion_quality_on_served_scores_matches_offline(replayed):
    from loopline.metrics import pr_auc
    from loopline.serving.prediction_log import open_prediction_log

    settings, _, version, root = replayed
    logged = open_prediction_log(settings, read_only=True).read(variant="champion")
    offline = offline_scores(settings, root, version).merge(
        logged[["transaction_id", "score"]], on="transaction_id", how="inner", validate="one_to_one"
    )
    offline = offline[offline["is_fraud"].notna()]
    labels = offline["is_fraud"].astype(int)
    assert labels.sum() >= 5, "too few frauds in the replayed days to compare quality"
    served_auc, offline_auc = pr_auc(labels, offline["score"]), pr_auc(labels, offline["offline_score"])
    assert abs(served_auc - offline_auc) <= 0.02, (served_auc, offline_auc)
    print(
        f"\nreplay: PR-AUC served {served_auc:.4f} vs offline {offline_auc:.4f} ({int(labels.sum())} frauds)"
    )


def test_stale_features_are_caught_by_the_served_check(replayed):
    """Without fresh features the first served day was scored on the state of the day before: the check,
    run the same way, reports it (so the two tests above could fail)."""
    from loopline.monitoring.served_check import check_served

    _, stale, _, _ = replayed
    report = check_served(stale, sample=100_000)
    assert report.judged, report.reason
    assert report.mismatch_rate > 0.5, report
    print(f"\nreplay without fresh features: {report.mismatch_rate:.1%} of {report.compared} mismatched")
    # Named: the customer's same-day history, which only streaming brings to the online store.
    assert any(name.startswith("cust_") for name in report.worst_features), report.worst_features
