"""Fraud's four aggregate tables (the platform's ``AggregateTable`` semantics: one row per transaction holding
the state after it): per-customer velocity, per-merchant volume, a customer's device and channel familiarity.
``aggregates`` computes them offline, ``streaming`` at scoring time; ``feature_repo/fraud/`` serves them."""

from __future__ import annotations

from typing import Final

from loopline.features.tables import AggregateTable

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
