"""Feature views over the leak-free aggregate tables (see include/loopline/features/tables.py).

Every row holds the state *after* a transaction; training joins at the transaction time minus 1 µs,
serving reads the latest state, so both see exactly the history before the transaction.

One definition for every deployment: the views' source follows the offline store of the
feature_store.yaml in use (``FEAST_FS_YAML_FILE_PATH``, see loopline.platform.feast_store) — parquet
files for the embedded duckdb store, tables of the same names for Postgres in production.
"""

import os
from datetime import timedelta
from pathlib import Path

from entities import channel, customer, device, merchant
from feast import FeatureView, Field, FileSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.types import Float64, Int64

from loopline.features.tables import CUSTOMER_CHANNEL, CUSTOMER_DEVICE, CUSTOMER_VELOCITY, MERCHANT_STATS
from loopline.platform.feast_store import offline_store_type

# Set by loopline.platform.feast_store from Loopline's settings (the state dir's feast/offline/).
OFFLINE_DIR = os.environ.get("LOOPLINE_FEAST_OFFLINE_DIR", "offline")
OFFLINE_STORE = offline_store_type(Path(__file__).resolve().parent)
# A view's TTL is its longest window: older state says nothing current about the entity, so a
# point-in-time join (and the online lookup, which applies the same rule) returns null instead.
CUSTOMER_TTL = timedelta(days=30)
MERCHANT_TTL = timedelta(days=7)
_TYPES = {"int64": Int64, "float64": Float64}
_FILE_STORES = {"duckdb", "dask", "file"}


def _source(table):
    if OFFLINE_STORE == "postgres":
        return PostgreSQLSource(
            name=f"{table.name}_source", table=table.name, timestamp_field="event_timestamp"
        )
    if OFFLINE_STORE in _FILE_STORES:
        return FileSource(
            name=f"{table.name}_source",
            path=os.path.join(OFFLINE_DIR, f"{table.name}.parquet"),
            timestamp_field="event_timestamp",
        )
    raise ValueError(
        f"feature_repo has no source kind for offline store {OFFLINE_STORE!r}: "
        f"use one of {sorted(_FILE_STORES | {'postgres'})} or add it in feature_repo/features.py"
    )


def _view(table, entities, ttl, description):
    return FeatureView(
        name=table.name,
        entities=entities,
        ttl=ttl,
        schema=[Field(name=column, dtype=_TYPES[dtype]) for column, dtype in table.features.items()],
        source=_source(table),
        online=True,
        description=description,
        tags={"owner": "loopline", "semantics": "state after each transaction"},
    )


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
