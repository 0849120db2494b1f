"""Request-time features of the order being estimated (python mode), the same code for training sets and
serving: when it is placed, and whether the restaurant had orders in the last day."""

from typing import Any

from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from features import restaurant_load

order_request = RequestSource(
    name="order_request",
    schema=[Field(name="event_epoch_s", dtype=Float64)],  # when the order is placed, seconds since epoch
    description="Fields of the order being estimated.",
)


@on_demand_feature_view(
    sources=[restaurant_load, order_request],
    schema=[
        Field(name="hour_of_day", dtype=Int64),
        Field(name="day_of_week", dtype=Int64),
        Field(name="has_restaurant_history", dtype=Int64),
    ],
    mode="python",
    description="The order's hour and weekday (rush hours, weekends) and whether its restaurant is known.",
)
def order_context(inputs: dict[str, Any]) -> dict[str, Any]:
    # Python mode gets a dict of lists (one entry per row). Missing history arrives as None.
    out: dict[str, list] = {"hour_of_day": [], "day_of_week": [], "has_restaurant_history": []}
    for i, now in enumerate(inputs["event_epoch_s"]):
        day_orders = inputs["rest_orders_24h"][i]
        out["hour_of_day"].append(int(now // 3600) % 24)
        out["day_of_week"].append(int(now // 86400 + 3) % 7)  # 1970-01-01 was a Thursday; Monday = 0
        out["has_restaurant_history"].append(1 if day_orders else 0)
    return out
