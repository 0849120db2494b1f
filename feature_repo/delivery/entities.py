"""The entities delivery's features are keyed by."""

from feast import Entity, ValueType

restaurant = Entity(
    name="restaurant",
    join_keys=["restaurant_id"],
    value_type=ValueType.STRING,
    description="A restaurant preparing orders; its kitchen load is per restaurant.",
)

pickup_zone = Entity(
    name="pickup_zone",
    join_keys=["pickup_zone"],
    value_type=ValueType.STRING,
    description="The city zone an order is picked up in; courier demand is per zone.",
)
