"""A real serving world, built once per session: simulated transactions published and materialised into
a Feast online store, a small fraud model trained on its point-in-time training set and registered twice
(versions 1 and 2, same weights) in a SQLite-backed MLflow."""

from __future__ import annotations

from datetime import timedelta

import pytest
from serving_testkit import MODEL, ServingWorld, request_rows

# tests/unit is on sys.path (pytest's rootdir-relative conftest insertion): reuse the training tests' FAST
# overrides (a seconds-long CPU run) rather than restating them.
from training.test_training import CONFIG_PATH, FAST

from loopline.config import Settings
from loopline.data.ingest import publish
from loopline.features.curated import curated_time_range
from loopline.features.materialize import materialize
from loopline.features.training_sets import build_training_set
from loopline.features.watermark import materialized_until
from loopline.training.config import load_config
from loopline.training.train import train
from loopline.usecases.fraud.simulator import SimulationConfig, simulate


@pytest.fixture(scope="session")
def serving_world(tmp_path_factory: pytest.TempPathFactory) -> ServingWorld:
    import mlflow

    from loopline.platform.mlflow_util import mlflow_client

    state = tmp_path_factory.mktemp("serving-world")
    settings = Settings(state_dir=state, mlflow_tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    settings.state.ensure()
    sim = simulate(SimulationConfig(days=10, n_customers=120, seed=7))
    publish(settings, sim.transactions, "transactions", "sim")
    publish(settings, sim.labels, "labels", "sim")
    materialize(settings, *curated_time_range(settings))
    build_training_set(settings, state / "train.parquet")
    result = train(
        state / "train.parquet",
        load_config(CONFIG_PATH, FAST),
        tracking_uri=settings.mlflow_uri,
        config_path=CONFIG_PATH,
    )
    mlflow.set_tracking_uri(settings.mlflow_uri)
    second = mlflow.register_model(result.logged_model_uri, MODEL)
    mlflow_client(settings.mlflow_uri).get_model_version(MODEL, second.version)
    latest = sim.transactions.sort_values("event_timestamp").drop_duplicates("customer_id", keep="last")
    # Scored right after the materialised data ends, as live traffic would be (the windows are fresh).
    start = materialized_until(settings) + timedelta(minutes=1)
    return ServingWorld(
        settings, request_rows(latest, len(latest), start), (result.version, str(second.version))
    )
