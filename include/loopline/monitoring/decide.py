"""The drift verdict and the retrain policy: pure functions over frames and history events (no I/O).

``decide`` turns the champion's reference sample and a window of serving traffic into a ``DriftVerdict``:
data drift per feature (the pinned methods of ``drift.yaml``, computed by ``fast_drift``), prediction drift
(the champion's scores), data quality (missing values, values outside the reference range, unseen
categories) and concept drift (labelled quality of recent windows vs the reference's validation rows).

``should_retrain`` decides whether that verdict becomes a retrain request: never while training runs,
never twice within the cooldown, never while an earlier request is still waiting for its training run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from loopline.monitoring.config import DriftConfig, MethodSpec
from loopline.monitoring.fast_drift import ColumnDrift, ColumnPlan, column_drift, compare
from loopline.monitoring.reference import LABEL, SCORE, Reference

OK, DRIFT, INSUFFICIENT, INVALID = "ok", "drift", "insufficient_data", "invalid_input"


@dataclass(frozen=True)
class QualityIssue:
    column: str
    check: str  # absent | missing_share | out_of_range_share | unseen_categories
    value: float
    limit: float


@dataclass(frozen=True)
class LabelledWindow:
    """One past window's predictions that have labels by now (``score`` and ``is_fraud`` columns)."""

    start: datetime
    end: datetime
    frame: pd.DataFrame


@dataclass(frozen=True)
class WindowQuality:
    start: str
    end: str
    labelled_rows: int
    fraud_rows: int
    pr_auc: float | None
    recall: float | None
    evaluated: bool
    drifted: bool
    note: str = ""


@dataclass(frozen=True)
class ConceptCheck:
    reference_pr_auc: float | None
    reference_recall: float | None
    windows: tuple[WindowQuality, ...]
    drifted: bool
    note: str = ""


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

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_columns"] = self.drifted_columns
        return out

    def summary(self) -> str:
        """One line for logs, history and the asset event."""
        if self.status in (INSUFFICIENT, INVALID):
            return f"{self.status}: {'; '.join(self.notes)}"
        parts = [f"{len(self.drifted_columns)}/{len(self.columns)} features drifted "
                 f"({self.drifted_share:.0%}{', dataset drift' if self.dataset_drift else ''})"]
        if self.drifted_columns:
            parts.append("top: " + ", ".join(_top(self.columns)))
        if self.prediction is not None and self.prediction.score is not None:
            parts.append(f"prediction {self.prediction.method} {self.prediction.score:.3f}"
                         f"{' DRIFT' if self.prediction_drift else ''}")
        if self.concept is not None:
            parts.append("concept drift" if self.concept_drift else f"concept: {self.concept.note or 'ok'}")
        if self.quality:
            parts.append(f"{len(self.quality)} data-quality issue(s)")
        return f"{self.status}: " + "; ".join(parts)


def _top(columns: Sequence[ColumnDrift], n: int = 3) -> list[str]:
    drifted = sorted((c for c in columns if c.drifted), key=lambda c: -(c.score or 0) / c.threshold)
    return [f"{c.column} {c.method} {c.score:.3f}>={c.threshold}" for c in drifted[:n]]


# --- data quality -----------------------------------------------------------------------------------


def quality_issues(reference: Reference, window: pd.DataFrame, columns: Sequence[str],
                   config: DriftConfig) -> list[QualityIssue]:
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
                issues.append(QualityIssue(column, "unseen_categories", round(share, 6), q.max_out_of_range_share))
            continue
        values = pd.to_numeric(present, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        ref_values = pd.to_numeric(ref, errors="coerce").dropna()
        if ref_values.empty:
            continue
        low, high = float(ref_values.min()), float(ref_values.max())
        margin = (high - low) * q.range_margin
        outside = float(np.mean((values < low - margin) | (values > high + margin) | ~np.isfinite(values)))
        if outside > q.max_out_of_range_share:
            issues.append(QualityIssue(column, "out_of_range_share", round(outside, 6), q.max_out_of_range_share))
    return issues


# --- concept drift ----------------------------------------------------------------------------------


def _quality(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float | None, float | None]:
    """(PR-AUC as average precision, recall at ``threshold``); None where one class is missing."""
    from sklearn.metrics import average_precision_score

    labels = labels.astype(int)
    positives = int(labels.sum())
    if positives == 0:
        return None, None
    recall = float(((scores >= threshold) & (labels == 1)).sum() / positives)
    if positives == len(labels):
        return None, recall
    return float(average_precision_score(labels, scores)), recall


def concept_check(reference: Reference, windows: Sequence[LabelledWindow], config: DriftConfig) -> ConceptCheck:
    """Labelled quality of each window vs the reference's validation rows.

    A window counts once it has ``min_labelled_rows`` labels and ``min_fraud_rows`` fraud among them;
    labels arrive late, so the caller passes the last ``lookback_windows`` windows every time and a window
    that was too thin yesterday may be judged today."""
    c = config.concept
    val = reference.validation
    ref_pr, ref_recall = (_quality(val[LABEL].to_numpy(), val[SCORE].to_numpy(), c.decision_threshold)
                          if len(val) else (None, None))
    if ref_pr is None or ref_recall is None:
        return ConceptCheck(ref_pr, ref_recall, (), False,
                            note="the reference has no labelled validation rows with fraud: no quality baseline")
    results = []
    for w in windows:
        frame = w.frame[w.frame[LABEL].notna()] if LABEL in w.frame else w.frame.iloc[:0]
        labels = frame[LABEL].to_numpy(dtype="int64") if len(frame) else np.empty(0, dtype="int64")
        fraud = int(labels.sum())
        start, end = w.start.isoformat(), w.end.isoformat()
        if len(frame) < c.min_labelled_rows or fraud < c.min_fraud_rows:
            results.append(WindowQuality(start, end, len(frame), fraud, None, None, False, False,
                                         note=f"waiting for labels: {len(frame)}/{c.min_labelled_rows} labelled, "
                                              f"{fraud}/{c.min_fraud_rows} fraud"))
            continue
        pr_auc, recall = _quality(labels, frame[SCORE].to_numpy(dtype="float64"), c.decision_threshold)
        drops = []
        if pr_auc is not None and ref_pr - pr_auc > c.max_pr_auc_drop:
            drops.append(f"PR-AUC {pr_auc:.3f} vs {ref_pr:.3f}")
        if recall is not None and ref_recall - recall > c.max_recall_drop:
            drops.append(f"recall {recall:.3f} vs {ref_recall:.3f}")
        results.append(WindowQuality(start, end, len(frame), fraud, pr_auc, recall, True, bool(drops),
                                     note="; ".join(drops)))
    evaluated = [r for r in results if r.evaluated]
    drifted = [r for r in evaluated if r.drifted]
    if drifted:
        note = f"{len(drifted)}/{len(evaluated)} labelled windows dropped: " + " | ".join(r.note for r in drifted)
    elif evaluated:
        note = f"{len(evaluated)} labelled window(s) within limits"
    else:
        note = "no window has enough labels yet"
    return ConceptCheck(ref_pr, ref_recall, tuple(results), bool(drifted), note)


# --- the verdict ------------------------------------------------------------------------------------


def column_plan(reference: Reference, config: DriftConfig) -> dict[str, ColumnPlan]:
    """The monitored columns and their pinned methods."""
    categorical = set(reference.categorical)
    return {c: ColumnPlan(config.methods.for_column(c, c in categorical), c in categorical)
            for c in config.monitored(reference.inputs)}


def decide(reference: Reference, window: pd.DataFrame, config: DriftConfig, *, window_start: datetime,
           window_end: datetime, now: datetime, labelled_windows: Sequence[LabelledWindow] = (),
           champion_scores: pd.Series | None = None, workers: int = 1) -> DriftVerdict:
    """The verdict for ``window`` (model inputs as columns, one row per prediction).

    ``champion_scores``: the champion version's scores in the window (prediction drift); default the
    window's ``score`` column. Never raises for bad data: an empty window or one without the monitored
    columns gives status ``insufficient_data`` / ``invalid_input`` with a note that says why."""
    base = {"checked_at": now.isoformat(), "window_start": window_start.isoformat(),
            "window_end": window_end.isoformat(), "rows": len(window), "reference_version": reference.version}
    plan = column_plan(reference, config)
    concept = concept_check(reference, labelled_windows, config) if labelled_windows else None
    concept_drift = bool(concept and concept.drifted)
    concept_reasons = ("concept_drift",) if concept_drift and "concept_drift" in config.retrain.triggers else ()
    if not plan:
        return DriftVerdict(status=INVALID, **base, notes=("no column to monitor: features.monitor and "
                                                           "features.exclude in drift.yaml leave none",))
    issues = quality_issues(reference, window, list(plan), config)
    absent = [i.column for i in issues if i.check == "absent"]
    if len(window) < config.window.min_rows:
        # Too little traffic to judge distributions; labelled quality of past windows still counts.
        return DriftVerdict(status=DRIFT if concept_reasons else INSUFFICIENT, **base, concept=concept,
                            concept_drift=concept_drift, reasons=concept_reasons,
                            notes=(f"{len(window)} predictions in the window, fewer than window.min_rows="
                                   f"{config.window.min_rows}: distributions not compared",))
    present = {c: p for c, p in plan.items() if c not in absent}
    if not present:
        return DriftVerdict(status=INVALID, **base, quality=tuple(issues), concept=concept,
                            concept_drift=concept_drift, reasons=concept_reasons,
                            notes=(f"the window has none of the monitored columns {list(plan)}: is the prediction "
                                   "log from this model's serving?",))
    columns = compare(reference.frame, window, present, workers=workers)
    compared = [c for c in columns if c.score is not None]
    share = sum(c.drifted for c in compared) / len(compared) if compared else 0.0
    dataset_drift = bool(compared) and share >= config.dataset_drift_share
    prediction = None
    scores = champion_scores if champion_scores is not None else window.get(SCORE)
    if scores is not None and len(scores) and SCORE in reference.frame:
        prediction = column_drift(SCORE, reference.frame[SCORE], scores, MethodSpec(
            method=config.prediction.method, threshold=config.prediction.threshold), categorical=False)
    prediction_drift = bool(prediction and prediction.drifted)
    found = {"dataset_drift": dataset_drift, "prediction_drift": prediction_drift, "concept_drift": concept_drift}
    reasons = tuple(r for r in config.retrain.triggers if found[r])
    notes = tuple(f"{c.column}: {c.note}" for c in columns if c.note)
    if absent:
        notes += (f"absent from the window (not compared): {absent}",)
    return DriftVerdict(status=DRIFT if any(found.values()) else OK, **base, columns=tuple(columns),
                        drifted_share=share, dataset_drift=dataset_drift, prediction=prediction,
                        prediction_drift=prediction_drift, quality=tuple(issues), concept=concept,
                        concept_drift=concept_drift, reasons=reasons, notes=notes)


# --- the retrain policy -----------------------------------------------------------------------------

REQUESTED, SUPPRESSED = "retrain_requested", "retrain_suppressed"
TRAINING_KINDS = frozenset({"training_started", "trained", "training_failed"})
POLICY_KINDS = frozenset({REQUESTED, *TRAINING_KINDS})


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    suppressed: bool = False  # drift was found but not acted on (recorded as retrain_suppressed)

    def __iter__(self):  # (bool, reason) unpacking
        return iter((self.retrain, self.reason))


def _at(event: Any) -> datetime:
    return datetime.fromisoformat(event.at)


def should_retrain(verdict: DriftVerdict, history: Sequence[Any], now: datetime, training_running: bool,
                   config: DriftConfig) -> RetrainDecision:
    """Whether ``verdict`` should request a retrain, and why (or why not).

    ``history``: events of kinds ``retrain_requested`` and ``training_started``/``trained``/
    ``training_failed`` (oldest first; ``lineage.history.read(kinds=POLICY_KINDS)``). ``training_running``:
    Airflow has a queued or running ``train_model`` run. In order:

    1. no retrain trigger in the verdict → no (nothing to suppress);
    2. training runs (Airflow says so, or a ``training_started`` younger than ``training_max_age_hours``
       without a later ``trained``/``training_failed``) → suppressed: its model answers this drift;
    3. an earlier request within ``cooldown_hours`` → suppressed (a drift storm yields one retrain);
    4. an earlier request not yet followed by any training event, younger than ``training_max_age_hours``
       → suppressed as pending (dedupe while the asset event waits for the scheduler);
    5. otherwise → retrain, with the verdict's reasons."""
    if not verdict.reasons:
        return RetrainDecision(False, f"no retrain trigger ({verdict.status})")
    why = ", ".join(verdict.reasons)
    max_age = timedelta(hours=config.retrain.training_max_age_hours)
    events = sorted(history, key=_at)
    requests = [e for e in events if e.kind == REQUESTED]
    training = [e for e in events if e.kind in TRAINING_KINDS]
    if training_running:
        return RetrainDecision(False, f"{why} found, but a train_model run is queued or running", True)
    if training and training[-1].kind == "training_started" and now - _at(training[-1]) < max_age:
        return RetrainDecision(False, f"{why} found, but training started at {training[-1].at} "
                                      "and has not finished", True)
    if requests:
        last = requests[-1]
        age = now - _at(last)
        cooldown = timedelta(hours=config.retrain.cooldown_hours)
        if age < cooldown:
            return RetrainDecision(False, f"{why} found, but a retrain was requested at {last.at} "
                                          f"({last.reason}); cooldown until {(_at(last) + cooldown).isoformat()}",
                                   True)
        answered = any(_at(t) >= _at(last) for t in training)
        if not answered and age < max_age:
            return RetrainDecision(False, f"{why} found; the retrain requested at {last.at} has not started "
                                          "yet", True)
    return RetrainDecision(True, why)

