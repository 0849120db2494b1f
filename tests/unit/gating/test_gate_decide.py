"""The gate policy loader and the pure decision: one test per semantic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loopline.gating.decide import decide
from loopline.gating.infra import InfraResult
from loopline.gating.metrics import FairnessTable, GroupRates, LatencyStats
from loopline.gating.policy import GatePolicyError, load_policy, policy_from_dict

REPO_ROOT = Path(__file__).resolve().parents[3]
GOOD = {"roc_auc": 0.93, "pr_auc": 0.40, "recall_at_fpr": 0.50, "brier": 0.05, "expected_cost": 0.8}
FAST_OK = LatencyStats(100, 2.0, 4.0, 6.0, 7.0)
INFRA_OK = InfraResult(passed=True, ready_s=3.0)


def policy(**sections) -> object:
    base = {"operating_point": {"threshold": 0.5}, "infra": {"enabled": False}, "latency": {"enabled": False}}
    return policy_from_dict({**base, **sections})


def fair_table(tpr_gap: float | None = 0.1, fpr_gap: float | None = 0.01) -> FairnessTable:
    groups = [GroupRates("customer_region", "north", 500, 10, 490, 0.7, 0.05, True, True),
              GroupRates("customer_region", "south", 50, 1, 49, 1.0, 0.5, False, False)]
    return FairnessTable(0.5, groups, {"customer_region": tpr_gap}, {"customer_region": fpr_gap})


# --- the policy file --------------------------------------------------------------------------------


def test_the_shipped_policy_loads_and_configures_every_check() -> None:
    p = load_policy(REPO_ROOT / "include" / "config" / "gate.yaml")
    assert p.has_thresholds()
    assert all(t.configured() for t in p.quality.thresholds().values())
    assert p.quality.recall_at_fpr.fpr == 0.01 and p.quality.expected_cost.missed_fraud_cost > 0
    assert p.fairness.group_columns == ["customer_age_band", "customer_region"] and p.fairness.configured()
    assert p.latency.configured() and p.infra.enabled and p.holdout.days > 0
    assert p.operating_point.threshold is None and p.with_threshold(0.7).threshold() == 0.7


@pytest.mark.parametrize(("data", "field"), [
    ({"quality": {"brier": {"min": 0.1}}}, "brier: lower is better"),
    ({"quality": {"roc_auc": {"max": 0.9}}}, "roc_auc: higher is better"),
    ({"quality": {"recall_at_fpr": {"fpr": 2}}}, r"quality\.recall_at_fpr\.fpr"),
    ({"quality": {"f1": {"min": 0.5}}}, r"quality\.f1"),
    ({"fairness": {"min_group_size": 0}}, r"fairness\.min_group_size"),
    ({"latency": {"p95_ms": -1}}, r"latency\.p95_ms"),
])
def test_invalid_policies_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(GatePolicyError, match=field):
        policy_from_dict(data)


def test_unreadable_policy_files(tmp_path: Path) -> None:
    with pytest.raises(GatePolicyError, match="not found"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(GatePolicyError, match="mapping"):
        load_policy(tmp_path / "list.yaml")


# --- decide -----------------------------------------------------------------------------------------


def test_without_a_champion_only_value_thresholds_apply() -> None:
    p = policy(quality={"roc_auc": {"min": 0.9, "max_regression": 0.0}})
    verdict = decide(p, GOOD, None, None, None, None)
    assert verdict.passed, verdict.why
    rules = verdict.checks["quality"].details["metrics"]["roc_auc"]["rules"]
    assert [r["passed"] for r in rules] == [True, None] and "no champion" in rules[1]["note"]
    assert verdict.checks["quality"].applied == 1 and "no champion" in verdict.why
    assert not decide(p, {**GOOD, "roc_auc": 0.85}, None, None, None, None).passed


def test_change_thresholds_apply_against_a_champion() -> None:
    p = policy(quality={"roc_auc": {"max_regression": 0.01}, "brier": {"max_regression": 0.0}})
    champion = {**GOOD, "roc_auc": 0.935, "brier": 0.05}
    assert decide(p, GOOD, champion, None, None, None).passed  # 0.93 >= 0.935 - 0.01; brier equal
    worse = decide(p, {**GOOD, "roc_auc": 0.92}, champion, None, None, None)
    assert not worse.passed and worse.checks["quality"].reasons == [
        "roc_auc 0.92 regresses beyond the allowed 0.01 against the champion's 0.935 (limit 0.925)"]
    # Lower is better: a higher Brier than the champion's is a regression.
    assert not decide(p, {**GOOD, "brier": 0.051}, champion, None, None, None).passed
    # A negative allowance demands an improvement.
    strict = policy(quality={"roc_auc": {"max_regression": -0.01}})
    assert not decide(strict, GOOD, {**GOOD, "roc_auc": 0.925}, None, None, None).passed
    assert decide(strict, GOOD, {**GOOD, "roc_auc": 0.92}, None, None, None).passed


def test_an_empty_policy_passes_nothing() -> None:
    verdict = decide(policy(), GOOD, GOOD, fair_table(), FAST_OK, INFRA_OK)
    assert not verdict.passed and "no thresholds" in verdict.why
    assert all(check.passed for check in verdict.checks.values()), "nothing failed; nothing was judged"
    # Infra validation alone is a smoke test, not a threshold.
    assert not decide(policy(infra={"enabled": True}), GOOD, None, None, None, INFRA_OK).passed


def test_only_change_thresholds_and_no_champion_passes_nothing() -> None:
    verdict = decide(policy(quality={"pr_auc": {"max_regression": 0.0}}), GOOD, None, None, None, None)
    assert not verdict.passed and "no configured threshold applied" in verdict.why


def test_unscorable_candidate_and_nan_metrics_fail_quality() -> None:
    p = policy(quality={"roc_auc": {"min": 0.5}}, fairness={"max_fpr_gap": 0.1})
    verdict = decide(p, None, GOOD, None, None, None, candidate_error="RuntimeError: cannot unpickle")
    assert not verdict.passed and not verdict.checks["quality"].passed and not verdict.checks["fairness"].passed
    assert "cannot unpickle" in verdict.checks["quality"].reasons[0]
    nan = decide(p, {**GOOD, "roc_auc": math.nan}, None, fair_table(), None, None)
    assert not nan.passed and "roc_auc n/a" in nan.checks["quality"].reasons[0]


def test_fairness_gaps_over_the_limit_fail_and_small_groups_are_not_judged() -> None:
    p = policy(quality={"roc_auc": {"min": 0.5}}, fairness={"max_tpr_gap": 0.2, "max_fpr_gap": 0.05})
    assert decide(p, GOOD, None, fair_table(0.1, 0.01), None, None).passed
    unfair = decide(p, GOOD, None, fair_table(0.1, 0.3), None, None)
    assert not unfair.passed and unfair.checks["fairness"].reasons[0].startswith("customer_region: FPR gap 0.3")
    assert "south" not in unfair.checks["fairness"].reasons[0], "the small group is not judged"
    undecided = decide(p, GOOD, None, fair_table(None, None), None, None)
    assert undecided.passed and undecided.checks["fairness"].applied == 0
    assert len(undecided.checks["fairness"].details["notes"]) == 2


def test_latency_budget() -> None:
    p = policy(latency={"enabled": True, "p95_ms": 5.0, "p99_ms": 10.0})
    assert decide(p, GOOD, None, None, FAST_OK, None).passed
    slow = decide(p, GOOD, None, None, LatencyStats(100, 2.0, 8.0, 12.0, 20.0), None)
    assert not slow.passed and len(slow.checks["latency"].reasons) == 2
    broken = decide(p, GOOD, None, None, LatencyStats(0, math.nan, math.nan, math.nan, math.nan, 0, "no load"), None)
    assert not broken.passed and "no load" in broken.checks["latency"].reasons[0]
    assert not decide(p, GOOD, None, None, None, None).passed, "an enabled budget must be measured"
    off = policy(latency={"enabled": False, "p95_ms": 1.0}, quality={"roc_auc": {"min": 0.5}})
    assert decide(off, GOOD, None, None, None, None).checks["latency"].skipped


def test_infra_validation() -> None:
    p = policy(quality={"roc_auc": {"min": 0.5}}, infra={"enabled": True})
    assert decide(p, GOOD, None, None, None, INFRA_OK).passed
    failed = InfraResult(passed=False, reasons=["the serving app was not ready within 5 s"], log_tail="boom")
    verdict = decide(p, GOOD, None, None, None, failed)
    assert not verdict.passed and verdict.reasons == ["infra: the serving app was not ready within 5 s"]
    assert verdict.checks["infra"].details["log_tail"] == "boom"
    assert not decide(p, GOOD, None, None, None, None).passed, "enabled but not run is a failure"
    assert decide(policy(quality={"roc_auc": {"min": 0.5}}), GOOD, None, None, None, None).checks["infra"].skipped


def test_verdict_serialises_and_explains_itself() -> None:
    p = policy(quality={"roc_auc": {"min": 0.95}}, fairness={"max_fpr_gap": 0.05})
    verdict = decide(p, GOOD, None, fair_table(0.1, 0.3), None, None)
    data = json.loads(json.dumps(verdict.to_dict()))
    assert data["passed"] is False and set(data["checks"]) == {"quality", "fairness", "latency", "infra"}
    assert verdict.checks_passed() == {"quality": False, "fairness": False, "latency": True, "infra": True}
    assert "2 of 4 checks failed (quality, fairness)" in verdict.why and "roc_auc 0.93" in verdict.why
