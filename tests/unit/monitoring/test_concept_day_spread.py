"""A regressor's concept check weighs shocks shared by a whole day (a storm slows every delivery of it): the
champion's day-to-day error spread on its reference is added to the bootstrap over units, so one served
day as unusual as a day the champion already lived through is not concept drift, while a lasting rise far
beyond any such day still is. Errors here are drawn per day with a known scale, so every expectation
follows from the numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from monitoring_testkit import config

from loopline.config.use_case import load_use_case
from loopline.monitoring.concept import (
    JUDGED,
    Baseline,
    ConceptCheck,
    DaySpread,
    concept_check,
    day_spread,
    effective_days,
)
from loopline.training.reference import SCORE, SPLIT

DELIVERY = load_use_case("delivery")
DAY0 = datetime(2026, 3, 2, tzinfo=UTC)
ROWS_PER_DAY = 600
UNITS = 120


def rows(first_day: int, scales: list[float], seed: int) -> pd.DataFrame:
    """``ROWS_PER_DAY`` deliveries per day from ``first_day``, the estimate off by a normal error of that
    day's scale (minutes), spread over ``UNITS`` restaurants."""
    rng = np.random.default_rng(seed)
    frames = []
    for offset, scale in enumerate(scales):
        n = ROWS_PER_DAY
        minutes = rng.gamma(6.0, 5.0, n)
        start = DAY0 + timedelta(days=first_day + offset)
        frames.append(
            pd.DataFrame(
                {
                    DELIVERY.id_column: [f"o{first_day + offset}-{i}" for i in range(n)],
                    "unit": rng.integers(0, UNITS, n).astype(str),
                    SCORE: minutes + rng.normal(0.0, scale, n),
                    DELIVERY.label_column: minutes,
                    DELIVERY.time_column: start + pd.to_timedelta(rng.uniform(0, 86_000, n), unit="s"),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def reference(scales: list[float], validation_days: int = 2) -> pd.DataFrame:
    frame = rows(0, scales, seed=1)
    day = (frame[DELIVERY.time_column] - DAY0).dt.days
    frame[SPLIT] = np.where(day >= len(scales) - validation_days, "validation", "train")
    return frame


# Twelve ordinary days with one storm day (errors 1.4 times wider); validation days scored out of sample.
ORDINARY = [3.0] * 12
WITH_STORM = [3.0] * 5 + [4.2] + [3.0] * 4 + [3.3, 3.3]


def judge(served_scales: list[float], spread: DaySpread | None, holdout_times: bool = True) -> ConceptCheck:
    served_day = 20
    served = rows(served_day, served_scales, seed=7).rename(columns={DELIVERY.time_column: "ts"})
    holdout = rows(14, [3.0, 3.0], seed=5)
    if not holdout_times:
        holdout = holdout.drop(columns=DELIVERY.time_column)
    frontier = DAY0 + timedelta(days=served_day + len(served_scales))
    return concept_check(
        served,
        Baseline("gate holdout of v1", holdout),
        frontier,
        frontier + timedelta(hours=2),
        config().concept.model_copy(
            update={"window_hours": 24, "judged_windows": 7, "min_labelled_rows": 500}
        ),
        0.5,
        DELIVERY,
        spread,
    )


def test_the_spread_is_each_days_error_against_its_splits_level() -> None:
    spread = day_spread(reference(WITH_STORM), DELIVERY, config().calibration)
    assert spread.days == 12 and spread.measured
    mae = spread.deviations[:, 0]
    assert np.argmax(mae) == 5 and mae[5] == pytest.approx(np.log(1.4), abs=0.08)
    # The validation days' wider (out-of-sample) errors are their level, not a shock.
    assert np.abs(mae[-2:]).max() < 0.05
    assert "12 reference days" in spread.note


def test_too_few_days_or_no_times_are_not_measured_and_say_why() -> None:
    policy = config().calibration
    short = day_spread(reference([3.0] * (policy.min_days - 1), validation_days=1), DELIVERY, policy)
    assert not short.measured and f"calibration.min_days={policy.min_days}" in short.note
    timeless = day_spread(reference(ORDINARY).drop(columns=DELIVERY.time_column), DELIVERY, policy)
    assert not timeless.measured and "no event times" in timeless.note


def test_effective_days_count_uneven_days_as_fewer() -> None:
    day = pd.Timestamp(DAY0)
    even = pd.Series([day] * 100 + [day + pd.Timedelta(days=1)] * 100 + [day + pd.Timedelta(days=2)] * 100)
    assert effective_days(even) == pytest.approx(3.0)
    lopsided = pd.Series([day] * 300 + [day + pd.Timedelta(days=1)] * 3)
    assert effective_days(lopsided) == pytest.approx(1.02, abs=0.01)
    assert effective_days(pd.Series([], dtype="datetime64[ns, UTC]")) is None


def test_a_served_storm_day_like_one_the_champion_lived_through_is_not_concept_drift() -> None:
    spread = day_spread(reference(WITH_STORM), DELIVERY, config().calibration)
    result = judge([4.0], spread)
    assert result.status == JUDGED and not result.drifted, result.note
    assert "day-to-day spread added (1 served and 2 holdout day(s)" in result.note
    assert result.day_spread is not None and result.day_spread["reference_days"] == 12
    # Without the day term the same day reads as concept drift: the bootstrap over units is sure of it.
    without = judge([4.0], None)
    assert without.drifted and "day-to-day spread not added" in without.note, without.note


def test_a_storm_day_the_reference_never_held_is_concept_drift() -> None:
    spread = day_spread(reference(ORDINARY), DELIVERY, config().calibration)
    result = judge([4.0], spread)
    assert result.drifted, result.note


def test_a_rise_beyond_any_normal_day_is_concept_drift_despite_the_spread() -> None:
    spread = day_spread(reference(WITH_STORM), DELIVERY, config().calibration)
    result = judge([9.0, 9.0], spread)
    assert result.status == JUDGED and result.drifted, result.note
    assert result.increased_at_least is not None and result.increased_at_least["mae"] > 1.0


def test_a_holdout_without_times_counts_as_one_day() -> None:
    spread = day_spread(reference(WITH_STORM), DELIVERY, config().calibration)
    result = judge([3.0], spread, holdout_times=False)
    assert result.day_spread is not None and result.day_spread["holdout_days"] is None
    assert "1 served and 1 holdout day(s)" in result.note
