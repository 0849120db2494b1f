"""Feature views over the leak-free aggregate tables (see include/loopline/features/tables.py and
loopline.features.feast_views).

Every row holds the state *after* a transaction; training joins at the transaction time minus 1 µs,
serving reads the latest state, so both see exactly the history before the transaction.

One definition for every deployment: the views' source follows the offline store of the
feature_store.yaml in use (``FEAST_FS_YAML_FILE_PATH``, see loopline.platform.feast_store) — parquet
files for the embedded duckdb store, tables of the same names for Postgres in production.
"""

from datetime import timedelta
from pathlib import Path

from entities import channel, customer, device, merchant

from loopline.features.feast_views import aggregate_view
from loopline.usecases.fraud.features.tables import (
    CUSTOMER_CHANNEL,
    CUSTOMER_DEVICE,
    CUSTOMER_VELOCITY,
    MERCHANT_STATS,
)

REPO = Path(__file__).resolve().parent
# A view's TTL is its longest window: older state says nothing current about the entity, so a
# point-in-time join (and the online lookup, which applies the same rule) returns null instead.
CUSTOMER_TTL = timedelta(days=30)
MERCHANT_TTL = timedelta(days=7)


def _view(table, entities, ttl, description):
    return aggregate_view(table, entities, ttl, description, REPO, "state after each transaction")


customer_velocity = _view(
    CUSTOMER_VELOCITY,
    [customer],
    CUSTOMER_TTL,
    "Per-customer counts and amount statistics over 1 h / 24 h / 7 d / 30 d.",
)
merchant_stats = _view(
    MERCHANT_STATS, [merchant], MERCHANT_TTL, "Per-merchant volume and ticket size (24 h / 7 d)."
)
customer_device = _view(
    CUSTOMER_DEVICE, [customer, device], CUSTOMER_TTL, "How familiar this customer's device is."
)
customer_channel = _view(
    CUSTOMER_CHANNEL, [customer, channel], CUSTOMER_TTL, "How familiar this customer's channel is."
)
