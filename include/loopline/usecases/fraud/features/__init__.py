"""Fraud's feature definitions: what the platform's feature layer reads of this use case.

Its Feast repo is ``feature_repo/fraud/`` (FeatureService ``fraud_detection_v1``: per-customer velocity, per-
merchant volume, device and channel familiarity, and the transaction against the customer's habits). The
offline tables (``tables``) are computed by ``aggregates.compute_offline``; serving keeps them fresh with the
platform's event windows and ``streaming.STREAMING``.
"""

from __future__ import annotations

from loopline.features.definitions import FeatureDefinitions
from loopline.usecases.fraud.features.aggregates import compute_offline
from loopline.usecases.fraud.features.streaming import STREAMING
from loopline.usecases.fraud.features.tables import TABLES

FEATURE_SERVICE = "fraud_detection_v1"
# Entity and request columns every lookup needs (join keys of the views + the request source; the platform
# adds event_epoch_s).
ENTITY_COLUMNS = ("customer_id", "merchant_id", "device_id", "channel")
REQUEST_COLUMNS = ("amount",)
# Transaction columns the model uses directly (categoricals) or the gate needs (fairness groups).
PASSTHROUGH_COLUMNS = ("merchant_category", "merchant_country", "customer_age_band", "customer_region")
# The transaction's own columns the model takes next to the service's features.
MODEL_INPUTS = ("channel", "merchant_category", "merchant_country", "amount")

FEATURES = FeatureDefinitions(
    service=FEATURE_SERVICE,
    entity_columns=ENTITY_COLUMNS,
    request_columns=REQUEST_COLUMNS,
    passthrough_columns=PASSTHROUGH_COLUMNS,
    model_inputs=MODEL_INPUTS,
    tables=TABLES,
    compute=compute_offline,
    streaming=STREAMING,
)
