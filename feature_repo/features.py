"""Feature views over the leak-free aggregate tables (see include/loopline/features/tables.py).

Every row holds the state *after* a transaction; training joins at the transaction time minus 1 µs,
serving reads the latest state, so both see exactly the history before the transaction.
"""

import os
from datetime import timedelta

from entities import channel, customer, device, merchant
from feast import FeatureView, Field, FileSource
from feast.types import Float64, Int64

from loopline.features.tables import CUSTOMER_CHANNEL, CUSTOMER_DEVICE, CUSTOMER_VELOCITY, MERCHANT_STATS

# Set by loopline.features.store from Loopline's settings (the state dir's feast/offline/).
OFFLINE_DIR = os.environ.get("LOOPLINE_FEAST_OFFLINE_DIR", "offline")
# Longest window is 30 days: older state says nothing current about the entity.
TTL = timedelta(days=30)
_TYPES = {"int64": Int64, "float64": Float64}


def _view(table, entities, description):
    return FeatureView(
        name=table.name,
        entities=entities,
        ttl=TTL,
        schema=[Field(name=column, dtype=_TYPES[dtype]) for column, dtype in table.features.items()],
        source=FileSource(
            name=f"{table.name}_source",
            path=os.path.join(OFFLINE_DIR, f"{table.name}.parquet"),
            timestamp_field="event_timestamp",
        ),
        online=True,
        description=description,
        tags={"owner": "loopline", "semantics": "state after each transaction"},
    )


customer_velocity = _view(
    CUSTOMER_VELOCITY, [customer], "Per-customer counts and amount statistics over 1 h / 24 h / 7 d / 30 d."
)
merchant_stats = _view(MERCHANT_STATS, [merchant], "Per-merchant volume and ticket size.")
customer_device = _view(CUSTOMER_DEVICE, [customer, device], "How familiar this customer's device is.")
customer_channel = _view(CUSTOMER_CHANNEL, [customer, channel], "How familiar this customer's channel is.")
