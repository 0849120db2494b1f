"""The versioned set of features the delivery-time model is trained and served with.

Bump the version (a new FeatureService) when the set changes; the training-set manifest and the model
record which one they used, and serving asks for the same one.
"""

from feast import FeatureService
from features import restaurant_load, zone_load
from on_demand import order_context

delivery_time_v1 = FeatureService(
    name="delivery_time_v1",
    features=[restaurant_load, zone_load, order_context],
    description="Features of the delivery-time model, version 1.",
    tags={"model": "delivery_time", "version": "1"},
)
