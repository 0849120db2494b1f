"""Thresholds from the reference's own day-to-day variation, and features that trend are not judged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from monitoring_testkit import config

from loopline.config.drift_policy import MethodSpec
from loopline.monitoring.calibration import calibrate
from loopline.monitoring.fast_drift import ColumnPlan, compare

WASSERSTEIN = ColumnPlan(MethodSpec(method="wasserstein", threshold=0.1), categorical=False)
SHARES = ColumnPlan(MethodSpec(method="jensenshannon", threshold=0.1), categorical=True)
PLAN = {"amount": WASSERSTEIN, "weekday_heavy": WASSERSTEIN, "count_30d": WASSERSTEIN, "channel": SHARES}


def days_of_traffic(
    days: int, rows_per_day: int = 800, seed: int = 0, start: str = "2026-03-02"
) -> pd.DataFrame:
    """A stationary amount, one feature with a strong weekly cycle, a count that grows with the history,
    and a channel mix: ``days`` days, every hour."""
    rng = np.random.default_rng(seed)
    frames = []
    for d in range(days):
        day = pd.Timestamp(start, tz="UTC") + pd.Timedelta(days=d)
        weekend = day.dayofweek >= 5
        frames.append(
            pd.DataFrame(
                {
                    "event_timestamp": day + pd.to_timedelta(rng.uniform(0, 86400, rows_per_day), unit="s"),
                    "amount": rng.lognormal(3.5, 0.8, rows_per_day),
                    "weekday_heavy": rng.normal(3.0 if weekend else 0.0, 1.0, rows_per_day),
                    "count_30d": rng.poisson(2 + 3 * min(d, 30), rows_per_day).astype("float64"),
                    "channel": rng.choice(["chip", "online", "contactless"], rows_per_day, p=[0.3, 0.3, 0.4]),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def policy(**overrides):
    return config().calibration.model_copy(update=overrides)


def test_thresholds_come_from_the_largest_day_vs_rest_score() -> None:
    reference = days_of_traffic(21)
    calibration = calibrate(reference, PLAN, policy(), window_rows=800)
    assert calibration.calibrated and calibration.days == 21 and "21 reference days" in calibration.note
    for column, item in calibration.columns.items():
        assert item.threshold == pytest.approx(max(0.02, 1.5 * item.day_scores_max), abs=1e-5), column
    # The weekly cycle is normal variation: its threshold is far above the stationary amount's.
    assert calibration.columns["weekday_heavy"].threshold > 5 * calibration.columns["amount"].threshold


def test_a_normal_later_day_passes_and_a_shifted_one_drifts() -> None:
    reference = days_of_traffic(21)
    later = days_of_traffic(3, seed=7, start="2026-03-23")
    calibration = calibrate(reference, PLAN, policy(), window_rows=800)
    plan = calibration.plan({c: PLAN[c] for c in ("amount", "weekday_heavy", "channel")})
    for _, day in later.groupby(later["event_timestamp"].dt.floor("D")):
        assert not any(c.drifted for c in compare(reference, day, plan))
        shifted = day.assign(amount=day["amount"] * 1.6)
        assert {c.column for c in compare(reference, shifted, plan) if c.drifted} == {"amount"}


def test_a_feature_that_grows_through_the_training_window_is_not_judged() -> None:
    calibration = calibrate(days_of_traffic(21), PLAN, policy(), window_rows=800)
    grows = calibration.columns["count_30d"]
    assert not grows.judged and grows.trend > 0.9 and "moves steadily" in grows.note
    assert all(calibration.columns[c].judged for c in ("amount", "weekday_heavy", "channel"))


def test_days_are_compared_at_the_window_size() -> None:
    reference = days_of_traffic(14, rows_per_day=2000)
    small = calibrate(reference, PLAN, policy(), window_rows=300)
    large = calibrate(reference, PLAN, policy(), window_rows=5000)
    assert (small.day_rows, large.day_rows) == (300, 2000)
    # A small window is noisier: the same reference gives it a wider threshold.
    assert small.columns["amount"].threshold > large.columns["amount"].threshold


def test_too_short_or_untimed_references_keep_the_fixed_thresholds_and_say_why() -> None:
    short = calibrate(days_of_traffic(4), PLAN, policy(), window_rows=800)
    assert not short.calibrated and "4 full day(s)" in short.note and "min_days=7" in short.note
    assert {c.threshold for c in short.columns.values()} == {0.1}
    untimed = calibrate(days_of_traffic(21).drop(columns="event_timestamp"), PLAN, policy(), window_rows=800)
    assert not untimed.calibrated and "no event timestamps" in untimed.note
    off = calibrate(days_of_traffic(21), PLAN, policy(enabled=False), window_rows=800)
    assert not off.calibrated and "calibration off" in off.note


def test_the_score_is_judged_even_when_it_trends() -> None:
    calibration = calibrate(
        days_of_traffic(21), PLAN, policy(), window_rows=800, always_judged=("count_30d",)
    )
    assert calibration.columns["count_30d"].judged and calibration.columns["count_30d"].trend > 0.9


def test_the_reference_is_calibrated_by_its_own_time_column_whatever_the_use_case_calls_it() -> None:
    """Delivery's reference carries ``ordered_at``, not fraud's ``event_timestamp``: the same days calibrate
    the same thresholds (before, a reference without ``event_timestamp`` silently fell back to fixed ones)."""
    reference = days_of_traffic(21)
    renamed = reference.rename(columns={"event_timestamp": "ordered_at"})
    fraud_like = calibrate(reference, PLAN, policy(), window_rows=800)
    delivery_like = calibrate(renamed, PLAN, policy(), window_rows=800)
    assert delivery_like.calibrated and delivery_like.to_dict() == fraud_like.to_dict()
    two_clocks = renamed.assign(delivered_at=renamed["ordered_at"])
    assert not calibrate(
        two_clocks, PLAN, policy(), window_rows=800
    ).calibrated  # ambiguous: said, not guessed
