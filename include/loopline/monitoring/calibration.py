"""Drift thresholds from the reference's own variability: how far a normal day lies from the rest.

A drift score means nothing without the spread it has between samples of the same, undrifted traffic.
The reference spans the whole training window (every day, hour and weekday of it), so it holds that
spread: each full day of it is compared with the rest of the reference by the column's pinned method,
at the window's sample size (a day bigger than the window is subsampled to it, so sampling noise is
never smaller than the window's). A normal day of serving moves like one of those days; a column's
threshold is ``margin`` × the largest day-vs-rest score, never below ``min_threshold``. The verdict keeps
both numbers, so anyone can see what "normal" was and how far the window went beyond it.

A numeric column whose daily mean moves steadily through the whole training window (a 30-day count
while the history fills up, an age that grows with the calendar) has no stationary reference: every
later window lies beyond it by construction. Such a column is compared and shown but **not judged**
(its note says so), instead of drifting every day.

Without timestamps or with fewer than ``min_days`` full days in the reference the fixed thresholds of
``drift.yaml`` apply, and the calibration says why.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from loopline.config.drift_policy import Calibration as CalibrationPolicy
from loopline.monitoring.fast_drift import ColumnPlan, compare


@dataclass(frozen=True)
class ColumnCalibration:
    """What normal looks like for one column, and the threshold taken from it."""

    column: str
    threshold: float
    day_scores_max: float | None = None  # the largest score of a reference day against the rest
    day_scores_median: float | None = None
    trend: float | None = None  # Spearman rank correlation of the column's daily mean with the day
    judged: bool = True
    note: str = ""


@dataclass(frozen=True)
class Calibration:
    calibrated: bool
    days: int
    day_rows: int  # rows of each reference day as compared (at most the window's)
    note: str
    columns: dict[str, ColumnCalibration] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def plan(self, plan: Mapping[str, ColumnPlan]) -> dict[str, ColumnPlan]:
        """``plan`` with each column's calibrated threshold."""
        return {
            c: ColumnPlan(p.spec.model_copy(update={"threshold": self.columns[c].threshold}), p.categorical)
            if c in self.columns
            else p
            for c, p in plan.items()
        }


def _fixed(plan: Mapping[str, ColumnPlan], note: str) -> Calibration:
    return Calibration(
        False,
        0,
        0,
        note,
        {c: ColumnCalibration(c, p.spec.threshold, note="fixed threshold") for c, p in plan.items()},
    )


def event_time_column(frame: pd.DataFrame) -> str | None:
    """The reference's event time: its one timestamp column (the trainer logs the sample with the use case's
    time column, and every other column is a model input, the score, the label or the split); None when it
    has none (a reference logged before times were kept) or several (ambiguous)."""
    stamps = [c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c])]
    return stamps[0] if len(stamps) == 1 else None


def reference_days(frame: pd.DataFrame, min_rows: int) -> pd.Series | None:
    """Each row's UTC calendar day, or None without usable timestamps; days with fewer than ``min_rows``
    rows (the cut edges of the training window) are marked NaT and left out of the comparison."""
    time_column = event_time_column(frame)
    if time_column is None:
        return None
    stamps = pd.to_datetime(frame[time_column], utc=True, errors="coerce")
    if stamps.isna().all():
        return None
    days = stamps.dt.floor("D")
    counts = days.value_counts()
    return days.where(days.isin(counts[counts >= min_rows].index))


def _trend(frame: pd.DataFrame, days: pd.Series, column: str) -> float | None:
    values = pd.to_numeric(frame[column], errors="coerce")
    daily = values.groupby(days).mean().dropna()
    if len(daily) < 3 or daily.nunique() < 2:
        return None
    return float(
        pd.Series(np.arange(len(daily)), dtype="float64").corr(
            pd.Series(daily.to_numpy(), dtype="float64"), method="spearman"
        )
    )


def calibrate(
    reference: pd.DataFrame,
    plan: Mapping[str, ColumnPlan],
    policy: CalibrationPolicy,
    window_rows: int,
    seed: int = 0,
    always_judged: Collection[str] = (),
) -> Calibration:
    """Per column of ``plan``: the threshold for a window of ``window_rows`` rows, from the spread of
    day-vs-rest scores within ``reference``, and whether the column is judged at all (see the module;
    ``always_judged``: columns judged even when they trend, e.g. the model's score)."""
    if not policy.enabled:
        return _fixed(plan, "calibration off (drift.yaml calibration.enabled): fixed thresholds")
    days = reference_days(reference, policy.min_day_rows)
    full_days = sorted(days.dropna().unique()) if days is not None else []
    if len(full_days) < policy.min_days:
        why = (
            "the reference has no event timestamps (trained before they were kept) or several"
            if days is None
            else f"the reference covers {len(full_days)} full day(s) of >= {policy.min_day_rows} rows"
        )
        return _fixed(
            plan,
            f"not calibrated: {why}, fewer than calibration.min_days={policy.min_days}; "
            "the fixed thresholds of drift.yaml apply",
        )
    assert days is not None  # min_days >= 3 (drift_policy): no days returned above
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {c: [] for c in plan}
    day_rows = 0
    for day in full_days:
        inside = (days == day).to_numpy()
        current = reference[inside]
        if len(current) > window_rows:  # compare at the window's size: never less noise than the window has
            current = current.iloc[np.sort(rng.choice(len(current), window_rows, replace=False))]
        day_rows = max(day_rows, len(current))
        for result in compare(reference[~inside], current, plan):
            if result.score is not None:
                scores[result.column].append(result.score)
    columns = {}
    for column, item in plan.items():
        found = scores[column]
        spread = max(found) if found else None
        threshold = (
            max(policy.min_threshold, policy.margin * spread) if spread is not None else item.spec.threshold
        )
        trend = None if item.categorical else _trend(reference, days, column)
        steady = (
            trend is not None and abs(trend) >= policy.trend_rank_correlation and column not in always_judged
        )
        note = (
            f"not judged: its daily mean moves steadily through the training window (Spearman "
            f"{trend:+.2f} over {len(full_days)} days), so any later window lies beyond it"
            if steady
            else ""
            if found
            else "no day-vs-rest score (no values): fixed threshold"
        )
        columns[column] = ColumnCalibration(
            column,
            round(threshold, 6),
            None if spread is None else round(spread, 6),
            round(float(np.median(found)), 6) if found else None,
            None if trend is None else round(trend, 4),
            not steady,
            note,
        )
    first, last = pd.Timestamp(full_days[0]).date(), pd.Timestamp(full_days[-1]).date()
    return Calibration(
        True,
        len(full_days),
        day_rows,
        f"calibrated on {len(full_days)} reference days {first}..{last}: threshold = "
        f"{policy.margin:g} x the largest day-vs-rest score (>= {policy.min_threshold:g})",
        columns,
    )


def judged(result: Any, calibration: Calibration) -> Any:
    """``result`` (a ``ColumnDrift``) as judged by ``calibration``: a column that is not judged keeps its
    score but never counts as drifted, and says why."""
    item = calibration.columns.get(result.column)
    if item is None or item.judged:
        return result
    return replace(result, drifted=False, judged=False, note=item.note)
