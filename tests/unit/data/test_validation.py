"""The fraud use case's GX suites (include/loopline/usecases/fraud/expectations) agree with the data contract in loopline.usecases.fraud.schema."""

from __future__ import annotations

import pandas as pd
import pytest

from loopline.config.use_case import load_use_case
from loopline.data.validation import load_suite_spec, validate_frame
from loopline.usecases.fraud import schema

SUITES_DIR = load_use_case("fraud").expectations_dir


def _expectations(kind: str, type_: str) -> dict[str | None, dict]:
    return {
        e["kwargs"].get("column"): e
        for e in load_suite_spec(SUITES_DIR, kind)["expectations"]
        if e["type"] == type_
    }


@pytest.mark.parametrize("kind", schema.BATCH_KINDS)
def test_column_set_and_not_null_cover_the_contract(kind):
    columns = list(schema.columns_for(kind))
    (column_set,) = _expectations(kind, "expect_table_columns_to_match_set").values()
    assert column_set["kwargs"]["column_set"] == columns and column_set["kwargs"]["exact_match"] is True
    assert set(_expectations(kind, "expect_column_values_to_not_be_null")) == set(columns)
    assert all(
        e["severity"] in ("critical", "warning") for e in load_suite_spec(SUITES_DIR, kind)["expectations"]
    )


def test_vocabularies_match_the_schema_and_only_open_ones_are_warnings():
    in_set = _expectations("transactions", "expect_column_values_to_be_in_set")
    closed = {
        "channel": schema.CHANNELS,
        "customer_age_band": schema.AGE_BANDS,
        "customer_region": schema.REGIONS,
    }
    for column, values in closed.items():
        assert in_set[column]["kwargs"]["value_set"] == list(values)
        assert in_set[column]["severity"] == "critical"
    assert in_set["merchant_category"]["kwargs"]["value_set"] == list(schema.MERCHANT_CATEGORIES)
    assert in_set["merchant_category"]["severity"] == "warning"
    between = _expectations("transactions", "expect_column_values_to_be_between")["amount"]["kwargs"]
    assert (between["min_value"], between["max_value"]) == (schema.AMOUNT_MIN, schema.AMOUNT_MAX)


def test_timestamps_slightly_ahead_are_clock_skew_but_hours_ahead_are_blocked():
    now = pd.Timestamp("2026-03-01T12:00:00Z")
    frame = pd.DataFrame(
        {
            "transaction_id": pd.array(["tx_1", "tx_2"], dtype="string"),
            "is_fraud": [0, 1],
            "label_timestamp": pd.to_datetime(["2026-03-01T12:03:00Z", "2026-03-01T11:00:00Z"], utc=True),
        }
    )
    assert validate_frame(frame, "labels", SUITES_DIR, now=now.to_pydatetime()).passed
    frame.loc[0, "label_timestamp"] = pd.Timestamp("2026-03-01T15:00:00Z")
    outcome = validate_frame(frame, "labels", SUITES_DIR, now=now.to_pydatetime())
    assert [f.expectation for f in outcome.blocking] == ["expect_column_max_to_be_between"]
