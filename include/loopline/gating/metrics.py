"""What the gate measures on the holdout: the policy's quality metrics, fairness per group and latency.

The metric functions themselves live in :mod:`loopline.metrics`; this module applies the gate policy to them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from loopline.gating.policy import GatePolicy
from loopline.metrics import brier, expected_cost, labelled_scores, mae, pr_auc, recall_at_fpr, rmse, roc_auc


def quality_metrics(
    labels: Any, scores: Any, policy: GatePolicy, task: str = "binary_classification"
) -> dict[str, float]:
    """Every quality metric of ``task``: a classifier's with the policy's FPR, operating point and costs; a
    regressor's errors in the label's units (``scores`` are its predictions)."""
    if task == "regression":
        return {"mae": mae(labels, scores), "rmse": rmse(labels, scores)}
    q = policy.quality
    return {
        "roc_auc": roc_auc(labels, scores),
        "pr_auc": pr_auc(labels, scores),
        "recall_at_fpr": recall_at_fpr(labels, scores, q.recall_at_fpr.fpr),
        "brier": brier(labels, scores),
        "expected_cost": expected_cost(
            labels,
            scores,
            policy.threshold(),
            q.expected_cost.missed_positive_cost,
            q.expected_cost.false_alarm_cost,
        ),
    }


# --- fairness ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRates:
    attribute: str
    group: str
    n: int
    positives: int
    negatives: int
    tpr: float | None  # None: no positive rows in the group (or a regressor)
    fpr: float | None
    judged_tpr: bool  # large enough (rows and positive rows) for its TPR to count in the gap
    judged_fpr: bool  # large enough (rows) for its FPR to count in the gap
    mae: float | None = None  # a regressor: the group's MAE in the label's units
    judged_mae: bool = False  # large enough (rows) for its MAE to count in the ratio


@dataclass(frozen=True)
class FairnessTable:
    """A classifier: per-group TPR/FPR at the operating point and, per attribute, the gap max - min over
    judged groups. A regressor (``task``): per-group MAE and, per attribute, the worst judged group's MAE
    over the best's (``mae_ratio``).

    Max - min (rather than each group against the overall rate) bounds the difference any two judged
    groups experience, and does not move when the group mix of the holdout changes."""

    threshold: float | None  # the operating point (None: a regressor has none)
    groups: list[GroupRates] = field(default_factory=list)
    tpr_gap: dict[str, float | None] = field(default_factory=dict)  # None: fewer than two judged groups
    fpr_gap: dict[str, float | None] = field(default_factory=dict)
    mae_ratio: dict[str, float | None] = field(default_factory=dict)
    task: str = "binary_classification"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gap(values: list[float]) -> float | None:
    return float(max(values) - min(values)) if len(values) >= 2 else None


def fairness_table(
    labels: Any,
    scores: Any,
    groups: dict[str, Any],
    threshold: float,
    min_group_size: int,
    min_group_positives: int,
    expected: dict[str, list[str]] | None = None,
) -> FairnessTable:
    """TPR and FPR of ``score >= threshold`` per value of each group attribute in ``groups``. ``expected``:
    the values each attribute has in the labelled history; one absent from these rows is listed with
    0 rows (never judged), so it cannot drop out of the table unnoticed."""
    y, s = labelled_scores(labels, scores)
    flagged = s >= threshold
    rows: list[GroupRates] = []
    tpr_gap: dict[str, float | None] = {}
    fpr_gap: dict[str, float | None] = {}
    for attribute, values in groups.items():
        values = _group_values(values, y.size, attribute)
        tprs: list[float] = []
        fprs: list[float] = []
        for group in sorted(set(values.tolist()) | set((expected or {}).get(attribute, []))):
            mask = values == group
            pos = int(np.sum(y[mask] == 1))
            neg = int(np.sum(y[mask] == 0))
            tpr = float(np.sum(flagged[mask] & (y[mask] == 1)) / pos) if pos else None
            fpr = float(np.sum(flagged[mask] & (y[mask] == 0)) / neg) if neg else None
            big = int(mask.sum()) >= min_group_size
            judged_tpr = big and pos >= min_group_positives and tpr is not None
            judged_fpr = big and fpr is not None
            rows.append(
                GroupRates(attribute, group, int(mask.sum()), pos, neg, tpr, fpr, judged_tpr, judged_fpr)
            )
            if judged_tpr and tpr is not None:
                tprs.append(tpr)
            if judged_fpr and fpr is not None:
                fprs.append(fpr)
        tpr_gap[attribute] = _gap(tprs)
        fpr_gap[attribute] = _gap(fprs)
    return FairnessTable(threshold=threshold, groups=rows, tpr_gap=tpr_gap, fpr_gap=fpr_gap)


def wilson_interval(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a rate ``successes / trials`` at two-sided ``confidence``: unlike the
    normal approximation it stays inside [0, 1] and does not collapse at 0 or 1 (10 of 10 caught is not a
    certain 100 %)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + confidence) / 2)
    p, n = successes / trials, trials
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def gap_interval(
    table: FairnessTable, attribute: str, rate: str, confidence: float
) -> tuple[float, float] | None:
    """The range of ``attribute``'s TPR or FPR gap (``rate``) that the judged groups' sizes cannot rule out.

    Each pair of judged groups gets Newcombe's interval for the difference of two rates (the hybrid score
    interval built from both groups' Wilson intervals at ``confidence``). Low: the largest lower bound of
    any pair (0 when every pair may be equal); high: the largest upper bound. None with fewer than two
    judged groups (no gap)."""
    field_of = {"TPR": ("tpr", "positives", "judged_tpr"), "FPR": ("fpr", "negatives", "judged_fpr")}
    value, count, judged = field_of[rate]
    rates = [
        (
            getattr(g, value),
            *wilson_interval(round(getattr(g, value) * getattr(g, count)), getattr(g, count), confidence),
        )
        for g in table.groups
        if g.attribute == attribute
        and getattr(g, judged)
        and getattr(g, value) is not None
        and getattr(g, count)
    ]
    if len(rates) < 2:
        return None
    lows, highs = [], []
    for i, (p1, low1, high1) in enumerate(rates):
        for j, (p2, low2, high2) in enumerate(rates):
            if i != j:
                difference = p1 - p2
                lows.append(difference - math.hypot(p1 - low1, high2 - p2))
                highs.append(difference + math.hypot(high1 - p1, p2 - low2))
    return max(0.0, max(lows)), max(highs)


def gap_increase_intervals(
    labels: Any,
    candidate: Any,
    champion: Any,
    groups: dict[str, Any],
    table: FairnessTable,
    confidence: float,
    rounds: int = 2000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """How much the candidate's TPR and FPR gaps exceed the champion's on the same rows, as an interval at
    ``confidence`` (key ``"TPR:<attribute>"`` / ``"FPR:<attribute>"``): a paired bootstrap that redraws each
    judged group's rows and both models' decisions on them together. One fraud more or less caught in a band
    of a dozen moves its TPR by 0.08: an increase of two such frauds is not the candidate being less fair."""
    if table.threshold is None:  # a regressor: no operating point, no rates
        return {}
    y, cand = labelled_scores(labels, candidate)
    _, champ = labelled_scores(labels, champion)
    cand_flag, champ_flag = cand >= table.threshold, champ >= table.threshold
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[float, float]] = {}
    for attribute, values in groups.items():
        values = _group_values(values, y.size, attribute)
        for rate, positive, judged in (("TPR", 1, "judged_tpr"), ("FPR", 0, "judged_fpr")):
            draws = []
            for g in table.groups:
                if g.attribute != attribute or not getattr(g, judged):
                    continue
                rows = (values == g.group) & (y == positive)
                a, b = cand_flag[rows], champ_flag[rows]
                # The four outcomes of a row under the two models, redrawn together: a paired resample.
                cells = np.array(
                    [np.sum(a & b), np.sum(a & ~b), np.sum(~a & b), np.sum(~a & ~b)], dtype=float
                )
                if cells.sum() == 0:
                    continue
                counts = rng.multinomial(int(cells.sum()), cells / cells.sum(), size=rounds)
                n = counts.sum(axis=1)
                draws.append(((counts[:, 0] + counts[:, 1]) / n, (counts[:, 0] + counts[:, 2]) / n))
            if len(draws) < 2:
                continue
            cand_rates = np.stack([d[0] for d in draws])
            champ_rates = np.stack([d[1] for d in draws])
            increase = (cand_rates.max(axis=0) - cand_rates.min(axis=0)) - (
                champ_rates.max(axis=0) - champ_rates.min(axis=0)
            )
            tail = (1 - confidence) / 2
            low, high = np.quantile(increase, [tail, 1 - tail])
            out[f"{rate}:{attribute}"] = (float(low), float(high))
    return out


def _group_values(values: Any, size: int, attribute: str) -> np.ndarray:
    values = np.asarray(values, dtype=object).ravel()
    if values.size != size:
        raise ValueError(f"group column {attribute!r} has {values.size} values for {size} rows")
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in values]
    return np.where(missing, "<missing>", values).astype(str)


def error_table(
    labels: Any,
    predictions: Any,
    groups: dict[str, Any],
    min_group_size: int,
    expected: dict[str, list[str]] | None = None,
) -> FairnessTable:
    """A regressor's fairness: the MAE of ``predictions`` per value of each group attribute, judged with at
    least ``min_group_size`` rows, and per attribute the worst judged group's MAE over the best's (None:
    fewer than two judged groups; inf: the best group's MAE is 0 and another's is not). ``expected``: as
    in ``fairness_table``."""
    y = np.asarray(labels, dtype="float64").ravel()
    p = np.asarray(predictions, dtype="float64").ravel()
    keep = ~(np.isnan(y) | np.isnan(p))
    errors = np.abs(p - y)
    rows: list[GroupRates] = []
    ratios: dict[str, float | None] = {}
    for attribute, raw in groups.items():
        values = _group_values(raw, y.size, attribute)
        maes: list[float] = []
        for group in sorted(set(values[keep].tolist()) | set((expected or {}).get(attribute, []))):
            mask = (values == group) & keep
            n = int(mask.sum())
            group_mae = float(errors[mask].mean()) if n else None
            judged = n >= min_group_size and group_mae is not None
            rows.append(GroupRates(attribute, group, n, 0, 0, None, None, False, False, group_mae, judged))
            if judged and group_mae is not None:
                maes.append(group_mae)
        if len(maes) < 2:
            ratios[attribute] = None
        elif min(maes) > 0:
            ratios[attribute] = max(maes) / min(maes)
        else:
            ratios[attribute] = math.inf if max(maes) > 0 else 1.0
    return FairnessTable(threshold=None, groups=rows, mae_ratio=ratios, task="regression")


# --- latency ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: int = 0
    error: str = ""  # why latency could not be measured (load or predict failure)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency_stats(durations_ms: list[float], errors: int = 0) -> LatencyStats:
    """Percentiles of single-request durations (linear interpolation between ranks)."""
    if not durations_ms:
        return LatencyStats(0, math.nan, math.nan, math.nan, math.nan, errors, "no request completed")
    d = np.asarray(durations_ms, dtype=float)
    p50, p95, p99 = np.percentile(d, [50, 95, 99])
    return LatencyStats(int(d.size), float(p50), float(p95), float(p99), float(d.max()), errors)
