"""Delivery's feature definitions: how busy the kitchen and the pickup zone were when the order came in.

Two aggregate tables, with the platform's point-in-time semantics (one row per order holding the state
**after** it, windows ``(t - w, t]``; a training row joins at its order's time minus 1 µs, so it counts the
orders before it, never itself nor later ones): ``restaurant_load`` (the restaurant's orders in the last hour
and day) and ``zone_load`` (the pickup zone's orders in the last hour). The Feast repo is
``feature_repo/delivery/`` (FeatureService ``delivery_time_v1``, with the order's hour and weekday computed on
demand); the order's own columns (distance, items, value, couriers busy, weather, zones) reach the model as
they are.

``STREAMING`` keeps both tables fresh at scoring time (every order counts before the next is scored, with these
same windows), so a served order reads the counts a training row of its instant holds; a served simulated day
equals the offline point-in-time features (``tests/unit/usecases/delivery/test_delivery_streaming.py``).
Replays must keep the city's pace for that to mean anything: ``loopline demo`` replays the newest day at its
recorded times (``loopline traffic --recorded``); a load test that re-stamps a day of orders to the seconds
it is sent in makes the one-hour counts measure the replay, not the city.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Final

import pandas as pd

from loopline.features.aggregates import WINDOW_US, count_table, since_us, utc_timestamp
from loopline.features.curated import read_curated_event_frame
from loopline.features.definitions import FeatureDefinitions
from loopline.features.frames import epoch_us
from loopline.features.tables import AggregateTable
from loopline.usecases.delivery import USE_CASE
from loopline.usecases.delivery.streaming import streaming_features

RESTAURANT_LOAD: Final = AggregateTable(
    name="restaurant_load",
    keys=("restaurant_id",),
    features={
        "rest_orders_1h": "int64",  # the restaurant's orders in (t - 1 h, t]
        "rest_orders_24h": "int64",  # ... in (t - 24 h, t]
    },
)
ZONE_LOAD: Final = AggregateTable(
    name="zone_load",
    keys=("pickup_zone",),
    features={"zone_orders_1h": "int64"},  # orders picked up in the zone in (t - 1 h, t]
)
TABLES: Final[tuple[AggregateTable, ...]] = (RESTAURANT_LOAD, ZONE_LOAD)
HISTORY = timedelta(hours=24)
"""The longest window: a row at ``t`` needs the orders in ``(t - 24 h, t]``."""
SERVING_HISTORY = HISTORY + timedelta(hours=24)
"""What fresh features keep: serving reads a restaurant's row up to its view's TTL (24 h,
``feature_repo/delivery/``) after the restaurant's newest order, and that row counts the 24 h before it."""

WINDOWS: Final[dict[str, dict[str, int]]] = {
    RESTAURANT_LOAD.name: {"rest_orders_1h": WINDOW_US["1h"], "rest_orders_24h": WINDOW_US["24h"]},
    ZONE_LOAD.name: {"zone_orders_1h": WINDOW_US["1h"]},
}


def compute_aggregates(orders: pd.DataFrame, since: pd.Timestamp | None = None) -> dict[str, pd.DataFrame]:
    """Table name -> rows for every order with ``ordered_at >= since`` (all if None), computed with the
    history in ``orders``; each frame has exactly the table's columns and dtypes."""
    orders = orders[orders[USE_CASE.time_column].notna()].reset_index(drop=True)
    t_us = epoch_us(orders[USE_CASE.time_column])
    start_us = since_us(since)
    return {table.name: count_table(orders, t_us, table, WINDOWS[table.name], start_us) for table in TABLES}


def compute_offline(curated_dir: Path, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The rows of the orders in ``[start, end)``, reading the curated orders from 24 h before ``start``."""
    start, end = utc_timestamp(start), utc_timestamp(end)
    keys = sorted({key for table in TABLES for key in table.keys})
    orders = read_curated_event_frame(curated_dir, start - HISTORY, end, columns=keys, use_case=USE_CASE)
    return compute_aggregates(orders, since=start)


# The order's own columns the model takes next to the service's features.
MODEL_INPUTS: Final[tuple[str, ...]] = (
    "pickup_zone",
    "dropoff_zone",
    "distance_km",
    "item_count",
    "order_value_eur",
    "weather_condition",
    "couriers_busy_share",
)

STREAMING = streaming_features(TABLES, WINDOWS, SERVING_HISTORY // timedelta(microseconds=1))

FEATURES = FeatureDefinitions(
    service="delivery_time_v1",
    entity_columns=("restaurant_id", "pickup_zone"),
    request_columns=(),  # the on-demand view reads only the order's time (event_epoch_s, added by the platform)
    # Kept in training rows: the model inputs that are no join key, and the fairness group (never an input).
    passthrough_columns=(*(c for c in MODEL_INPUTS if c != "pickup_zone"), "customer_tier"),
    model_inputs=MODEL_INPUTS,
    tables=TABLES,
    compute=compute_offline,
    streaming=STREAMING,
)
