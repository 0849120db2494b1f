"""Feature views over delivery's leak-free aggregate tables (loopline.usecases.delivery.features).

Every row holds the state *after* an order; training joins at the order time minus 1 µs, serving reads the
latest state, so both see exactly the orders before it. The sources follow the offline store of the
feature_store.yaml in use (loopline.features.feast_views).
"""

from datetime import timedelta
from pathlib import Path

from entities import pickup_zone, restaurant

from loopline.features.feast_views import aggregate_view
from loopline.usecases.delivery.features import RESTAURANT_LOAD, ZONE_LOAD

REPO = Path(__file__).resolve().parent
SEMANTICS = "state after each order"

restaurant_load = aggregate_view(
    RESTAURANT_LOAD,
    [restaurant],
    timedelta(hours=24),
    "The restaurant's orders in the last hour and day: how busy its kitchen is.",
    REPO,
    SEMANTICS,
)
zone_load = aggregate_view(
    ZONE_LOAD,
    [pickup_zone],
    timedelta(hours=1),
    "Orders picked up in the zone in the last hour: how much its couriers have to do.",
    REPO,
    SEMANTICS,
)
