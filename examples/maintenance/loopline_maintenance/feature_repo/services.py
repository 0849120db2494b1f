"""The versioned set of features the machine-failure model is trained and served with.

Bump the version (a new FeatureService) when the set changes; the training-set manifest and the model
record which one they used, and serving asks for the same one.
"""

from feast import FeatureService
from features import machine_condition
from on_demand import reading_trend

machine_failure_v1 = FeatureService(
    name="machine_failure_v1",
    features=[machine_condition, reading_trend],
    description="Features of the machine-failure model, version 1.",
    tags={"model": "machine_failure", "version": "1"},
)
