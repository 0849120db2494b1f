"""The entities Loopline's fraud features are keyed by."""

from feast import Entity, ValueType

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A card holder; velocity and spending-habit features are per customer.",
)

merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.STRING,
    description="A merchant accepting card payments; volume features are per merchant.",
)

device = Entity(
    name="device",
    join_keys=["device_id"],
    value_type=ValueType.STRING,
    description="A device or terminal fingerprint; with the customer it tells a new device from a known one.",
)

channel = Entity(
    name="channel",
    join_keys=["channel"],
    value_type=ValueType.STRING,
    description="How the card was used (chip, contactless, online, atm); with the customer: channel novelty.",
)
