"""The entity maintenance's features are keyed by."""

from feast import Entity, ValueType

machine = Entity(
    name="machine",
    join_keys=["machine_id"],
    value_type=ValueType.STRING,
    description="A machine on a plant's floor; its condition is tracked per machine.",
)
