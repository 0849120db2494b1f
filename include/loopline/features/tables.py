"""The offline aggregate tables behind Loopline's Feast feature views (the contract between the
aggregate computation, ``feature_repo/fraud/`` and the training-set builder).

Semantics, for every table: one row per transaction, keyed by the table's entity columns, stamped with
the transaction's ``event_timestamp``, holding the state **after** that transaction — windows are
``(t - w, t]`` and include it. A training row for a transaction at ``T`` joins point-in-time at
``T - 1 µs``, so it sees the state after the previous transactions only (nothing from itself or the
future), which is exactly what the online store holds when the transaction is scored. No leak, no skew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class AggregateTable:
    name: str
    keys: tuple[str, ...]
    features: dict[str, str]  # feature column -> pandas dtype

    @property
    def columns(self) -> list[str]:
        return [*self.keys, "event_timestamp", *self.features]


CUSTOMER_VELOCITY: Final = AggregateTable(
    name="customer_velocity",
    keys=("customer_id",),
    features={
        "cust_tx_count_1h": "int64",
        "cust_tx_count_24h": "int64",
        "cust_tx_count_7d": "int64",
        "cust_tx_count_30d": "int64",
        "cust_amount_sum_24h": "float64",
        "cust_amount_mean_24h": "float64",
        "cust_amount_mean_7d": "float64",
        "cust_amount_mean_30d": "float64",
        "cust_amount_std_30d": "float64",  # population std (ddof=0); 0.0 for a single transaction
        "cust_amount_max_7d": "float64",
        "cust_distinct_merchants_24h": "int64",
        "cust_distinct_merchants_7d": "int64",
        "cust_online_share_30d": "float64",
        "cust_foreign_share_30d": "float64",  # share of merchants outside DE
        "cust_last_tx_epoch_s": "float64",  # the transaction's own time, seconds since epoch
    },
)

MERCHANT_STATS: Final = AggregateTable(
    name="merchant_stats",
    keys=("merchant_id",),
    features={
        "merch_tx_count_24h": "int64",
        "merch_tx_count_7d": "int64",
        "merch_amount_mean_7d": "float64",
        "merch_distinct_cards_24h": "int64",
    },
)

CUSTOMER_DEVICE: Final = AggregateTable(
    name="customer_device",
    keys=("customer_id", "device_id"),
    features={
        "dev_tx_count_30d": "int64",  # this customer's transactions on this device in (t-30d, t]
        "dev_first_seen_epoch_s": "float64",  # first time this customer used this device (all history)
    },
)

CUSTOMER_CHANNEL: Final = AggregateTable(
    name="customer_channel",
    keys=("customer_id", "channel"),
    features={
        "chan_tx_count_30d": "int64",  # this customer's transactions on this channel in (t-30d, t]
    },
)

TABLES: Final[tuple[AggregateTable, ...]] = (
    CUSTOMER_VELOCITY,
    MERCHANT_STATS,
    CUSTOMER_DEVICE,
    CUSTOMER_CHANNEL,
)
