"""The data contract of the delivery-time use case: food orders, and how long each delivery took.

Orders land as they are placed; the ground truth (minutes from order to door) arrives when the courier
marks the order delivered, so a label is known 15 minutes to 2 hours after its event. The Great Expectations
suites in ``expectations/`` enforce this contract.
"""

from __future__ import annotations

from typing import Final

ORDER_COLUMNS: Final[dict[str, str]] = {
    "order_id": "string",  # unique across all batches, e.g. "o_000000123456"
    "ordered_at": "datetime64[us, UTC]",  # when the order was placed
    "restaurant_id": "string",  # e.g. "r_0042"
    "pickup_zone": "string",  # see ZONES
    "dropoff_zone": "string",  # see ZONES
    "distance_km": "float64",  # road distance restaurant -> door, > 0
    "item_count": "int64",  # dishes in the order, >= 1
    "order_value_eur": "float64",  # > 0
    "weather_condition": "string",  # see WEATHER
    "couriers_busy_share": "float64",  # share of the zone's couriers on a delivery when ordered, 0..1
    "customer_tier": "string",  # fairness group attribute (never a model input), see TIERS
}

DELIVERY_COLUMNS: Final[dict[str, str]] = {
    "order_id": "string",  # refers to an order delivered earlier
    "delivery_minutes": "float64",  # order placed -> handed over at the door
    "delivered_at": "datetime64[us, UTC]",  # when it was handed over (the label became known)
}

ZONES: Final[tuple[str, ...]] = (
    "centre",
    "old_town",
    "harbour",
    "university",
    "suburbs_north",
    "suburbs_south",
)
WEATHER: Final[tuple[str, ...]] = ("clear", "cloudy", "rain", "snow")
TIERS: Final[tuple[str, ...]] = ("new", "regular", "premium")

DISTANCE_MAX_KM: Final[float] = 30.0
MINUTES_MAX: Final[float] = 240.0
