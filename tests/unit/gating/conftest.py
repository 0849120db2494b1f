"""A small real world for the gate: simulated days in a curated store, a materialised Feast online store,
a SQLite MLflow with one trained fraud detector, and the holdout after its training window."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from gate_testkit import MODEL_NAME

from loopline.config import Settings
from loopline.data.ingest import publish
from loopline.features.curated import curated_time_range
from loopline.features.materialize import materialize
from loopline.features.training_sets import build_training_set
from loopline.gating.holdout import build_holdout, plan_windows
from loopline.gating.policy import policy_from_dict
from loopline.usecases.fraud.simulator import SimulationConfig, simulate

HERE = Path(__file__).resolve().parent


def _training_test_module():
    """tests/unit/training/test_training.py, for its fast training overrides (not copied)."""
    path = HERE.parent / "training" / "test_training.py"
    spec = importlib.util.spec_from_file_location("loopline_training_test_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def gate_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from loopline.training.config import load_config
    from loopline.training.train import train

    helpers = _training_test_module()
    state = tmp_path_factory.mktemp("gate-world")
    settings = Settings(state_dir=state, mlflow_tracking_uri=f"sqlite:///{state / 'mlflow' / 'mlflow.db'}")
    settings.state.ensure()
    sim = simulate(SimulationConfig(days=14, n_customers=300, seed=21))
    publish(settings, sim.transactions, "transactions", "sim")
    publish(settings, sim.labels, "labels", "sim")  # every label, with its real (delayed) timestamp
    materialize(settings, *curated_time_range(settings))
    policy = policy_from_dict({"holdout": {"days": 3, "min_labelled_rows": 500, "min_positive_rows": 10}})
    windows = plan_windows(settings, policy)
    train_set = build_training_set(settings, state / "train.parquet", end=windows.train_end)
    holdout = build_holdout(settings, policy, state / "holdout.parquet")
    config = load_config(helpers.CONFIG_PATH, helpers.FAST)
    result = train(train_set.path, config, tracking_uri=settings.mlflow_uri, register_name=MODEL_NAME)
    return {
        "settings": settings,
        "sim": sim,
        "windows": windows,
        "train_set": train_set,
        "holdout": holdout,
        "base": result,
        "config": config,
    }
