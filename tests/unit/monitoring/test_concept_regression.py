"""Concept drift of a regressor: the served MAE behind the label frontier against the gate holdout's, with a
bootstrap over the use case's units (restaurants), on the delivery simulator's city.

The world is the same for both: an estimator trained on the first week, gated on the next two days, then
serves a week. With ``slower_couriers`` from the first served day it under-predicts two zones, and the check
fires; without drift, in several cities (seeds), it stays quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from delivery_world import DELIVERY, START, Estimator, days, scored
from monitoring_testkit import config

from loopline.monitoring.concept import JUDGED, NOT_JUDGED, Baseline, ConceptCheck, concept_check

SEEDS = (3, 4, 5, 6, 7)
FRONTIER = datetime.combine(START, datetime.min.time(), tzinfo=UTC) + timedelta(days=16)
NOW = FRONTIER + timedelta(hours=2)  # a delivery's minutes are known within hours


def judge(seed: int, drift: str | None, **policy: object) -> ConceptCheck:
    estimator = Estimator.fit(days(seed, 0, 7))
    holdout = days(seed, 7, 9)
    served = days(seed, 9, 16, drift, drift_from=9)
    concept = config().concept.model_copy(
        update={"window_hours": 24, "judged_windows": 7, "min_labelled_rows": 1000, **policy}
    )
    return concept_check(
        scored(served, estimator.predict(served)),
        Baseline("gate holdout of v1", scored(holdout, estimator.predict(holdout)).drop(columns="ts")),
        FRONTIER,
        NOW,
        concept,
        threshold=0.5,
        use_case=DELIVERY,
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_no_drift_is_no_false_alarm(seed: int) -> None:
    result = judge(seed, None)
    assert result.status == JUDGED and not result.drifted, result.note
    assert "within limits" in result.note and result.increased_at_least is not None
    assert result.increased_at_least["mae"] < 0.15
    assert result.current is not None and result.current["units"] >= 100


@pytest.mark.parametrize("seed", SEEDS)
def test_slower_couriers_are_concept_drift(seed: int) -> None:
    result = judge(seed, "slower_couriers")
    assert result.status == JUDGED and result.drifted, result.note
    assert result.increased_at_least is not None and result.increased_at_least["mae"] > 0.15
    assert "concept drift" in result.note and "MAE" in result.note
    assert result.current is not None and result.baseline is not None
    assert result.current["mae"] > result.baseline["mae"]


def test_too_few_units_are_not_judged_and_say_so() -> None:
    result = judge(3, "slower_couriers", min_units=1000)
    assert result.status == NOT_JUDGED and not result.drifted
    assert "waiting for labels" in result.note
    assert "on 120 distinct units; need 1000 labelled rows on 1000 units" in result.note


def test_no_labels_yet_is_said_not_passed() -> None:
    result = judge(3, None, min_labelled_rows=10**6)
    assert result.status == NOT_JUDGED and "waiting for labels" in result.note
