"""Helpers of the monitoring tests (imported by name: tests/unit/monitoring is on sys.path under pytest).

Windows are built from the transaction simulator (real channels, categories, countries and amounts, with
its ``Drift`` kinds injected) plus model-like numeric features derived from them, so drift is the
simulator's, not a hand-placed shift."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.config import Settings
from loopline.config.drift_policy import DriftConfig, load_drift_config
from loopline.monitoring.reference import Reference
from loopline.usecases.fraud.simulator import Drift, SimulationConfig, simulate

REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG = REPO_ROOT / "include" / "loopline" / "usecases" / "fraud" / "policies" / "drift.yaml"
CATEGORICAL = ["channel", "merchant_category", "merchant_country"]
NUMERIC = ["amount", "amount_log", "cust_tx_count_24h", "is_new_device", "hour_of_day", "event_epoch_s"]
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def config(**overrides) -> DriftConfig:
    """The shipped policy, with top-level sections replaced (``window=..., retrain=...``)."""
    base = load_drift_config(CONFIG)
    return base.model_copy(update=overrides)


def traffic(
    days: int = 6, drift: str | None = None, seed: int = 3, customers: int = 300, from_day: int = 0
) -> pd.DataFrame:
    """Model inputs of simulated transactions: the transaction fields plus derived numeric features and a
    score that leans on them (so prediction drift follows input drift). ``drift`` starts on ``from_day``."""
    sim = simulate(
        SimulationConfig(
            days=days,
            seed=seed,
            n_customers=customers,
            drift=Drift(kind=drift, from_day=from_day) if drift else None,
        )
    )
    tx = sim.transactions.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: tx[c].astype("object") for c in CATEGORICAL})
    frame["amount"] = tx["amount"].astype("float64")
    frame["amount_log"] = np.log1p(frame["amount"])
    frame["cust_tx_count_24h"] = rng.poisson(3, len(tx)).astype("float64")
    frame["is_new_device"] = (rng.random(len(tx)) < 0.04).astype("float64")
    frame["hour_of_day"] = tx["event_timestamp"].dt.hour.astype("float64")
    frame["event_epoch_s"] = tx["event_timestamp"].astype("int64") / 1e6
    logit = (
        -4 + 0.6 * (frame["channel"] == "online") + 0.35 * frame["amount_log"] + rng.normal(0, 0.3, len(tx))
    )
    frame["score"] = 1 / (1 + np.exp(-logit))
    frame["transaction_id"] = tx["transaction_id"].astype(str)
    frame["day"] = (tx["event_timestamp"] - tx["event_timestamp"].min()).dt.days
    return frame


def reference_from(frame: pd.DataFrame, version: str = "1") -> Reference:
    """A reference sample like the trainer's: inputs, score, labels (fraud where the score is high), splits."""
    ref = frame.drop(columns=["transaction_id", "day"], errors="ignore").reset_index(drop=True).copy()
    rng = np.random.default_rng(0)
    ref["is_fraud"] = (rng.random(len(ref)) < ref["score"] * 3).astype("int64")
    ref["reference_split"] = np.where(np.arange(len(ref)) % 5 == 0, "validation", "train")
    return Reference(ref, list(CATEGORICAL), list(NUMERIC), version=version, run_id="run")


def settings(tmp_path: Path) -> Settings:
    state = tmp_path / "state"
    s = Settings(state_dir=state, mlflow_tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    s.state.ensure()
    return s
