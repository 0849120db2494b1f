"""A use case's feature definitions, as the platform loads and checks them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from loopline.config.use_case import UseCaseError, load_use_case
from loopline.features.definitions import EVENT_EPOCH_S, FeatureDefinitions, feature_definitions


def test_each_use_case_names_its_definitions_and_they_fit_its_events() -> None:
    for name, service in (("fraud", "fraud_detection_v1"), ("delivery", "delivery_time_v1")):
        use_case = load_use_case(name)
        definitions = feature_definitions(use_case)
        assert isinstance(definitions, FeatureDefinitions) and definitions.service == service
        kept = definitions.event_columns(use_case)
        assert kept[:2] == [use_case.id_column, use_case.time_column] and len(kept) == len(set(kept))
        assert EVENT_EPOCH_S not in definitions.request_columns  # the platform adds it
        assert not set(use_case.group_columns) & set(definitions.model_inputs)


def test_fraud_keeps_its_training_columns_and_model_inputs() -> None:
    fraud = load_use_case("fraud")
    definitions = feature_definitions(fraud)
    assert definitions.event_columns(fraud) == [
        "transaction_id",
        "event_timestamp",
        "customer_id",
        "merchant_id",
        "device_id",
        "channel",
        "amount",
        "merchant_category",
        "merchant_country",
        "customer_age_band",
        "customer_region",
    ]
    assert definitions.model_inputs == ("channel", "merchant_category", "merchant_country", "amount")
    assert definitions.streaming


def test_missing_or_wrong_definitions_are_named() -> None:
    fraud = load_use_case("fraud")
    with pytest.raises(UseCaseError, match="has no feature definitions"):
        feature_definitions(replace(fraud, features=None))
    with pytest.raises(UseCaseError, match="cannot be loaded"):
        feature_definitions(replace(fraud, features="loopline.usecases.fraud.features:NOPE"))
    with pytest.raises(UseCaseError, match="is not a loopline.features.definitions.FeatureDefinitions"):
        feature_definitions(replace(fraud, features="loopline.usecases.fraud:USE_CASE"))
    delivery = load_use_case("delivery")
    with pytest.raises(UseCaseError, match=r"its features name column\(s\) \[.*'customer_id'"):
        # delivery's events have no customer_id: fraud's definitions do not fit them
        feature_definitions(replace(delivery, features="loopline.usecases.fraud.features:FEATURES"))
