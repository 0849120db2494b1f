"""Concept drift: has the champion's labelled quality on served traffic fallen below what the gate measured?

A classifier is judged by PR-AUC and recall (below), a regressor by MAE and RMSE: drift when a bootstrap over
the use case's units is ``confidence`` sure the served error exceeds the gate holdout's by more than
``max_mae_increase`` (a ratio: 0.15 = 15 % larger); its frontier is simply the newest labelled event.

A regressor's error also moves with shocks shared by a whole day (the weather, an event in town): a rainy
day's deliveries are all harder to predict. A bootstrap over units cannot see that, and the served days and
the holdout's few days are different days. So the regressor's check measures the champion's **day-to-day
spread** on its reference (every full day of the training window: its log daily MAE and RMSE, each split's
level removed, since training days are scored in-sample) and, in every bootstrap round, adds the shocks of
as many of those days, drawn at random, as the judged windows and the holdout hold: the fewer days they
hold, the more a single unusual day may move their ratio. With fewer than ``calibration.min_days`` full days in the reference it is not measured, and the
verdict says so. (A classifier's daily PR-AUC on a few dozen positives is mostly sampling noise, which the
bootstrap over units already carries, so it gets no day term.)

Labels come late, and not evenly: chargebacks (fraud) arrive within days, the confirmation of a genuine
transaction only after a maturity window. Traffic younger than that has its frauds labelled but few of
its genuine transactions, so its precision looks perfect and its PR-AUC means nothing. So:

* the **label frontier** is the newest transaction with a confirmed-genuine label, read from the data
  (the same frontier that ends the gate's holdout); the observed label delay is ``now - frontier``;
* the check judges the ``judged_windows`` windows of ``window_hours`` that end at the frontier: the
  lookback is the observed delay plus those windows, never a constant that the delay may outgrow;
* the **baseline** is the champion's quality on its gate holdout (the rows and scores the gate judged it
  on, kept with the version), not the validation score early stopping picked (optimistic by selection);
* a drop counts only when a bootstrap that resamples whole customers is ``confidence`` sure that the
  served PR-AUC (or recall at the decision threshold) is below the baseline by more than the allowance:
  fraud comes in bursts on a few cards, and a few dozen labelled frauds carry wide error bars.

Too few labelled rows or frauds in the judged windows, no frontier yet, or no baseline: "not judged",
with the counts and what is missing. Never a silent pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from loopline.config.drift_policy import Calibration as CalibrationPolicy
from loopline.config.drift_policy import Concept
from loopline.config.use_case import UseCase
from loopline.deployment.analysis import (
    BOOTSTRAP_ROUNDS,
    LabelledSample,
    VariantWindow,
    beyond,
    surely_dropped,
    surely_worse_errors,
)
from loopline.monitoring.calibration import reference_days
from loopline.training.reference import SCORE, SPLIT

JUDGED, NOT_JUDGED = "judged", "not_judged"
# The bootstrap's cluster, in the served rows and the gate's holdout scores: the use case's unit (a customer,
# a restaurant), since errors come in bursts on a few. A frame without it that has the use case's own unit
# column (holdout scores kept before) uses that; with neither, each event is its own unit.
UNIT = "unit"


@dataclass(frozen=True)
class Baseline:
    """The champion's labelled holdout rows and scores (the use case's id, ``unit``, ``score`` and the use
    case's label) and where they come from."""

    source: str
    frame: pd.DataFrame


@dataclass(frozen=True)
class DaySpread:
    """How far the champion's daily error moved from day to day on its reference (a regressor): per full
    day, log(daily MAE) and log(daily RMSE) less their split's mean (``deviations``, days x 2); empty when
    not measured (``note`` says why)."""

    deviations: np.ndarray
    note: str

    @property
    def days(self) -> int:
        return len(self.deviations)

    @property
    def measured(self) -> bool:
        return self.days > 0


def day_spread(reference: pd.DataFrame, use_case: UseCase, policy: CalibrationPolicy) -> DaySpread:
    """The champion's day-to-day error spread on ``reference`` (the trainer's sample: score, label, split
    and event time per row), over its days of at least ``policy.min_day_rows`` labelled rows; not measured
    with fewer than ``policy.min_days`` of them or without event times."""
    label = use_case.label_column
    labelled = reference[reference[label].notna()] if label in reference else reference.iloc[:0]
    days = reference_days(labelled, policy.min_day_rows) if len(labelled) else None
    if days is None:
        return DaySpread(
            np.empty((0, 2)),
            "not measured: the reference has no event times (trained before they were kept) or no labels",
        )
    error = labelled[SCORE].astype("float64") - labelled[label].astype("float64")
    split = labelled[SPLIT] if SPLIT in labelled else pd.Series("all", index=labelled.index)
    # A day the split boundary cuts is two groups: each must be big enough on its own.
    groups = pd.DataFrame({"day": days, "split": split, "abs": error.abs(), "sq": error**2}).dropna()
    daily = groups.groupby(["day", "split"]).agg(
        rows=("abs", "size"), mae=("abs", "mean"), mse=("sq", "mean")
    )
    daily = daily[(daily["rows"] >= policy.min_day_rows) & (daily["mae"] > 0)]
    splits = daily.index.get_level_values("split").nunique()
    if len(daily) < max(policy.min_days, splits + 1):
        return DaySpread(
            np.empty((0, 2)),
            f"not measured: the reference holds {len(daily)} full day(s) of >= {policy.min_day_rows} labelled "
            f"rows, fewer than calibration.min_days={policy.min_days}",
        )
    logs = pd.DataFrame({"mae": np.log(daily["mae"]), "rmse": 0.5 * np.log(daily["mse"])})
    # Training days are scored in-sample, validation days not: each split's own level is removed (and the
    # deviations widened for the levels estimated from the same days).
    deviations = (logs - logs.groupby(level="split").transform("mean")).to_numpy()
    deviations *= np.sqrt(len(daily) / (len(daily) - splits))
    first, last = (pd.Timestamp(d).date() for d in (daily.index[0][0], daily.index[-1][0]))
    return DaySpread(
        deviations,
        f"{len(daily)} reference days {first}..{last}: daily MAE within "
        f"{np.exp(deviations[:, 0].min()) - 1:+.0%}..{np.exp(deviations[:, 0].max()) - 1:+.0%} of its level",
    )


def day_shocks(spread: DaySpread, served_days: float, holdout_days: float, rounds: int) -> np.ndarray:
    """Per bootstrap round, how far day shocks moved log(served / holdout error) (rounds x 2): the mean of
    ``served_days`` reference days' deviations less that of ``holdout_days`` (each drawn with replacement,
    rounded to whole days, at least one), so a served day may be as unusual as any day the champion saw."""
    rng = np.random.default_rng(1)
    served, holdout = (max(1, round(d)) for d in (served_days, holdout_days))
    draw = spread.deviations[rng.integers(0, spread.days, (rounds, served + holdout))]
    shocks: np.ndarray = draw[:, :served].mean(axis=1) - draw[:, served:].mean(axis=1)
    return shocks


def effective_days(times: pd.Series) -> float | None:
    """How many days' worth of independent day shocks rows at ``times`` average over: (sum n)^2 / sum n^2
    of the rows per UTC day (three equal days: 3; one big day and a few stray rows: about 1); None without
    times."""
    stamps = pd.to_datetime(times, utc=True, errors="coerce").dropna()
    if stamps.empty:
        return None
    counts = stamps.dt.floor("D").value_counts().to_numpy(dtype="float64")
    return float(counts.sum() ** 2 / (counts**2).sum())


@dataclass(frozen=True)
class WindowCount:
    start: str
    end: str
    served: int
    labelled: int
    positives: int  # a classifier's positive labels (0 for a regressor)


@dataclass(frozen=True)
class ConceptCheck:
    status: str  # judged | not_judged
    drifted: bool
    note: str
    label_frontier: str | None = None
    label_delay_hours: float | None = None
    judged_from: str | None = None
    judged_until: str | None = None
    baseline: dict[str, Any] | None = None
    current: dict[str, Any] | None = None
    # A classifier: how far PR-AUC / recall dropped at least; a regressor: how much MAE / RMSE grew at least
    # (a ratio of the baseline's), each with the policy's confidence.
    dropped_at_least: dict[str, float] | None = None
    increased_at_least: dict[str, float] | None = None
    # A regressor: the day-to-day spread added to the bootstrap (the reference's, the days on each side).
    day_spread: dict[str, Any] | None = None
    windows: tuple[WindowCount, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lookback(frontier: datetime, config: Concept) -> tuple[datetime, datetime]:
    """[start, end) of the judged windows: ``judged_windows`` windows ending at the label frontier."""
    return frontier - timedelta(hours=config.window_hours) * config.judged_windows, frontier


def _units(frame: pd.DataFrame, use_case: UseCase) -> tuple[str, ...]:
    column = UNIT if UNIT in frame else use_case.unit_column
    if column is None or column not in frame:
        return ("",) * len(frame)  # each event its own unit
    return tuple(frame[column].fillna("").astype(str))


def sample(frame: pd.DataFrame, threshold: float, use_case: UseCase) -> LabelledSample:
    """The canary's labelled sample (distinct events, units for the bootstrap) of labelled rows."""
    label, id_column = use_case.label_column, use_case.id_column
    labelled = frame[frame[label].notna()]
    scores = labelled["score"].to_numpy(dtype="float64")
    window = VariantWindow(
        version="",
        scores=tuple(scores.tolist()),
        event_ids=tuple(labelled[id_column].astype(str)),
        decisions=tuple((scores >= threshold).tolist()),
        unit_ids=_units(labelled, use_case),
    )
    values = labelled[label].astype(int if use_case.task == "binary_classification" else float)
    return LabelledSample.join(window, dict(zip(labelled[id_column].astype(str), values, strict=True)))


def _round(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def _quality(s: LabelledSample, task: str) -> dict[str, Any]:
    if task == "regression":
        mae, rmse = s.errors()
        return {"labelled": s.size, "units": s.distinct_units, "mae": _round(mae), "rmse": _round(rmse)}
    pr_auc, recall = s.quality()
    return {
        "labelled": s.size,
        "positives": s.positives,
        "positive_units": s.positive_units,
        "pr_auc": _round(pr_auc),
        "recall": _round(recall),
    }


def concept_check(
    served: pd.DataFrame,
    baseline: Baseline | None,
    frontier: datetime | None,
    now: datetime,
    config: Concept,
    threshold: float,
    use_case: UseCase,
    spread: DaySpread | None = None,
) -> ConceptCheck:
    """Judge the champion's served traffic before ``frontier`` against ``baseline``.

    ``served``: the champion version's predictions (the use case's id, ``unit``, ``score``, ``ts`` as UTC
    timestamps) with the use case's label where it is known now (NaN otherwise). A classifier is judged by
    PR-AUC and recall, a regressor (``score``: its prediction) by MAE and RMSE, with ``spread`` (the
    champion's day-to-day spread, ``day_spread``) added to its bootstrap; None: not measured."""
    label, task = use_case.label_column, use_case.task
    regression = task == "regression"
    if frontier is None:
        return ConceptCheck(
            NOT_JUDGED,
            False,
            "not judged: no event has a label yet, so no served window has complete labels"
            if regression
            else "not judged: no event has a confirmed-genuine (negative) label yet, so no served window "
            "has complete labels",
        )
    start, end = lookback(frontier, config)
    base: dict[str, Any] = {
        "label_frontier": frontier.isoformat(),
        "label_delay_hours": round((now - frontier).total_seconds() / 3600, 2),
        "judged_from": start.isoformat(),
        "judged_until": end.isoformat(),
    }
    span = timedelta(hours=config.window_hours)
    ts = pd.to_datetime(served["ts"], utc=True) if len(served) else pd.Series(dtype="datetime64[ns, UTC]")
    windows = []
    for i in range(config.judged_windows):
        w_start, w_end = start + span * i, start + span * (i + 1)
        part = served[((ts >= w_start) & (ts < w_end)).to_numpy()]
        labels = part[label].dropna() if len(part) else pd.Series(dtype="float64")
        positives = 0 if regression else int(labels.sum())
        windows.append(WindowCount(w_start.isoformat(), w_end.isoformat(), len(part), len(labels), positives))
    base["windows"] = tuple(windows)
    inside = served[((ts >= start) & (ts < end)).to_numpy()] if len(served) else served
    current = sample(inside, threshold, use_case) if len(inside) else None
    if baseline is None:
        return ConceptCheck(
            NOT_JUDGED,
            False,
            "not judged: the champion has no gate-holdout scores to compare with "
            "(it was gated before they were kept): re-gate it",
            **base,
        )
    reference = sample(baseline.frame, threshold, use_case)
    base["baseline"] = {"source": baseline.source, **_quality(reference, task)}
    if current is not None:
        base["current"] = _quality(current, task)
    if regression:
        days = _day_counts(spread, inside, baseline.frame, use_case)
        return _judge_errors(reference, current, config, start, end, {**base, "day_spread": days}, spread)
    labelled = current.size if current else 0
    positives = current.positives if current else 0
    if labelled < config.min_labelled_rows or positives < config.min_positive_rows or positives == labelled:
        return _waiting(
            start,
            end,
            base,
            f"{labelled} labelled rows with {positives} positive ({label!r} = 1)",
            f"{config.min_labelled_rows} and {config.min_positive_rows}",
        )
    assert current is not None  # labelled == positives == 0 without it, which returned above
    dropped = surely_dropped(reference, current, config.confidence)
    limits = {"pr_auc": config.max_pr_auc_drop, "recall": config.max_recall_drop}
    worse = beyond(dropped, limits)
    q, b = base["current"], base["baseline"]
    text = (
        f"PR-AUC {q['pr_auc']} vs {b['pr_auc']} at the gate, recall {q['recall']} vs {b['recall']}, on "
        f"{labelled} labelled ({positives} positive ({label!r} = 1) on {q['positive_units']} units)"
    )
    sure = ", ".join(f"{k} by >= {dropped[k]:.3f} (allowed {limits[k]})" for k in worse)
    note = _note(text, sure, f"{config.confidence:.1%} sure it dropped")
    return ConceptCheck(
        JUDGED, bool(worse), note, dropped_at_least={k: round(v, 4) for k, v in dropped.items()}, **base
    )


def _waiting(start: datetime, end: datetime, base: dict[str, Any], held: str, need: str) -> ConceptCheck:
    """Not judged: the served windows behind the frontier hold too few labels (``held``, short of ``need``)."""
    return ConceptCheck(
        NOT_JUDGED,
        False,
        f"not judged: waiting for labels: the served windows {start:%Y-%m-%d %H:%M}.."
        f"{end:%Y-%m-%d %H:%M} (before the label frontier, {base['label_delay_hours']:.0f} h ago) "
        f"hold {held}; need {need}",
        **base,
    )


def _note(text: str, sure: str, how_sure: str) -> str:
    """The judged verdict's note: drift with how sure and by how much (``sure``: empty when within limits)."""
    return f"concept drift: {text}; {how_sure} {sure}" if sure else f"within limits: {text}"


def _day_counts(
    spread: DaySpread | None, served: pd.DataFrame, holdout: pd.DataFrame, use_case: UseCase
) -> dict[str, Any]:
    """The day-to-day spread the regressor's bootstrap adds, as the verdict shows it: the reference's days
    and the effective days (``effective_days``) of the judged labelled rows and of the holdout. A holdout
    logged without event times counts as one day (the widest)."""
    spread = spread or DaySpread(np.empty((0, 2)), "not measured: no reference given")
    labelled = served[served[use_case.label_column].notna()] if len(served) else served
    served_days = effective_days(labelled["ts"]) if len(labelled) else None
    time = use_case.time_column
    holdout_days = effective_days(holdout[time]) if time in holdout else None
    return {
        "reference": spread.note,
        "reference_days": spread.days,
        "served_days": None if served_days is None else round(served_days, 2),
        "holdout_days": None if holdout_days is None else round(holdout_days, 2),
        "added": spread.measured and served_days is not None,
    }


def _judge_errors(
    reference: LabelledSample,
    current: LabelledSample | None,
    config: Concept,
    start: datetime,
    end: datetime,
    base: dict[str, Any],
    spread: DaySpread | None,
) -> ConceptCheck:
    """A regressor: drift when a bootstrap over units is ``confidence`` sure the served MAE (or RMSE) is more
    than ``max_mae_increase`` (``max_rmse_increase``) above the gate holdout's, as a ratio of it."""
    labelled = current.size if current else 0
    units = current.distinct_units if current else 0
    if current is None or labelled < config.min_labelled_rows or units < config.min_units:
        return _waiting(
            start,
            end,
            base,
            f"{labelled} labelled rows on {units} distinct units",
            f"{config.min_labelled_rows} labelled rows on {config.min_units} units",
        )
    if reference.size < 2 or reference.distinct_units < 2:
        return ConceptCheck(
            NOT_JUDGED,
            False,
            f"not judged: the gate holdout baseline has {reference.size} labelled rows on "
            f"{reference.distinct_units} units: too few to compare with (re-gate the champion)",
            **base,
        )
    days = base["day_spread"]
    shocks = (
        day_shocks(spread, days["served_days"], days["holdout_days"] or 1.0, BOOTSTRAP_ROUNDS)
        if spread is not None and days["added"]
        else None
    )
    increased = surely_worse_errors(reference, current, config.confidence, day_shocks=shocks)
    limits = {"mae": config.max_mae_increase, "rmse": config.max_rmse_increase}
    worse = beyond(increased, limits)
    q, b = base["current"], base["baseline"]
    spread_text = (
        f"day-to-day spread added ({days['served_days']:g} served and {days['holdout_days'] or 1:g} holdout "
        f"day(s); {days['reference']})"
        if shocks is not None
        else f"day-to-day spread not added ({days['reference']})"
    )
    text = (
        f"MAE {q['mae']} vs {b['mae']} at the gate, RMSE {q['rmse']} vs {b['rmse']}, on {labelled} labelled "
        f"rows of {units} units; {spread_text}"
    )
    sure = ", ".join(f"{k.upper()} by >= {increased[k]:.1%} (allowed {limits[k]:.0%})" for k in worse)
    note = _note(text, sure, f"{config.confidence:.1%} sure it increased")
    return ConceptCheck(
        JUDGED,
        bool(worse),
        note,
        increased_at_least={k: round(v, 4) for k, v in increased.items()},
        **base,
    )
