"""Request-time features (python mode: ~0.1 ms online), computed from the transaction being scored
and the customer's stored state. The same code runs for training sets and for serving."""

from typing import Any

from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from features import customer_channel, customer_device, customer_velocity

transaction_request = RequestSource(
    name="transaction_request",
    schema=[
        Field(name="amount", dtype=Float64),
        Field(name="event_epoch_s", dtype=Float64),  # when the transaction happens, seconds since epoch
    ],
    description="Fields of the transaction being scored.",
)


@on_demand_feature_view(
    sources=[customer_velocity, customer_device, customer_channel, transaction_request],
    schema=[
        Field(name="has_customer_history", dtype=Int64),
        Field(name="amount_to_cust_mean_30d", dtype=Float64),
        Field(name="amount_zscore_30d", dtype=Float64),
        Field(name="seconds_since_last_tx", dtype=Float64),
        Field(name="hour_of_day", dtype=Int64),
        Field(name="day_of_week", dtype=Int64),
        Field(name="is_new_device", dtype=Int64),
        Field(name="device_age_days", dtype=Float64),
        Field(name="is_new_channel", dtype=Int64),
    ],
    mode="python",
    description="The transaction against the customer's habits: relative amount, recency, novelty, time.",
)
def transaction_context(inputs: dict[str, Any]) -> dict[str, Any]:
    # Python mode gets a dict of lists (one entry per row). Missing history arrives as None.
    out: dict[str, list] = {
        name: []
        for name in (
            "has_customer_history",
            "amount_to_cust_mean_30d",
            "amount_zscore_30d",
            "seconds_since_last_tx",
            "hour_of_day",
            "day_of_week",
            "is_new_device",
            "device_age_days",
            "is_new_channel",
        )
    }
    for i, amount in enumerate(inputs["amount"]):
        now = inputs["event_epoch_s"][i]
        mean = inputs["cust_amount_mean_30d"][i]
        std = inputs["cust_amount_std_30d"][i]
        last = inputs["cust_last_tx_epoch_s"][i]
        dev_count = inputs["dev_tx_count_30d"][i]
        first_seen = inputs["dev_first_seen_epoch_s"][i]
        chan_count = inputs["chan_tx_count_30d"][i]
        history = mean is not None and mean > 0
        out["has_customer_history"].append(1 if history else 0)
        out["amount_to_cust_mean_30d"].append(amount / mean if history else 0.0)
        out["amount_zscore_30d"].append((amount - mean) / std if history and std else 0.0)
        out["seconds_since_last_tx"].append(now - last if last is not None else -1.0)
        out["hour_of_day"].append(int(now // 3600) % 24)
        out["day_of_week"].append(int(now // 86400 + 3) % 7)  # 1970-01-01 was a Thursday; Monday = 0
        out["is_new_device"].append(0 if dev_count else 1)
        out["device_age_days"].append((now - first_seen) / 86400 if first_seen is not None else 0.0)
        out["is_new_channel"].append(0 if chan_count else 1)
    return out
