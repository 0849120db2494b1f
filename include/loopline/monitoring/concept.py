"""Concept drift: has the champion's labelled quality on served traffic fallen below what the gate measured?

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

from loopline.config.drift_policy import Concept
from loopline.config.use_case import UseCase
from loopline.deployment.analysis import LabelledSample, VariantWindow, surely_dropped

JUDGED, NOT_JUDGED = "judged", "not_judged"
CUSTOMER = "customer_id"  # the bootstrap's cluster: positives come in bursts on a few customers


@dataclass(frozen=True)
class Baseline:
    """The champion's labelled holdout rows and scores (the use case's id, ``customer_id``, ``score`` and the
    use case's label) and where they come from."""

    source: str
    frame: pd.DataFrame


@dataclass(frozen=True)
class WindowCount:
    start: str
    end: str
    served: int
    labelled: int
    fraud: int


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
    dropped_at_least: dict[str, float] | None = None
    windows: tuple[WindowCount, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lookback(frontier: datetime, config: Concept) -> tuple[datetime, datetime]:
    """[start, end) of the judged windows: ``judged_windows`` windows ending at the label frontier."""
    return frontier - timedelta(hours=config.window_hours) * config.judged_windows, frontier


def sample(frame: pd.DataFrame, threshold: float, use_case: UseCase) -> LabelledSample:
    """The canary's labelled sample (distinct events, customers for the bootstrap) of labelled rows."""
    label, id_column = use_case.label_column, use_case.id_column
    labelled = frame[frame[label].notna()]
    scores = labelled["score"].to_numpy(dtype="float64")
    window = VariantWindow(
        version="",
        scores=tuple(scores.tolist()),
        transaction_ids=tuple(labelled[id_column].astype(str)),
        decisions=tuple((scores >= threshold).tolist()),
        customer_ids=tuple(labelled[CUSTOMER].fillna("").astype(str)),
    )
    return LabelledSample.join(
        window, dict(zip(labelled[id_column].astype(str), labelled[label].astype(int), strict=True))
    )


def _quality(s: LabelledSample) -> dict[str, Any]:
    pr_auc, recall = s.quality()
    return {
        "labelled": s.size,
        "fraud": s.positives,
        "fraud_customers": s.fraud_customers,
        "pr_auc": None if np.isnan(pr_auc) else round(pr_auc, 4),
        "recall": None if np.isnan(recall) else round(recall, 4),
    }


def concept_check(
    served: pd.DataFrame,
    baseline: Baseline | None,
    frontier: datetime | None,
    now: datetime,
    config: Concept,
    threshold: float,
    use_case: UseCase,
) -> ConceptCheck:
    """Judge the champion's served traffic before ``frontier`` against ``baseline``.

    ``served``: the champion version's predictions (the use case's id, ``customer_id``, ``score``, ``ts``
    as UTC timestamps) with the use case's label where it is known now (NaN otherwise)."""
    label = use_case.label_column
    if frontier is None:
        return ConceptCheck(
            NOT_JUDGED,
            False,
            "not judged: no transaction has a confirmed-genuine label yet, so no "
            "served window has complete labels",
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
        windows.append(
            WindowCount(w_start.isoformat(), w_end.isoformat(), len(part), len(labels), int(labels.sum()))
        )
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
    base["baseline"] = {"source": baseline.source, **_quality(reference)}
    labelled = current.size if current else 0
    positives = current.positives if current else 0
    if current is not None:
        base["current"] = _quality(current)
    if labelled < config.min_labelled_rows or positives < config.min_fraud_rows or positives == labelled:
        return ConceptCheck(
            NOT_JUDGED,
            False,
            f"not judged: waiting for labels: the served windows {start:%Y-%m-%d %H:%M}.."
            f"{end:%Y-%m-%d %H:%M} (before the label frontier, {base['label_delay_hours']:.0f} h ago) "
            f"hold {labelled} labelled rows with {positives} positive ({label!r} = 1); need "
            f"{config.min_labelled_rows} and {config.min_fraud_rows}",
            **base,
        )
    assert current is not None  # labelled == positives == 0 without it, which returned above
    dropped = surely_dropped(reference, current, config.confidence)
    limits = {"pr_auc": config.max_pr_auc_drop, "recall": config.max_recall_drop}
    worse = [k for k in ("pr_auc", "recall") if dropped[k] > limits[k]]
    q, b = base["current"], base["baseline"]
    text = (
        f"PR-AUC {q['pr_auc']} vs {b['pr_auc']} at the gate, recall {q['recall']} vs {b['recall']}, on "
        f"{labelled} labelled ({positives} positive ({label!r} = 1) on {q['fraud_customers']} customers)"
    )
    if worse:
        sure = ", ".join(f"{k} by >= {dropped[k]:.3f} (allowed {limits[k]})" for k in worse)
        note = f"concept drift: {text}; {config.confidence:.1%} sure it dropped {sure}"
    else:
        note = f"within limits: {text}"
    return ConceptCheck(
        JUDGED, bool(worse), note, dropped_at_least={k: round(v, 4) for k, v in dropped.items()}, **base
    )
