"""The versioned set of features the fraud model is trained and served with.

Bump the version (a new FeatureService) when the set changes; the training-set manifest and the
model record which one they used, and serving asks for the same one.
"""

from feast import FeatureService
from features import customer_channel, customer_device, customer_velocity, merchant_stats
from on_demand import transaction_context

fraud_detection_v1 = FeatureService(
    name="fraud_detection_v1",
    features=[customer_velocity, merchant_stats, customer_device, customer_channel, transaction_context],
    description="Features of the card-fraud model, version 1.",
    tags={"model": "fraud_detector", "version": "1"},
)
