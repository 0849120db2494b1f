"""The world of the fresh-features tests (SQLite in tests/unit/features/test_fresh.py, Redis in
tests/integration/test_fresh_features_redis.py): 10 simulated days, the first 9 ingested and materialised,
the last one served before its batch exists and then compared with the offline point-in-time features."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd

from loopline.config import Settings
from loopline.data.ingest import publish
from loopline.features.historical import historical_features
from loopline.features.materialize import materialize
from loopline.features.online import OnlineFeatures
from loopline.features.skew import _py, _same
from loopline.platform.feast_store import feature_store
from loopline.usecases.fraud.simulator import SimulationConfig, simulate

START = date(2026, 4, 6)
DAYS = 10


def day(index: int) -> datetime:
    return datetime.combine(START + timedelta(days=index), datetime.min.time(), tzinfo=UTC)


def simulated():
    return simulate(SimulationConfig(days=DAYS, start=START, seed=31, n_customers=150))


def request(row: dict) -> dict:
    """A curated row as the prediction request serving gets."""
    return {
        **{
            k: (None if row[k] is None else str(row[k]))
            for k in (
                "transaction_id",
                "customer_id",
                "card_id",
                "merchant_id",
                "merchant_category",
                "merchant_country",
                "channel",
                "device_id",
            )
        },
        "amount": float(row["amount"]),
        "event_timestamp": pd.Timestamp(row["event_timestamp"]).isoformat(),
    }


def ingest_history(settings: Settings, sim) -> pd.DataFrame:
    """Days 1..9 ingested and materialised; returns the last day's transactions in time order."""
    settings.state.ensure()
    publish(
        settings,
        sim.transactions[sim.transactions["event_timestamp"] < day(DAYS - 1)],
        "transactions",
        "history",
    )
    materialize(settings, day(0), day(DAYS - 1))
    return sim.transactions[sim.transactions["event_timestamp"] >= day(DAYS - 1)].sort_values(
        "event_timestamp"
    )


def offline_truth(settings: Settings, sim, served: pd.DataFrame) -> pd.DataFrame:
    """Offline point-in-time features of ``served`` once their day is ingested (the definition of right)."""
    publish(
        settings,
        sim.transactions[sim.transactions["event_timestamp"] >= day(DAYS - 1)],
        "transactions",
        "day",
    )
    materialize(settings, day(DAYS - 1), day(DAYS))
    return historical_features(feature_store(settings), served).set_index("transaction_id")


def mismatches(online: OnlineFeatures, served: list[dict], got: list[dict], truth: pd.DataFrame) -> list:
    return [
        (tx["transaction_id"], name, row[name], _py(truth.loc[tx["transaction_id"], name]))
        for tx, row in zip(served, got, strict=True)
        for name in online.names
        if not _same(row[name], _py(truth.loc[tx["transaction_id"], name]))
    ]
