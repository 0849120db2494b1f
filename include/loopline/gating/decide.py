"""The gate decision: a pure function from the policy and the measurements to a ``GateVerdict``.

Semantics (also in ``include/config/gate.yaml``, the default policy): value thresholds (``min``/``max``) always apply;
change thresholds (``max_regression``, ``fairness.max_gap_increase``) apply against a champion scored on
the same holdout rows. Only a genuinely absent champion (no version holds the alias) lets a candidate
through on value thresholds alone: a champion that exists but cannot be scored fails closed, because
"better than the model in production" cannot be checked. A check with nothing configured is skipped;
with no threshold configured — or none applicable — nothing passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from loopline.gating.metrics import FairnessTable, LatencyStats, gap_interval
from loopline.gating.policy import HIGHER_IS_BETTER, GatePolicy

CHECKS = ("quality", "fairness", "latency", "infra")


class InfraOutcome(Protocol):
    @property
    def passed(self) -> bool: ...

    @property
    def reasons(self) -> list[str]: ...

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


VS_CHAMPION = "vs_champion"
NO_CHAMPION = "value_only_no_champion"
CANDIDATE_IS_CHAMPION = "value_only_candidate_is_champion"
CHAMPION_UNSCORABLE = "champion_unscorable"
COMPARISONS = (VS_CHAMPION, NO_CHAMPION, CANDIDATE_IS_CHAMPION, CHAMPION_UNSCORABLE)


@dataclass(frozen=True)
class Comparison:
    """Which comparison the gate ran, recorded with every verdict: against a champion scored on the same
    rows (``vs_champion``), on value thresholds only because no version holds the alias
    (``value_only_no_champion``) or the candidate is the champion itself, or not at all because the
    champion exists but could not be scored (``champion_unscorable``, with the error)."""

    kind: str
    champion_version: str | None = None
    error: str = ""

    def __post_init__(self) -> None:
        if self.kind not in COMPARISONS:
            raise ValueError(f"unknown comparison {self.kind!r}; one of {', '.join(COMPARISONS)}")
        if self.kind == CHAMPION_UNSCORABLE and not self.error:
            raise ValueError("an unscorable champion needs the error that made it unscorable")

    @property
    def champion(self) -> str:
        return f"champion v{self.champion_version}" if self.champion_version else "the champion"

    def describe(self) -> str:
        if self.kind == VS_CHAMPION:
            return f"against {self.champion} on the same holdout rows, and value thresholds"
        if self.kind == NO_CHAMPION:
            return "on value thresholds only (no champion yet: no version holds the alias `champion`)"
        if self.kind == CANDIDATE_IS_CHAMPION:
            return f"on value thresholds only (the candidate is {self.champion} itself)"
        return f"without the comparison: {self.champion} exists but could not be scored"

    def unscorable_reason(self, what: str) -> str:
        return (
            f"{self.champion} exists but could not be scored: {self.error}; {what} cannot be checked, "
            "so the candidate is rejected (fix or re-register the champion, or remove its alias if it "
            "is truly gone)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.describe()}


def comparison_for(champion: dict[str, float] | None) -> Comparison:
    """The comparison implied by the champion's metrics alone (callers that know more pass their own)."""
    return Comparison(VS_CHAMPION) if champion is not None else Comparison(NO_CHAMPION)


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    checks: dict[str, CheckResult]
    why: str
    comparison: Comparison = field(default_factory=lambda: Comparison(NO_CHAMPION))

    @property
    def reasons(self) -> list[str]:
        """Every failure reason, prefixed with its check."""
        return [f"{name}: {reason}" for name, check in self.checks.items() for reason in check.reasons]

    def checks_passed(self) -> dict[str, bool]:
        return {name: check.passed for name, check in self.checks.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "why": self.why,
            "reasons": self.reasons,
            "comparison": self.comparison.to_dict(),
            "checks": {name: check.to_dict() for name, check in self.checks.items()},
        }


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}"


def _finite(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def check_quality(
    policy: GatePolicy,
    candidate: dict[str, float] | None,
    champion: dict[str, float] | None,
    candidate_error: str = "",
    comparison: Comparison | None = None,
) -> CheckResult:
    """Value thresholds always; change thresholds against the champion when there is one. A champion
    that exists but could not be scored fails every configured change threshold (fail closed)."""
    comparison = comparison or comparison_for(champion)
    thresholds = {name: t for name, t in policy.quality.thresholds().items() if t.configured()}
    if not thresholds:
        # Fail closed: latency or fairness alone must never let a model through that nobody judged on its
        # predictions (the platform's default policy sets no quality bar: only the use case knows one).
        return CheckResult(
            "quality",
            passed=False,
            reasons=[
                "the gate policy sets no quality threshold, so the candidate's predictions were not judged: "
                "set quality thresholds (min/max) in the use case's gate.yaml"
            ],
            details={"note": "no quality thresholds configured"},
        )
    if candidate is None:
        why = candidate_error or "the candidate could not be scored"
        return CheckResult(
            "quality",
            passed=False,
            applied=len(thresholds),
            details={"error": why},
            reasons=[f"the candidate could not be scored on the holdout: {why}"],
        )
    reasons: list[str] = []
    metrics: dict[str, Any] = {}
    applied = 0
    unscorable: list[str] = []
    for name, t in thresholds.items():
        higher = HIGHER_IS_BETTER[name]
        value = candidate.get(name, math.nan)
        champ = champion.get(name) if champion else None
        rules: list[dict[str, Any]] = []
        value_rules: list[tuple[str, float | None, Callable[[float, float], bool], str]] = [
            ("min", t.min, lambda v, lim: v >= lim, ">="),
            ("max", t.max, lambda v, lim: v <= lim, "<="),
        ]
        for kind, limit, ok, op in value_rules:
            if limit is None:
                continue
            applied += 1
            passed = _finite(value) and ok(value, limit)
            rules.append({"rule": f"{name} {op} {limit}", "passed": passed})
            if not passed:
                reasons.append(f"{name} {_fmt(value)} is not {op} {kind} {limit}")
        if t.max_regression is not None:
            if comparison.kind == CHAMPION_UNSCORABLE:
                applied += 1
                rules.append(
                    {
                        "rule": f"max_regression {t.max_regression} vs champion",
                        "passed": False,
                        "note": f"{comparison.champion} could not be scored: change threshold not checkable",
                    }
                )
                unscorable.append(name)
            elif champion is None:
                rules.append(
                    {
                        "rule": f"max_regression {t.max_regression} vs champion",
                        "passed": None,
                        "note": "no champion: change threshold not applied",
                    }
                )
            elif champ is None or not _finite(champ):
                rules.append(
                    {
                        "rule": f"max_regression {t.max_regression} vs champion",
                        "passed": None,
                        "note": "champion value not computable on this holdout: not applied",
                    }
                )
            else:
                applied += 1
                limit = champ - t.max_regression if higher else champ + t.max_regression
                op = ">=" if higher else "<="
                passed = _finite(value) and (value >= limit if higher else value <= limit)
                rules.append(
                    {
                        "rule": f"{name} {op} champion {_fmt(champ)} {'-' if higher else '+'} "
                        f"{t.max_regression}",
                        "passed": passed,
                    }
                )
                if not passed:
                    reasons.append(
                        f"{name} {_fmt(value)} regresses beyond the allowed {t.max_regression} "
                        f"against the champion's {_fmt(champ)} (limit {_fmt(limit)})"
                    )
        metrics[name] = {"candidate": value, "champion": champ, "higher_is_better": higher, "rules": rules}
    if unscorable:
        reasons.insert(
            0, comparison.unscorable_reason(f"the change thresholds ({', '.join(unscorable)} max_regression)")
        )
    return CheckResult(
        "quality",
        passed=not reasons,
        applied=applied,
        reasons=reasons,
        details={"metrics": metrics, "champion": champion is not None, "comparison": comparison.kind},
    )


def _not_judged(policy: GatePolicy, table: FairnessTable) -> list[dict[str, Any]]:
    """Groups whose TPR (a regressor: MAE) cannot be judged (too few rows or positive rows), with what they
    lack."""
    f = policy.fairness
    out = []
    if table.task == "regression":
        return [
            {
                "attribute": g.attribute,
                "group": g.group,
                "n": g.n,
                "lacks": f"{g.n} rows < min_group_size {f.min_group_size}",
            }
            for g in table.groups
            if not g.judged_mae
        ]
    for g in table.groups:
        if g.judged_tpr:
            continue
        lacks = []
        if g.n < f.min_group_size:
            lacks.append(f"{g.n} rows < min_group_size {f.min_group_size}")
        if g.positives < f.min_group_positives:
            lacks.append(f"{g.positives} positive rows < min_group_positives {f.min_group_positives}")
        out.append(
            {
                "attribute": g.attribute,
                "group": g.group,
                "n": g.n,
                "positives": g.positives,
                "fpr_judged": g.judged_fpr,
                "lacks": "; ".join(lacks) or "no positive rows",
            }
        )
    return out


def _rates(table: FairnessTable, attribute: str, kind: str) -> str:
    """The judged groups' values of ``kind`` (TPR, FPR or MAE) for ``attribute``."""
    field_of = {"TPR": ("tpr", "judged_tpr"), "FPR": ("fpr", "judged_fpr"), "MAE": ("mae", "judged_mae")}
    value, judged = field_of[kind]
    return ", ".join(
        f"{g.group} {_fmt(getattr(g, value))}"
        for g in table.groups
        if g.attribute == attribute and getattr(g, judged)
    )


def _undecided(
    attribute: str, rate: str, gap: float, interval: tuple[float, float], limit: float, note: str
) -> dict[str, Any]:
    """A fairness bound the holdout's group sizes cannot place on either side: reported (a rejection with
    ``unjudged_groups: reject``)."""
    return {
        "attribute": attribute,
        "rate": rate,
        "gap": gap,
        "interval": list(interval),
        "limit": limit,
        "note": note,
    }


def check_fairness(
    policy: GatePolicy,
    table: FairnessTable | None,
    champion: FairnessTable | None = None,
    comparison: Comparison | None = None,
    gap_increase: dict[str, tuple[float, float]] | None = None,
) -> CheckResult:
    """Per attribute: the TPR and FPR gaps between judged groups within the policy's absolute bounds and
    no more than ``max_gap_increase`` above the champion's gaps on the same rows (judged on
    ``gap_increase``'s interval where given: ``"TPR:<attribute>"`` -> (low, high)); groups too small to
    judge, and gaps the holdout cannot place, are listed (and, with ``unjudged_groups: reject``, reject)."""
    f = policy.fairness
    comparison = comparison or comparison_for({} if champion is not None else None)
    if not f.configured():
        return CheckResult(
            "fairness",
            passed=True,
            skipped=True,
            details={"note": "no fairness gap configured", **({"table": table.to_dict()} if table else {})},
        )
    if table is None:
        return CheckResult(
            "fairness",
            passed=False,
            applied=1,
            details={},
            reasons=["no fairness table: the candidate could not be scored on the holdout"],
        )
    reasons: list[str] = []
    notes: list[str] = []
    applied = 0
    regression = table.task == "regression"
    # A classifier's gaps (max - min of a rate) and a regressor's ratio (worst MAE / best MAE): both bounded
    # above, both compared with the champion's on the same rows.
    bounds = (
        (("MAE", f.max_mae_ratio, table.mae_ratio),)
        if regression
        else (("TPR", f.max_tpr_gap, table.tpr_gap), ("FPR", f.max_fpr_gap, table.fpr_gap))
    )
    undecided: list[dict[str, Any]] = []
    for kind, limit, gaps in bounds:
        if limit is None:
            continue
        what = "MAE ratio (worst group over best)" if kind == "MAE" else f"{kind} gap"
        for attribute, gap in gaps.items():
            if gap is None:
                notes.append(f"{attribute}: fewer than two groups large enough to judge the {what}")
                continue
            applied += 1
            # A rate gap is judged against the groups' sampling noise; a regressor's MAE ratio on
            # min_group_size rows per group is judged as measured.
            interval = None if regression else gap_interval(table, attribute, kind, f.confidence)
            low, high = interval or (gap, gap)
            if low > limit:
                noise = "" if interval is None else f", {f.confidence:.0%} interval {_fmt(low)}-{_fmt(high)}"
                reasons.append(
                    f"{attribute}: {what} {_fmt(gap)} exceeds {limit} ({_rates(table, attribute, kind)}{noise})"
                )
            elif high > limit:
                note = (
                    f"{attribute}: {what} {_fmt(gap)} cannot be placed above or below {limit} "
                    f"with these group sizes ({f.confidence:.0%} interval {_fmt(low)}-{_fmt(high)}; "
                    f"{_rates(table, attribute, kind)})"
                )
                undecided.append(_undecided(attribute, kind, gap, (low, high), limit, note))

    # Against the champion: the same rows, hence the same judged groups, so the gaps are comparable and
    # a model that is fair "enough" in absolute terms still cannot make things materially worse.
    versus: list[dict[str, Any]] = []
    increase = f.max_gap_increase
    if increase.configured():
        if comparison.kind == CHAMPION_UNSCORABLE:
            applied += 1
            reasons.append(comparison.unscorable_reason("the fairness gap increase (max_gap_increase)"))
        elif champion is None:
            notes.append(f"max_gap_increase not applied: {comparison.describe()}")
        else:
            versus_bounds = (
                (("MAE", increase.mae_ratio, table.mae_ratio, champion.mae_ratio),)
                if regression
                else (
                    ("TPR", increase.tpr, table.tpr_gap, champion.tpr_gap),
                    ("FPR", increase.fpr, table.fpr_gap, champion.fpr_gap),
                )
            )
            for kind, limit, gaps, champ_gaps in versus_bounds:
                if limit is None:
                    continue
                for attribute, gap in gaps.items():
                    champ = champ_gaps.get(attribute)
                    if gap is None or champ is None:
                        continue
                    applied += 1
                    low, high = (gap_increase or {}).get(f"{kind}:{attribute}", (gap - champ, gap - champ))
                    passed = low <= limit + 1e-12
                    if passed and high > limit + 1e-12:
                        note = (
                            f"{attribute}: {kind} gap {_fmt(gap)} against {comparison.champion}'s "
                            f"{_fmt(champ)} (change {_fmt(gap - champ)}); with these group sizes the increase "
                            f"cannot be placed above or below the allowed {limit} "
                            f"({f.confidence:.0%} interval {_fmt(low)} to {_fmt(high)}; candidate "
                            f"{_rates(table, attribute, kind)}; champion {_rates(champion, attribute, kind)})"
                        )
                        undecided.append(_undecided(attribute, kind, gap, (low, high), limit, note))
                    versus.append(
                        {
                            "attribute": attribute,
                            "rate": kind,
                            "candidate_gap": gap,
                            "champion_gap": champ,
                            "allowed_increase": limit,
                            "passed": passed,
                        }
                    )
                    if not passed:
                        what = "MAE ratio" if kind == "MAE" else f"{kind} gap"
                        reasons.append(
                            f"{attribute}: {what} {_fmt(gap)} is {_fmt(gap - champ)} above "
                            f"{comparison.champion}'s {_fmt(champ)} on the same rows (allowed "
                            f"increase {limit}"
                            + (
                                f", {f.confidence:.0%} interval of the increase {_fmt(low)} to {_fmt(high)}"
                                if f"{kind}:{attribute}" in (gap_increase or {})
                                else ""
                            )
                            + f"; candidate {_rates(table, attribute, kind)}; champion "
                            f"{_rates(champion, attribute, kind)})"
                        )

    # Listed in details["not_judged"] either way (the card and the verdict's why show them).
    not_judged = _not_judged(policy, table)
    if f.unjudged_groups == "reject":
        applied += 1
        reasons += [
            f"{g['attribute']}={g['group']} not judged ({g['lacks']}); unjudged_groups: reject "
            "(grow the holdout with holdout.max_days, or set fairness.unjudged_groups: report)"
            for g in not_judged
        ]
        reasons += [
            f"{u['note']}; unjudged_groups: reject (grow the holdout with holdout.max_days, raise "
            "min_group_positives, or set fairness.unjudged_groups: report)"
            for u in undecided
        ]
    return CheckResult(
        "fairness",
        passed=not reasons,
        applied=applied,
        reasons=reasons,
        details={
            "table": table.to_dict(),
            "notes": notes,
            "not_judged": not_judged,
            "undecided": undecided,
            "vs_champion": versus,
            **({"champion_table": champion.to_dict()} if champion is not None else {}),
        },
    )


def check_latency(policy: GatePolicy, stats: LatencyStats | None) -> CheckResult:
    """p95/p99 of single-row predictions through the serving code path within the budget."""
    lat = policy.latency
    if not lat.configured():
        note = "latency check disabled" if not lat.enabled else "no latency budget configured"
        return CheckResult(
            "latency",
            passed=True,
            skipped=True,
            details={"note": note, **({"measured": stats.to_dict()} if stats else {})},
        )
    budgets = {"p95_ms": lat.p95_ms, "p99_ms": lat.p99_ms}
    if stats is None or stats.error or stats.requests == 0:
        why = (stats.error if stats else "") or "latency was not measured"
        return CheckResult(
            "latency",
            passed=False,
            applied=1,
            reasons=[f"latency not measurable: {why}"],
            details={"budget": budgets, **({"measured": stats.to_dict()} if stats else {})},
        )
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
    return CheckResult(
        "latency",
        passed=not reasons,
        applied=applied,
        reasons=reasons,
        details={"budget": budgets, "measured": stats.to_dict()},
    )


def check_infra(policy: GatePolicy, infra: InfraOutcome | None) -> CheckResult:
    if not policy.infra.enabled:
        return CheckResult("infra", passed=True, skipped=True, details={"note": "infra validation disabled"})
    if infra is None:
        return CheckResult("infra", passed=False, reasons=["infra validation was enabled but did not run"])
    return CheckResult(
        "infra", passed=bool(infra.passed), details=infra.to_dict(), reasons=list(infra.reasons)
    )


def decide(
    policy: GatePolicy,
    candidate: dict[str, float] | None,
    champion: dict[str, float] | None,
    fairness: FairnessTable | None,
    latency: LatencyStats | None,
    infra: InfraOutcome | None,
    *,
    candidate_error: str = "",
    champion_fairness: FairnessTable | None = None,
    comparison: Comparison | None = None,
    gap_increase: dict[str, tuple[float, float]] | None = None,
) -> GateVerdict:
    """Judge the candidate. ``candidate``/``champion``: quality metrics on the same holdout rows (None:
    not scorable / no champion); ``fairness``/``champion_fairness``: their fairness tables on those rows;
    ``latency``/``infra``: None when not run; ``comparison``: which comparison ran (default: implied by
    ``champion``); ``gap_increase``: the intervals of the fairness gaps' increase over the champion's
    (``metrics.gap_increase_intervals``; None: judged as measured). Passes only if every check passes and at
    least one threshold was actually evaluated."""
    comparison = comparison or comparison_for(champion)
    checks = {
        "quality": check_quality(policy, candidate, champion, candidate_error, comparison),
        "fairness": check_fairness(policy, fairness, champion_fairness, comparison, gap_increase),
        "latency": check_latency(policy, latency),
        "infra": check_infra(policy, infra),
    }
    failed = [name for name, check in checks.items() if not check.passed]
    applied = sum(checks[name].applied for name in ("quality", "fairness", "latency"))
    if not policy.has_thresholds():
        why = (
            "Rejected: the gate policy configures no thresholds (quality, fairness or latency), and a "
            "gate with nothing to judge passes nothing. Configure thresholds in the use case's gate.yaml."
        )
        return GateVerdict(False, checks, why, comparison)
    if failed:
        details = "; ".join(f"{name}: {'; '.join(checks[name].reasons) or 'failed'}" for name in failed)
        why = (
            f"Rejected: {len(failed)} of {len(CHECKS)} checks failed ({', '.join(failed)}), judged "
            f"{comparison.describe()}. {details}."
        )
        return GateVerdict(False, checks, why, comparison)
    if applied == 0:
        why = (
            "Rejected: no configured threshold applied (without a champion only value thresholds apply, "
            "and none judged this candidate), so nothing passes. Add value thresholds (min/max) to the "
            "gate policy."
        )
        return GateVerdict(False, checks, why, comparison)
    ran = [name for name, check in checks.items() if not check.skipped]
    skipped = [name for name, check in checks.items() if check.skipped]
    not_judged = checks["fairness"].details.get("not_judged") or []
    undecided = checks["fairness"].details.get("undecided") or []
    regression = (checks["fairness"].details.get("table") or {}).get("task") == "regression"
    lacking = "too few rows" if regression else "too few rows or positive rows"
    why = (
        f"Passed: {applied} thresholds evaluated {comparison.describe()}; checks passed: {', '.join(ran)}"
        + (f"; skipped (not configured or disabled): {', '.join(skipped)}" if skipped else "")
        + (
            f"; fairness groups not judged ({lacking}): "
            f"{', '.join(g['attribute'] + '=' + g['group'] for g in not_judged)}"
            if not_judged
            else ""
        )
        + (
            "; fairness gaps the holdout is too small to decide: "
            + ", ".join(f"{u['attribute']} {u['rate']}" for u in undecided)
            if undecided
            else ""
        )
        + "."
    )
    return GateVerdict(True, checks, why, comparison)
