"""The drift verdict and the retrain policy: pure functions over frames and history events (no I/O).

``decide`` turns the champion's reference sample and a window of serving traffic into a ``DriftVerdict``:
data drift per feature (the pinned methods of ``drift.yaml``, computed by ``fast_drift``, each judged
against a threshold calibrated on the reference's own day-to-day variation by ``calibration``), prediction
drift (the champion's alert rate, calibrated likewise), data quality (missing values, values
outside the reference range, unseen categories) and concept drift (``concept.concept_check``, passed in).

``should_retrain`` decides whether that verdict becomes a retrain request: never while training runs,
never twice within the cooldown, never while an earlier request is still waiting for its training run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from loopline.config.drift_policy import DriftConfig
from loopline.monitoring.calibration import Calibration, calibrate, judged
from loopline.monitoring.concept import ConceptCheck
from loopline.monitoring.fast_drift import ColumnDrift, ColumnPlan, column_drift, compare
from loopline.monitoring.reference import SCORE, Reference

OK, DRIFT, INSUFFICIENT, INVALID = "ok", "drift", "insufficient_data", "invalid_input"


@dataclass(frozen=True)
class QualityIssue:
    column: str
    check: str  # absent | missing_share | out_of_range_share | unseen_categories
    value: float
    limit: float


@dataclass(frozen=True)
class DriftVerdict:
    """Everything one check found. ``reasons`` lists the retrain triggers among its findings."""

    status: str  # ok | drift | insufficient_data | invalid_input
    checked_at: str
    window_start: str
    window_end: str
    rows: int
    reference_version: str
    columns: tuple[ColumnDrift, ...] = ()
    drifted_share: float = 0.0
    dataset_drift: bool = False
    prediction: ColumnDrift | None = None
    prediction_drift: bool = False
    quality: tuple[QualityIssue, ...] = ()
    concept: ConceptCheck | None = None
    concept_drift: bool = False
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    calibration: Calibration | None = (
        None  # what "normal" was for each column, and the thresholds taken from it
    )
    # Served vs offline features on the window's traffic (``monitor.served_features_check``): the report of
    # ``monitoring.served_check`` plus ``max_mismatch_rate``, ``alarm`` and ``summary``. A data-quality
    # finding, never a retrain reason. None: not part of this check.
    served_features: dict[str, Any] | None = None

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def unjudged_columns(self) -> list[str]:
        return [c.column for c in self.columns if not c.judged]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_columns"] = self.drifted_columns
        return out

    def summary(self) -> str:
        """One line for logs, history and the asset event."""
        served = f"; {self.served_features['summary']}" if self.served_features else ""
        return self._drift_summary() + served

    def _drift_summary(self) -> str:
        if self.status in (INSUFFICIENT, INVALID):
            return f"{self.status}: {'; '.join(self.notes)}"
        judged_count = len(self.columns) - len(self.unjudged_columns)
        parts = [
            f"{len(self.drifted_columns)}/{judged_count} features drifted "
            f"({self.drifted_share:.1%}{', dataset drift' if self.dataset_drift else ''})"
        ]
        if self.drifted_columns:
            parts.append("top: " + ", ".join(_top(self.columns)))
        if self.unjudged_columns:
            parts.append(f"{len(self.unjudged_columns)} not judged (trend through training)")
        if self.prediction is not None and self.prediction.score is not None:
            parts.append(
                f"prediction {self.prediction.method} {self.prediction.score:.3f}"
                f"{'>=' if self.prediction_drift else '<'}{self.prediction.threshold:g}"
                f"{' DRIFT' if self.prediction_drift else ''}"
            )
        if self.concept is not None:
            parts.append(f"concept: {self.concept.note}")
        if self.quality:
            parts.append(f"{len(self.quality)} data-quality issue(s)")
        return f"{self.status}: " + "; ".join(parts)


def _top(columns: Sequence[ColumnDrift], n: int = 3) -> list[str]:
    drifted = sorted((c for c in columns if c.drifted), key=lambda c: -(c.score or 0) / c.threshold)
    return [f"{c.column} {c.method} {c.score:.3f}>={c.threshold}" for c in drifted[:n]]


# --- data quality -----------------------------------------------------------------------------------


def quality_issues(
    reference: Reference, window: pd.DataFrame, columns: Sequence[str], config: DriftConfig
) -> list[QualityIssue]:
    """Missing-value growth, values outside the reference range, categories the model never saw."""
    q = config.quality
    issues: list[QualityIssue] = []
    categorical = set(reference.categorical)
    for column in columns:
        if column not in window.columns:
            issues.append(QualityIssue(column, "absent", 1.0, 0.0))
            continue
        ref, cur = reference.frame[column], window[column]
        missing = float(cur.isna().mean()) - float(ref.isna().mean())
        if missing > q.max_missing_share:
            issues.append(QualityIssue(column, "missing_share", round(missing, 6), q.max_missing_share))
        present = cur.dropna()
        if present.empty:
            continue
        if column in categorical:
            share = float((~present.isin(set(ref.dropna().unique()))).mean())
            if share > q.max_out_of_range_share:
                issues.append(
                    QualityIssue(column, "unseen_categories", round(share, 6), q.max_out_of_range_share)
                )
            continue
        values = pd.to_numeric(present, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        ref_values = pd.to_numeric(ref, errors="coerce").dropna()
        if ref_values.empty:
            continue
        low, high = float(ref_values.min()), float(ref_values.max())
        margin = (high - low) * q.range_margin
        outside = float(np.mean((values < low - margin) | (values > high + margin) | ~np.isfinite(values)))
        if outside > q.max_out_of_range_share:
            issues.append(
                QualityIssue(column, "out_of_range_share", round(outside, 6), q.max_out_of_range_share)
            )
    return issues


# --- the verdict ------------------------------------------------------------------------------------


def column_plan(reference: Reference, config: DriftConfig) -> dict[str, ColumnPlan]:
    """The monitored columns and their pinned methods."""
    categorical = set(reference.categorical)
    return {
        c: ColumnPlan(config.methods.for_column(c, c in categorical), c in categorical)
        for c in config.monitored(reference.inputs)
    }


def on_drift_scale(frame: pd.DataFrame, config: DriftConfig) -> pd.DataFrame:
    """``frame`` with the ``features.log_scale`` columns as ``log1p(max(x, 0))`` (others untouched, no copy
    when there is nothing to change): the scale drift is measured on."""
    columns = [c for c in config.features.log_scale if c in frame.columns]
    if not columns:
        return frame
    scaled = {c: np.log1p(pd.to_numeric(frame[c], errors="coerce").clip(lower=0)) for c in columns}
    return frame.assign(**scaled)


def decide(
    reference: Reference,
    window: pd.DataFrame,
    config: DriftConfig,
    *,
    window_start: datetime,
    window_end: datetime,
    now: datetime,
    concept: ConceptCheck | None = None,
    champion_scores: pd.Series | None = None,
    decision_threshold: float = 0.5,
    workers: int = 1,
    task: str = "binary_classification",
) -> DriftVerdict:
    """The verdict for ``window`` (model inputs as columns, one row per prediction).

    ``champion_scores``: the champion version's scores in the window (prediction drift); default the
    window's ``score`` column. ``concept``: the concept check of the same moment (``concept.concept_check``).
    ``decision_threshold``: serving's, the cutoff of ``flagged_share`` unless the policy pins one.
    ``task``: a regressor's predictions are quantities with no alert rate, so ``flagged_share`` (the
    share of scores above a probability cutoff) cannot judge them: its prediction drift is measured by the
    numeric columns' method instead, and the verdict's notes say so.
    Never raises for bad data: an empty window or one without the monitored columns gives status
    ``insufficient_data`` / ``invalid_input`` with a note that says why."""
    base: dict[str, Any] = {
        "checked_at": now.isoformat(),
        "window_start": window_start.isoformat(),
        "window_end": window_end.isoformat(),
        "rows": len(window),
        "reference_version": reference.version,
    }
    plan = column_plan(reference, config)
    concept_drift = bool(concept and concept.drifted)
    concept_reasons = (
        ("concept_drift",) if concept_drift and "concept_drift" in config.retrain.triggers else ()
    )
    if not plan:
        return DriftVerdict(
            status=INVALID,
            **base,
            notes=("no column to monitor: features.monitor and features.exclude in drift.yaml leave none",),
        )
    issues = quality_issues(reference, window, list(plan), config)
    absent = [i.column for i in issues if i.check == "absent"]
    if len(window) < config.window.min_rows:
        # Too little traffic to judge distributions; labelled quality of past windows still counts.
        return DriftVerdict(
            status=DRIFT if concept_reasons else INSUFFICIENT,
            **base,
            concept=concept,
            concept_drift=concept_drift,
            reasons=concept_reasons,
            notes=(
                f"{len(window)} predictions in the window, fewer than window.min_rows="
                f"{config.window.min_rows}: distributions not compared",
            ),
        )
    present = {c: p for c, p in plan.items() if c not in absent}
    if not present:
        return DriftVerdict(
            status=INVALID,
            **base,
            quality=tuple(issues),
            concept=concept,
            concept_drift=concept_drift,
            reasons=concept_reasons,
            notes=(
                f"the window has none of the monitored columns {list(plan)}: is the prediction "
                "log from this model's serving?",
            ),
        )
    scores = champion_scores if champion_scores is not None else window.get(SCORE)
    with_score = scores is not None and len(scores) > 0 and SCORE in reference.frame
    prediction_spec = config.prediction
    substituted: tuple[str, ...] = ()
    if task == "regression" and prediction_spec.method == "flagged_share":
        substituted = (
            "prediction: flagged_share (an alert rate) judges a classifier's scores; a regressor's "
            f"predictions are compared by {config.methods.numeric.method}, the numeric columns' method",
        )
        prediction_spec = config.methods.numeric
    elif prediction_spec.method == "flagged_share" and prediction_spec.cutoff is None:
        prediction_spec = prediction_spec.model_copy(update={"cutoff": decision_threshold})
    calibrated_plan = {**present, **({SCORE: ColumnPlan(prediction_spec, False)} if with_score else {})}
    ref_frame = on_drift_scale(reference.frame, config)
    calibration = calibrate(
        ref_frame, calibrated_plan, config.calibration, window_rows=len(window), always_judged=(SCORE,)
    )
    calibrated_plan = calibration.plan(calibrated_plan)
    columns = [
        judged(c, calibration)
        for c in compare(
            ref_frame,
            on_drift_scale(window, config),
            {c: calibrated_plan[c] for c in present},
            workers=workers,
        )
    ]
    compared = [c for c in columns if c.score is not None and c.judged]
    share = sum(c.drifted for c in compared) / len(compared) if compared else 0.0
    dataset_drift = bool(compared) and share >= config.dataset_drift_share
    prediction = None
    if with_score:
        prediction = column_drift(
            SCORE, reference.frame[SCORE], scores, calibrated_plan[SCORE].spec, categorical=False
        )
    prediction_drift = bool(prediction and prediction.drifted)
    found = {
        "dataset_drift": dataset_drift,
        "prediction_drift": prediction_drift,
        "concept_drift": concept_drift,
    }
    reasons = tuple(r for r in config.retrain.triggers if found[r])
    notes = substituted + tuple(f"{c.column}: {c.note}" for c in columns if c.note and c.judged)
    if absent:
        notes += (f"absent from the window (not compared): {absent}",)
    return DriftVerdict(
        status=DRIFT if any(found.values()) else OK,
        **base,
        columns=tuple(columns),
        drifted_share=share,
        dataset_drift=dataset_drift,
        prediction=prediction,
        prediction_drift=prediction_drift,
        quality=tuple(issues),
        concept=concept,
        concept_drift=concept_drift,
        reasons=reasons,
        notes=notes,
        calibration=calibration,
    )


# --- the retrain policy -----------------------------------------------------------------------------

REQUESTED, SUPPRESSED = "retrain_requested", "retrain_suppressed"
TRAINING_KINDS = frozenset({"training_started", "trained", "training_failed"})
POLICY_KINDS = frozenset({REQUESTED, *TRAINING_KINDS})


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    suppressed: bool = False  # drift was found but not acted on (recorded as retrain_suppressed)

    def __iter__(self) -> Iterator[bool | str]:  # (bool, reason) unpacking
        return iter((self.retrain, self.reason))


def _at(event: Any) -> datetime:
    return datetime.fromisoformat(event.at)


def should_retrain(
    verdict: DriftVerdict, history: Sequence[Any], now: datetime, training_running: bool, config: DriftConfig
) -> RetrainDecision:
    """Whether ``verdict`` should request a retrain, and why (or why not).

    ``history``: events of kinds ``retrain_requested`` and ``training_started``/``trained``/
    ``training_failed`` (oldest first; ``lineage.history.read(kinds=POLICY_KINDS)``). ``training_running``:
    Airflow has a queued or running ``train_model`` run. In order:

    1. no retrain trigger in the verdict → no (nothing to suppress);
    2. training runs (Airflow says so, or a ``training_started`` younger than ``training_max_age_hours``
       without a later ``trained``/``training_failed``) → suppressed: its model answers this drift;
    3. an earlier request for the same champion version within ``cooldown_hours`` → suppressed (a drift
       storm yields one retrain; a new champion starts without a cooldown);
    4. an earlier request for the same champion version not yet followed by any training event, younger
       than ``training_max_age_hours`` → suppressed as pending (dedupe while the asset event waits);
    5. otherwise → retrain, with the verdict's reasons."""
    if not verdict.reasons:
        return RetrainDecision(False, f"no retrain trigger ({verdict.status})")
    why = ", ".join(verdict.reasons)
    max_age = timedelta(hours=config.retrain.training_max_age_hours)
    events = sorted(history, key=_at)
    # A request answers the drift of the champion it was made for: once another version serves, its
    # cooldown and its pending state no longer hold back the new champion's own drift.
    requests = [e for e in events if e.kind == REQUESTED and (e.version or "") == verdict.reference_version]
    training = [e for e in events if e.kind in TRAINING_KINDS]
    if training_running:
        return RetrainDecision(False, f"{why} found, but a train_model run is queued or running", True)
    if training and training[-1].kind == "training_started" and now - _at(training[-1]) < max_age:
        return RetrainDecision(
            False, f"{why} found, but training started at {training[-1].at} and has not finished", True
        )
    if requests:
        last = requests[-1]
        age = now - _at(last)
        cooldown = timedelta(hours=config.retrain.cooldown_hours)
        if age < cooldown:
            return RetrainDecision(
                False,
                f"{why} found, but a retrain was requested at {last.at} "
                f"({last.reason}); cooldown until {(_at(last) + cooldown).isoformat()}",
                True,
            )
        answered = any(_at(t) >= _at(last) for t in training)
        if not answered and age < max_age:
            return RetrainDecision(
                False, f"{why} found; the retrain requested at {last.at} has not started yet", True
            )
    return RetrainDecision(True, why)
