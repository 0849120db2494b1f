"""Delivery-time estimation: the second use case, a regression problem.

Food orders land as they are placed; how many minutes each took from order to door arrives when the courier
hands it over. A regressor predicts the minutes; the gate and the canary judge it by MAE and RMSE, and fairly
across customer tiers (an estimate must not be worse for new customers than for premium ones).
"""

from __future__ import annotations

from pathlib import Path

from loopline.config.use_case import UseCase
from loopline.usecases.delivery.schema import DELIVERY_COLUMNS, ORDER_COLUMNS

USE_CASE = UseCase(
    name="delivery",
    task="regression",
    event_columns=ORDER_COLUMNS,
    label_columns=DELIVERY_COLUMNS,
    id_column="order_id",
    time_column="ordered_at",
    label_column="delivery_minutes",
    label_time_column="delivered_at",
    expectations_dir=Path(__file__).parent / "expectations",
    policies_dir=Path(__file__).parent / "policies",
    model_name="delivery_time",
    group_columns=("customer_tier",),
    unit_column="restaurant_id",
    batch_names={"events": "orders", "labels": "deliveries"},
    simulator="loopline.usecases.delivery.simulator:SIMULATION",
    features="loopline.usecases.delivery.features:FEATURES",
    description="Delivery-time estimation for food orders, with the true minutes arriving at hand-over.",
)
