"""The canary's pure decision: is the challenger at least as good as the champion on the same live window?

``analyse(policy, champion, challenger, labels)`` returns a ``CanaryVerdict`` with one result per check:
errors, p95 latency, score-distribution shift (PSI) and labelled quality. No I/O here: the windows are
read by ``loopline.deployment.windows`` and the decision is acted on by ``loopline.deployment.actions``.

A check is ``pass``, ``fail``, ``insufficient`` (below its minimum sample: blocks promotion, so too
little traffic never promotes) or ``skipped`` (labelled quality before labels arrive, when not required).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from loopline.deployment.policy import CanaryPolicy

Status = Literal["pass", "fail", "insufficient", "skipped"]


@dataclass(frozen=True)
class VariantWindow:
    """One variant's live predictions in the analysis window.

    ``errors`` counts its transactions that failed to score (from the service's metrics; the prediction
    log holds answered ones only); None when they could not be read, which blocks promotion.
    """

    version: str
    scores: tuple[float, ...] = ()
    latencies_ms: tuple[float, ...] = ()
    transaction_ids: tuple[str, ...] = ()
    decisions: tuple[bool, ...] = ()
    errors: int | None = 0
    customers: int | None = None  # distinct customers in the window (None: unknown)

    @property
    def answered(self) -> int:
        return len(self.scores)

    @property
    def total(self) -> int:
        return self.answered + (self.errors or 0)

    @classmethod
    def from_frame(cls, frame: Any, version: str, errors: int | None) -> VariantWindow:
        """From ``PredictionLog.read`` rows of one variant and version."""
        return cls(version=str(version), scores=tuple(float(s) for s in frame["score"]),
                   latencies_ms=tuple(float(v) for v in frame["latency_ms"]),
                   transaction_ids=tuple(str(t) for t in frame["transaction_id"]),
                   decisions=tuple(bool(d) for d in frame["decision"]), errors=errors,
                   customers=int(frame["customer_id"].nunique()) if "customer_id" in frame else None)


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    reason: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        return self.status in ("fail", "insufficient")


@dataclass(frozen=True)
class CanaryVerdict:
    """The analysis of one step: passed only when no check failed or lacked its minimum sample."""

    challenger_version: str
    champion_version: str
    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return not any(c.blocks for c in self.checks)

    @property
    def not_enough_traffic(self) -> bool:
        """Nothing failed, but some check lacked its minimum sample."""
        return not any(c.status == "fail" for c in self.checks) and any(c.status == "insufficient" for c in self.checks)

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.reason}" for c in self.checks if c.blocks]

    @property
    def why(self) -> str:
        if self.passed:
            return "all checks passed: " + "; ".join(f"{c.name}: {c.reason}" for c in self.checks)
        prefix = "not enough traffic to judge: " if self.not_enough_traffic else ""
        return prefix + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "not_enough_traffic": self.not_enough_traffic, "why": self.why,
                "challenger_version": self.challenger_version, "champion_version": self.champion_version,
                "checks": [asdict(c) for c in self.checks]}


def _short(name: str, have: Mapping[str, int], need: int) -> CheckResult | None:
    lacking = {k: v for k, v in have.items() if v < need}
    if not lacking:
        return None
    said = ", ".join(f"{k} {v}" for k, v in lacking.items())
    return CheckResult(name, "insufficient", f"{said} of the {need} requests needed", dict(have))


def check_errors(policy: CanaryPolicy, champion: VariantWindow, challenger: VariantWindow) -> CheckResult:
    """Challenger error rate <= max(max_rate, champion's rate + max_increase): a challenger may be as bad as
    a (bad) champion plus a little, never worse than the absolute limit otherwise."""
    rule = policy.analysis.errors
    if champion.errors is None or challenger.errors is None:
        return CheckResult("errors", "insufficient", "error counts unavailable (the service's /metrics could "
                                                      "not be read): cannot judge errors")
    short = _short("errors", {"champion": champion.total, "challenger": challenger.total}, rule.min_requests)
    if short:
        return short
    rates = {"champion": champion.errors / champion.total, "challenger": challenger.errors / challenger.total}
    limit = max(rule.max_rate, rates["champion"] + rule.max_increase)
    values = {**{f"{k}_rate": v for k, v in rates.items()}, "limit": limit,
              "challenger_errors": challenger.errors, "challenger_total": challenger.total}
    text = f"challenger {rates['challenger']:.2%} vs champion {rates['champion']:.2%} (limit {limit:.2%})"
    return CheckResult("errors", "pass" if rates["challenger"] <= limit else "fail", text, values)


def check_latency(policy: CanaryPolicy, champion: VariantWindow, challenger: VariantWindow) -> CheckResult:
    """Challenger p95 <= min(max_p95_ms, ratio x champion p95 + slack)."""
    rule = policy.analysis.latency
    short = _short("latency", {"champion": champion.answered, "challenger": challenger.answered}, rule.min_requests)
    if short:
        return short
    p95 = {k: float(np.percentile(w.latencies_ms, 95)) for k, w in (("champion", champion), ("challenger", challenger))}
    limit = min(rule.max_p95_ms, rule.max_p95_ratio * p95["champion"] + rule.slack_ms)
    text = f"p95 challenger {p95['challenger']:.1f} ms vs champion {p95['champion']:.1f} ms (limit {limit:.1f} ms)"
    return CheckResult("latency", "pass" if p95["challenger"] <= limit else "fail", text,
                       {"champion_p95_ms": p95["champion"], "challenger_p95_ms": p95["challenger"], "limit_ms": limit})


def psi(expected: Sequence[float], actual: Sequence[float], bins: int = 10) -> float:
    """Population stability index of ``actual`` against ``expected``: bins are ``expected``'s quantiles
    (equal-width on [0, 1] when those collapse, e.g. a near-constant score), counts smoothed by 0.5."""
    reference = np.asarray(expected, dtype="float64")
    observed = np.asarray(actual, dtype="float64")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        edges = np.linspace(0, 1, bins + 1)
    inner = edges[1:-1]  # the outer bins are open: scores outside the reference's range still count
    ref_counts = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=len(inner) + 1)
    obs_counts = np.bincount(np.searchsorted(inner, observed, side="right"), minlength=len(inner) + 1)
    p = (ref_counts + 0.5) / (ref_counts.sum() + 0.5 * len(ref_counts))
    q = (obs_counts + 0.5) / (obs_counts.sum() + 0.5 * len(obs_counts))
    return float(np.sum((q - p) * np.log(q / p)))


def check_score_shift(policy: CanaryPolicy, champion: VariantWindow, challenger: VariantWindow,
                      final: bool = True) -> CheckResult:
    """PSI of the challenger's scores against the champion's. Too few distinct customers: not judged at an
    intermediate step, insufficient (blocking) at the final one — a model is never promoted unjudged."""
    rule = policy.analysis.score_shift
    short = _short("score_shift", {"champion": champion.answered, "challenger": challenger.answered},
                   rule.min_requests)
    if short:
        return short
    few = {k: w.customers for k, w in (("champion", champion), ("challenger", challenger))
           if w.customers is not None and w.customers < rule.min_customers}
    if few:
        # Routing is sticky per customer: a handful of customers make a lumpy distribution whatever the
        # model. Not judged at an early step (larger steps have the customers); at the last, blocking.
        return CheckResult("score_shift", "insufficient" if final else "skipped",
                           f"{few} distinct customers, fewer than the {rule.min_customers} needed",
                           {"customers": few})
    value = psi(champion.scores, challenger.scores, rule.bins)
    status: Status = "pass" if value <= rule.max_psi else "fail"
    return CheckResult("score_shift", status, f"PSI {value:.3f} (limit {rule.max_psi})",
                       {"psi": value, "limit": rule.max_psi})


def average_precision(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the precision-recall curve as the mean precision at each positive (sklearn's AP)."""
    y = np.asarray(labels, dtype="int64")
    order = np.argsort(-np.asarray(scores, dtype="float64"), kind="mergesort")
    hits = y[order]
    positives = hits.sum()
    if positives == 0:
        return math.nan
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits == 1].sum() / positives)


def _labelled(window: VariantWindow, labels: Mapping[str, int]) -> tuple[list[int], list[float], list[bool]]:
    """(label, score, decision) per distinct labelled transaction: a transaction scored again (a retry,
    a replay) counts once, with its latest score, so repeats cannot pass for a large labelled sample."""
    latest: dict[str, tuple[int, float, bool]] = {}
    for tx, score, decision in zip(window.transaction_ids, window.scores, window.decisions, strict=False):
        label = labels.get(tx)
        if label is not None:
            latest[tx] = (int(label), score, decision)
    return [v[0] for v in latest.values()], [v[1] for v in latest.values()], [v[2] for v in latest.values()]


def check_labelled(policy: CanaryPolicy, champion: VariantWindow, challenger: VariantWindow,
                   labels: Mapping[str, int] | None) -> CheckResult:
    """PR-AUC and recall of the challenger not worse than the champion's by more than the policy allows,
    on the transactions of this window whose labels have arrived."""
    rule = policy.analysis.labelled
    waiting: Status = "insufficient" if rule.required else "skipped"
    joined = {k: _labelled(w, labels or {}) for k, w in (("champion", champion), ("challenger", challenger))}
    counts = {k: len(y) for k, (y, _, _) in joined.items()}
    positives = {k: sum(y) for k, (y, _, _) in joined.items()}
    if any(n < rule.min_labelled for n in counts.values()) or any(p < rule.min_positives for p in positives.values()):
        return CheckResult("labelled", waiting,
                           f"waiting for labels: labelled {counts}, positives {positives} "
                           f"(need {rule.min_labelled} and {rule.min_positives} per variant)",
                           {"labelled": counts, "positives": positives})
    ap = {k: average_precision(y, s) for k, (y, s, _) in joined.items()}
    recall = {k: sum(1 for yi, di in zip(y, d, strict=True) if yi and di) / max(1, sum(y))
              for k, (y, _, d) in joined.items()}
    worse = []
    if ap["challenger"] < ap["champion"] - rule.max_pr_auc_drop:
        worse.append("PR-AUC")
    if recall["challenger"] < recall["champion"] - rule.max_recall_drop:
        worse.append("recall")
    text = (f"PR-AUC challenger {ap['challenger']:.3f} vs champion {ap['champion']:.3f}, recall "
            f"{recall['challenger']:.3f} vs {recall['champion']:.3f} on {counts} labelled")
    if worse:
        text = f"{' and '.join(worse)} worse than allowed: {text}"
    return CheckResult("labelled", "fail" if worse else "pass", text,
                       {"pr_auc": ap, "recall": recall, "labelled": counts, "positives": positives})


def analyse(policy: CanaryPolicy, champion: VariantWindow, challenger: VariantWindow,
            labels: Mapping[str, int] | None = None, *, final: bool = True) -> CanaryVerdict:
    """Compare the challenger with the champion on one live window (``labels``: transaction id → 0/1);
    ``final``: the last step before promotion (nothing may stay unjudged there but labelled quality)."""
    checks = (check_errors(policy, champion, challenger), check_latency(policy, champion, challenger),
              check_score_shift(policy, champion, challenger, final),
              check_labelled(policy, champion, challenger, labels))
    return CanaryVerdict(challenger.version, champion.version, checks)
