"""Request-time features of the reading being scored (python mode), the same code for training sets and
serving: how far its vibration and bearing temperature are above the machine's own week, and whether the
machine has a history at all."""

from typing import Any

from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from features import machine_condition

reading_request = RequestSource(
    name="reading_request",
    schema=[
        Field(name="vibration_mm_s", dtype=Float64),
        Field(name="bearing_temp_c", dtype=Float64),
    ],
    description="Sensor values of the reading being scored.",
)


@on_demand_feature_view(
    sources=[machine_condition, reading_request],
    schema=[
        Field(name="vibration_rise", dtype=Float64),
        Field(name="bearing_temp_rise", dtype=Float64),
        Field(name="has_machine_history", dtype=Int64),
    ],
    mode="python",
    description="The reading over the machine's week: vibration as a ratio, bearing temperature as a difference.",
)
def reading_trend(inputs: dict[str, Any]) -> dict[str, Any]:
    # Python mode gets a dict of lists (one entry per row). Missing history arrives as None: no rise then.
    out: dict[str, list] = {"vibration_rise": [], "bearing_temp_rise": [], "has_machine_history": []}
    for i, vibration in enumerate(inputs["vibration_mm_s"]):
        week_vibration = inputs["mc_vibration_mean_7d"][i]
        week_bearing = inputs["mc_bearing_temp_mean_7d"][i]
        known = week_vibration is not None and week_bearing is not None and week_vibration > 0
        out["vibration_rise"].append(float(vibration) / week_vibration if known else 1.0)
        out["bearing_temp_rise"].append(float(inputs["bearing_temp_c"][i]) - week_bearing if known else 0.0)
        out["has_machine_history"].append(1 if known else 0)
    return out
