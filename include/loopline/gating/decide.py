"""The gate decision: a pure function from the policy and the measurements to a ``GateVerdict``.

Semantics (also in ``include/config/gate.yaml``): value thresholds (``min``/``max``) always apply;
change thresholds (``max_regression``) apply only when there is a champion with a finite value for the
metric; a check with nothing configured is skipped; with no threshold configured — or none applicable —
nothing passes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from loopline.gating.metrics import FairnessTable, LatencyStats
from loopline.gating.policy import HIGHER_IS_BETTER, GatePolicy

CHECKS = ("quality", "fairness", "latency", "infra")


class InfraOutcome(Protocol):
    passed: bool
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CheckResult:
    """One check: ``passed`` (a skipped check passes), what was measured and why it failed."""

    name: str
    passed: bool
    skipped: bool = False
    applied: int = 0  # thresholds actually evaluated
    details: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    checks: dict[str, CheckResult]
    why: str

    @property
    def reasons(self) -> list[str]:
        """Every failure reason, prefixed with its check."""
        return [f"{name}: {reason}" for name, check in self.checks.items() for reason in check.reasons]

    def checks_passed(self) -> dict[str, bool]:
        return {name: check.passed for name, check in self.checks.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "why": self.why, "reasons": self.reasons,
                "checks": {name: check.to_dict() for name, check in self.checks.items()}}


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}"


def _finite(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def check_quality(policy: GatePolicy, candidate: dict[str, float] | None,
                  champion: dict[str, float] | None, candidate_error: str = "") -> CheckResult:
    """Value thresholds always; change thresholds against the champion when there is one."""
    thresholds = {name: t for name, t in policy.quality.thresholds().items() if t.configured()}
    if not thresholds:
        return CheckResult("quality", passed=True, skipped=True, reasons=[],
                           details={"note": "no quality thresholds configured"})
    if candidate is None:
        why = candidate_error or "the candidate could not be scored"
        return CheckResult("quality", passed=False, applied=len(thresholds), details={"error": why},
                           reasons=[f"the candidate could not be scored on the holdout: {why}"])
    reasons: list[str] = []
    metrics: dict[str, Any] = {}
    applied = 0
    for name, t in thresholds.items():
        higher = HIGHER_IS_BETTER[name]
        value = candidate.get(name, math.nan)
        champ = champion.get(name) if champion else None
        rules: list[dict[str, Any]] = []
        value_rules = [("min", t.min, lambda v, lim: v >= lim, ">="), ("max", t.max, lambda v, lim: v <= lim, "<=")]
        for kind, limit, ok, op in value_rules:
            if limit is None:
                continue
            applied += 1
            passed = _finite(value) and ok(value, limit)
            rules.append({"rule": f"{name} {op} {limit}", "passed": passed})
            if not passed:
                reasons.append(f"{name} {_fmt(value)} is not {op} {kind} {limit}")
        if t.max_regression is not None:
            if champion is None:
                rules.append({"rule": f"max_regression {t.max_regression} vs champion", "passed": None,
                              "note": "no champion: change threshold not applied"})
            elif not _finite(champ):
                rules.append({"rule": f"max_regression {t.max_regression} vs champion", "passed": None,
                              "note": "champion value not computable on this holdout: not applied"})
            else:
                applied += 1
                limit = champ - t.max_regression if higher else champ + t.max_regression
                op = ">=" if higher else "<="
                passed = _finite(value) and (value >= limit if higher else value <= limit)
                rules.append({"rule": f"{name} {op} champion {_fmt(champ)} {'-' if higher else '+'} "
                                      f"{t.max_regression}", "passed": passed})
                if not passed:
                    reasons.append(f"{name} {_fmt(value)} regresses beyond the allowed {t.max_regression} "
                                   f"against the champion's {_fmt(champ)} (limit {_fmt(limit)})")
        metrics[name] = {"candidate": value, "champion": champ, "higher_is_better": higher, "rules": rules}
    return CheckResult("quality", passed=not reasons, applied=applied, reasons=reasons,
                       details={"metrics": metrics, "champion": champion is not None})


def check_fairness(policy: GatePolicy, table: FairnessTable | None) -> CheckResult:
    """Per attribute: the TPR and FPR gaps between judged groups must stay within the policy's bounds."""
    f = policy.fairness
    if not f.configured():
        return CheckResult("fairness", passed=True, skipped=True,
                           details={"note": "no fairness gap configured", **({"table": table.to_dict()} if table else {})})
    if table is None:
        return CheckResult("fairness", passed=False, applied=1, details={},
                           reasons=["no fairness table: the candidate could not be scored on the holdout"])
    reasons: list[str] = []
    notes: list[str] = []
    applied = 0
    for kind, limit, gaps in (("TPR", f.max_tpr_gap, table.tpr_gap), ("FPR", f.max_fpr_gap, table.fpr_gap)):
        if limit is None:
            continue
        for attribute, gap in gaps.items():
            if gap is None:
                notes.append(f"{attribute}: fewer than two groups large enough to judge the {kind} gap")
                continue
            applied += 1
            if gap > limit:
                rates = [g for g in table.groups if g.attribute == attribute]
                worst = ", ".join(f"{g.group} {_fmt(g.tpr if kind == 'TPR' else g.fpr)}" for g in rates
                                  if (g.judged_tpr if kind == "TPR" else g.judged_fpr))
                reasons.append(f"{attribute}: {kind} gap {_fmt(gap)} exceeds {limit} ({worst})")
    return CheckResult("fairness", passed=not reasons, applied=applied, reasons=reasons,
                       details={"table": table.to_dict(), "notes": notes})


def check_latency(policy: GatePolicy, stats: LatencyStats | None) -> CheckResult:
    """p95/p99 of single-row predictions through the serving code path within the budget."""
    lat = policy.latency
    if not lat.configured():
        note = "latency check disabled" if not lat.enabled else "no latency budget configured"
        return CheckResult("latency", passed=True, skipped=True,
                           details={"note": note, **({"measured": stats.to_dict()} if stats else {})})
    budgets = {"p95_ms": lat.p95_ms, "p99_ms": lat.p99_ms}
    if stats is None or stats.error or stats.requests == 0:
        why = (stats.error if stats else "") or "latency was not measured"
        return CheckResult("latency", passed=False, applied=1, reasons=[f"latency not measurable: {why}"],
                           details={"budget": budgets, **({"measured": stats.to_dict()} if stats else {})})
    reasons = []
    applied = 0
    for key, budget in budgets.items():
        if budget is None:
            continue
        applied += 1
        value = getattr(stats, key)
        if not value <= budget:
            reasons.append(f"{key.removesuffix('_ms')} {value:.2f} ms exceeds the budget of {budget} ms")
    if stats.errors:
        reasons.append(f"{stats.errors} of {stats.requests + stats.errors} requests failed")
    return CheckResult("latency", passed=not reasons, applied=applied, reasons=reasons,
                       details={"budget": budgets, "measured": stats.to_dict()})


def check_infra(policy: GatePolicy, infra: InfraOutcome | None) -> CheckResult:
    if not policy.infra.enabled:
        return CheckResult("infra", passed=True, skipped=True, details={"note": "infra validation disabled"})
    if infra is None:
        return CheckResult("infra", passed=False, reasons=["infra validation was enabled but did not run"])
    return CheckResult("infra", passed=bool(infra.passed), details=infra.to_dict(), reasons=list(infra.reasons))


def decide(policy: GatePolicy, candidate: dict[str, float] | None, champion: dict[str, float] | None,
           fairness: FairnessTable | None, latency: LatencyStats | None, infra: InfraOutcome | None,
           *, candidate_error: str = "") -> GateVerdict:
    """Judge the candidate. ``candidate``/``champion``: quality metrics on the same holdout rows (None:
    not scorable / no champion); ``fairness``: the candidate's table; ``latency``/``infra``: None when
    not run. Passes only if every check passes and at least one threshold was actually evaluated."""
    checks = {
        "quality": check_quality(policy, candidate, champion, candidate_error),
        "fairness": check_fairness(policy, fairness),
        "latency": check_latency(policy, latency),
        "infra": check_infra(policy, infra),
    }
    failed = [name for name, check in checks.items() if not check.passed]
    applied = sum(checks[name].applied for name in ("quality", "fairness", "latency"))
    if not policy.has_thresholds():
        why = ("Rejected: the gate policy configures no thresholds (quality, fairness or latency), and a "
               "gate with nothing to judge passes nothing. Configure thresholds in include/config/gate.yaml.")
        return GateVerdict(False, checks, why)
    if failed:
        details = "; ".join(f"{name}: {'; '.join(checks[name].reasons) or 'failed'}" for name in failed)
        why = f"Rejected: {len(failed)} of {len(CHECKS)} checks failed ({', '.join(failed)}). {details}."
        return GateVerdict(False, checks, why)
    if applied == 0:
        why = ("Rejected: no configured threshold applied (without a champion only value thresholds apply, "
               "and none judged this candidate), so nothing passes. Add value thresholds (min/max) to the "
               "gate policy.")
        return GateVerdict(False, checks, why)
    against = "against the champion and value thresholds" if champion is not None else \
        "on value thresholds only (no champion yet)"
    ran = [name for name, check in checks.items() if not check.skipped]
    skipped = [name for name, check in checks.items() if check.skipped]
    why = (f"Passed: {applied} thresholds evaluated {against}; checks passed: {', '.join(ran)}"
           + (f"; skipped (not configured or disabled): {', '.join(skipped)}" if skipped else "") + ".")
    return GateVerdict(True, checks, why)
