"""The feature service every consumer asks for, and what its readers share.

Training sets, the online lookup and the skew check all go through one versioned Feast FeatureService
(``fraud_detection_v1``), so training and serving ask for the same features computed by the same
definitions. This module holds what they all need of it (its name, the columns of a lookup, the 1 µs
join offset, the error for rows lost or duplicated) and reads no store, so each of them imports it
without importing the others.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

FEATURE_SERVICE = "fraud_detection_v1"
# Entity and request columns every lookup needs (join keys of the views + the request source).
ENTITY_COLUMNS = ("customer_id", "merchant_id", "device_id", "channel")
REQUEST_COLUMNS = ("amount", "event_epoch_s")
# Transaction columns the model uses directly (categoricals) or the gate needs (fairness groups).
PASSTHROUGH_COLUMNS = ("merchant_category", "merchant_country", "customer_age_band", "customer_region")
ONE_MICROSECOND = timedelta(microseconds=1)


class FeatureRowsMismatch(RuntimeError):
    """Rows went missing or were duplicated between the entity rows and the features: never silent."""


def service(store: FeatureStore, name: str = FEATURE_SERVICE) -> FeatureService:
    return store.get_feature_service(name)


def feature_names(store: FeatureStore, name: str = FEATURE_SERVICE) -> list[str]:
    """The feature columns the service returns, in a stable order."""
    return [
        f.name for projection in service(store, name).feature_view_projections for f in projection.features
    ]
