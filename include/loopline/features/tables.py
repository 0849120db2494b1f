"""The offline aggregate tables behind a use case's Feast feature views (the contract between its aggregate
computation, ``feature_repo/<use case>/`` and the training-set builder).

Semantics, for every table: one row per event, keyed by the table's entity columns, stamped with the
event's time (column ``event_timestamp``, whatever the use case calls it), holding the state **after** that
event — windows are ``(t - w, t]`` and include it. A training row for an event at ``T`` joins point-in-time
at ``T - 1 µs``, so it sees the state after the previous events only (nothing from itself or the future),
which is exactly what the online store holds when the event is scored. No leak, no skew.

Every table defined registers itself by name (``KNOWN``), so the offline stores (``offline_sink``) accept
any use case's tables. Fraud's four tables are still defined here, because the streaming computation of
fresh features (``features.streaming``, fraud's) is still in the platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# The time column of every aggregate table (Feast's timestamp_field) and of the entity rows joined to them.
TIMESTAMP: Final = "event_timestamp"
KNOWN: dict[str, AggregateTable] = {}  # every table defined so far, by name


@dataclass(frozen=True)
class AggregateTable:
    name: str
    keys: tuple[str, ...]
    features: dict[str, str]  # feature column -> pandas dtype

    def __post_init__(self) -> None:
        KNOWN[self.name] = self

    @property
    def columns(self) -> list[str]:
        return [*self.keys, TIMESTAMP, *self.features]


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
