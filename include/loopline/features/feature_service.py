"""The feature service every consumer asks for, and what its readers share.

Training sets, the online lookup and the skew check all go through one versioned Feast FeatureService (the
use case's, ``FeatureDefinitions.service``: fraud's ``fraud_detection_v1``), so training and serving ask for the
same features computed by the same definitions. This module holds what they all need of it (its name, its
feature columns, the 1 µs join offset, the error for rows lost or duplicated) and reads no store, so each of
them imports it without importing the others.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

ONE_MICROSECOND = timedelta(microseconds=1)


class FeatureRowsMismatch(RuntimeError):
    """Rows went missing or were duplicated between the entity rows and the features: never silent."""


def service_name(store: FeatureStore, name: str | None = None) -> str:
    """``name``, or the FeatureService of the use case whose Feast repo ``store`` opened."""
    if name is not None:
        return name
    from loopline.features.definitions import feature_definitions, use_case_of

    return feature_definitions(use_case_of(store)).service


def service(store: FeatureStore, name: str | None = None) -> FeatureService:
    return store.get_feature_service(service_name(store, name))


def feature_names(store: FeatureStore, name: str | None = None) -> list[str]:
    """The feature columns the service returns, in a stable order."""
    return [
        f.name for projection in service(store, name).feature_view_projections for f in projection.features
    ]
