"""Model quality metrics, one home for every stage (training, gate, canary, concept drift): numpy only.

Ranking metrics of a binary classifier's scores (PR-AUC, ROC-AUC, recall at a false-positive rate, Brier) and
the error metrics of a regressor (MAE, RMSE). Ties are handled like scikit-learn: all rows sharing a score
move across a threshold together. Each function returns NaN where the metric is undefined (one class only,
no rows) rather than a number that would read as a result.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Which way is better, per metric name: the gate and the canary compare a challenger against the champion.
HIGHER_IS_BETTER = {
    "roc_auc": True,
    "pr_auc": True,
    "recall_at_fpr": True,
    "brier": False,
    "expected_cost": False,
    "mae": False,
    "rmse": False,
}


def labelled_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) as float arrays of one shape, with every score present and every label 0 or 1."""
    y, s = _paired(labels, scores, "scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1 (drop unlabelled rows first)")
    return y, s


def _paired(truth: Any, predicted: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(truth, dtype=float).ravel()
    p = np.asarray(predicted, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} {what}")
    if np.isnan(p).any():
        raise ValueError(f"{int(np.isnan(p).sum())} {what} are NaN: every row must be scored")
    return y, p


def tie_ends(sorted_scores: np.ndarray) -> np.ndarray:
    """Index of the last row of each run of equal scores in ``sorted_scores`` (sorted highest first)."""
    ends: np.ndarray = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    return ends


def _curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct score, highest score first."""
    order = np.argsort(-s, kind="mergesort")
    ends = tie_ends(s[order])
    tps = np.cumsum(y[order])[ends]
    return tps, (ends + 1) - tps


def _two_classes(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < y.sum() < y.size


def average_precision_of_curve(tps: np.ndarray, fps: np.ndarray) -> float:
    """Average precision (scikit-learn's step-wise PR-AUC) from cumulative true and false positives at each
    distinct score, highest first; the counts may be weighted (a bootstrap). NaN without both classes."""
    if not tps.size or tps[-1] <= 0 or fps[-1] <= 0:
        return math.nan
    # A step with no weight (tps + fps == 0) adds no recall: its precision does not matter.
    precision = tps / np.maximum(tps + fps, 1e-12)
    return float(np.sum(np.diff(np.r_[0.0, tps / tps[-1]]) * precision))


def pr_auc(labels: Any, scores: Any) -> float:
    """Average precision (step-wise area under precision/recall, as scikit-learn); NaN with one class only."""
    y, s = labelled_scores(labels, scores)
    return average_precision_of_curve(*_curve(y, s)) if _two_classes(y) else math.nan


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (trapezoids over distinct scores); NaN with one class only."""
    y, s = labelled_scores(labels, scores)
    if not _two_classes(y):
        return math.nan
    tps, fps = _curve(y, s)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def recall_at_fpr(labels: Any, scores: Any, fpr: float) -> float:
    """The highest recall a score threshold reaches while the false-positive rate stays <= ``fpr``."""
    y, s = labelled_scores(labels, scores)
    if not _two_classes(y):
        return math.nan
    tps, fps = _curve(y, s)
    ok = fps / fps[-1] <= fpr + 1e-12
    return float(tps[ok].max() / tps[-1]) if ok.any() else 0.0


def brier(labels: Any, scores: Any) -> float:
    """Mean squared error of the score as a probability of the positive class (lower is better)."""
    y, s = labelled_scores(labels, scores)
    return float(np.mean((s - y) ** 2)) if y.size else math.nan


def expected_cost(
    labels: Any, scores: Any, threshold: float, missed_positive_cost: float, false_alarm_cost: float
) -> float:
    """Cost per row of flagging ``score >= threshold``: missed positives and false alarms priced."""
    y, s = labelled_scores(labels, scores)
    if not y.size:
        return math.nan
    flagged = s >= threshold
    missed = np.sum((y == 1) & ~flagged)
    false_alarms = np.sum((y == 0) & flagged)
    return float((missed * missed_positive_cost + false_alarms * false_alarm_cost) / y.size)


def mae(truth: Any, predicted: Any) -> float:
    """Mean absolute error of a regressor (lower is better); NaN without rows."""
    y, p = _paired(truth, predicted, "predictions")
    return float(np.mean(np.abs(p - y))) if y.size else math.nan


def rmse(truth: Any, predicted: Any) -> float:
    """Root mean squared error of a regressor (lower is better; weighs large misses more than MAE)."""
    y, p = _paired(truth, predicted, "predictions")
    return float(np.sqrt(np.mean((p - y) ** 2))) if y.size else math.nan
