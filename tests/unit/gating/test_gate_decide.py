"""The gate policy loader and the pure decision: one test per semantic."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loopline.gating.decide import decide
from loopline.gating.infra import InfraResult
from loopline.gating.metrics import FairnessTable, GroupRates, LatencyStats
from loopline.gating.policy import TASK_METRICS, GatePolicyError, load_policy, policy_from_dict

REPO_ROOT = Path(__file__).resolve().parents[3]
GOOD = {"roc_auc": 0.93, "pr_auc": 0.40, "recall_at_fpr": 0.50, "brier": 0.05, "expected_cost": 0.8}
FAST_OK = LatencyStats(100, 2.0, 4.0, 6.0, 7.0)
INFRA_OK = InfraResult(passed=True, ready_s=3.0)


def policy(**sections) -> object:
    """A policy of ``sections``; with a low quality floor unless they set quality (a gate without a quality
    threshold passes nothing, which the fairness and latency tests are not about)."""
    base = {
        "operating_point": {"threshold": 0.5},
        "infra": {"enabled": False},
        "latency": {"enabled": False},
        "quality": {"roc_auc": {"min": 0.5}},
    }
    return policy_from_dict({**base, **sections})


def fair_table(tpr_gap: float | None = 0.1, fpr_gap: float | None = 0.01) -> FairnessTable:
    groups = [
        GroupRates("customer_region", "north", 500, 10, 490, 0.7, 0.05, True, True),
        GroupRates("customer_region", "south", 50, 1, 49, 1.0, 0.5, False, False),
    ]
    return FairnessTable(0.5, groups, {"customer_region": tpr_gap}, {"customer_region": fpr_gap})


# --- the policy file --------------------------------------------------------------------------------


def test_the_shipped_policy_loads_and_configures_every_check() -> None:
    p = load_policy(REPO_ROOT / "include" / "loopline" / "usecases" / "fraud" / "policies" / "gate.yaml")
    assert p.has_thresholds()
    classification = TASK_METRICS["binary_classification"]
    assert all(t.configured() for name, t in p.quality.thresholds().items() if name in classification)
    assert p.quality.wrong_task("binary_classification") == []  # fraud's policy: only a classifier's metrics
    assert p.quality.recall_at_fpr.fpr == 0.01 and p.quality.expected_cost.missed_positive_cost > 0
    assert p.fairness.group_columns == ["customer_age_band", "customer_region"] and p.fairness.configured()
    assert p.latency.configured() and p.infra.enabled and p.holdout.days > 0
    assert p.operating_point.threshold is None and p.with_threshold(0.7).threshold() == 0.7


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"quality": {"brier": {"min": 0.1}}}, "brier: lower is better"),
        ({"quality": {"roc_auc": {"max": 0.9}}}, "roc_auc: higher is better"),
        ({"quality": {"recall_at_fpr": {"fpr": 2}}}, r"quality\.recall_at_fpr\.fpr"),
        ({"quality": {"f1": {"min": 0.5}}}, r"quality\.f1"),
        ({"fairness": {"min_group_size": 0}}, r"fairness\.min_group_size"),
        ({"latency": {"p95_ms": -1}}, r"latency\.p95_ms"),
    ],
)
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
        "roc_auc 0.92 regresses beyond the allowed 0.01 against the champion's 0.935 (limit 0.925)"
    ]
    # Lower is better: a higher Brier than the champion's is a regression.
    assert not decide(p, {**GOOD, "brier": 0.051}, champion, None, None, None).passed
    # A negative allowance demands an improvement.
    strict = policy(quality={"roc_auc": {"max_regression": -0.01}})
    assert not decide(strict, GOOD, {**GOOD, "roc_auc": 0.925}, None, None, None).passed
    assert decide(strict, GOOD, {**GOOD, "roc_auc": 0.92}, None, None, None).passed


def test_an_empty_policy_passes_nothing() -> None:
    verdict = decide(policy(quality={}), GOOD, GOOD, fair_table(), FAST_OK, INFRA_OK)
    assert not verdict.passed and "no thresholds" in verdict.why
    # Without a quality bar the predictions were never judged: that alone is a failure (fail closed).
    assert [name for name, check in verdict.checks.items() if not check.passed] == ["quality"]
    assert "sets no quality threshold" in verdict.checks["quality"].reasons[0]
    # Latency (or fairness) thresholds alone do not let a candidate through either.
    latency_only = decide(policy(quality={}, latency={"p95_ms": 50.0}), GOOD, None, None, FAST_OK, None)
    assert not latency_only.passed and "quality" in latency_only.why
    # Infra validation alone is a smoke test, not a threshold.
    assert not decide(policy(quality={}, infra={"enabled": True}), GOOD, None, None, None, INFRA_OK).passed


def test_only_change_thresholds_and_no_champion_passes_nothing() -> None:
    verdict = decide(policy(quality={"pr_auc": {"max_regression": 0.0}}), GOOD, None, None, None, None)
    assert not verdict.passed and "no configured threshold applied" in verdict.why


def test_unscorable_candidate_and_nan_metrics_fail_quality() -> None:
    p = policy(quality={"roc_auc": {"min": 0.5}}, fairness={"max_fpr_gap": 0.1})
    verdict = decide(p, None, GOOD, None, None, None, candidate_error="RuntimeError: cannot unpickle")
    assert (
        not verdict.passed and not verdict.checks["quality"].passed and not verdict.checks["fairness"].passed
    )
    assert "cannot unpickle" in verdict.checks["quality"].reasons[0]
    nan = decide(p, {**GOOD, "roc_auc": math.nan}, None, fair_table(), None, None)
    assert not nan.passed and "roc_auc n/a" in nan.checks["quality"].reasons[0]


def test_fairness_gaps_over_the_limit_fail_and_small_groups_are_not_judged() -> None:
    p = policy(quality={"roc_auc": {"min": 0.5}}, fairness={"max_tpr_gap": 0.2, "max_fpr_gap": 0.05})
    assert decide(p, GOOD, None, fair_table(0.1, 0.01), None, None).passed
    unfair = decide(p, GOOD, None, fair_table(0.1, 0.3), None, None)
    assert not unfair.passed and unfair.checks["fairness"].reasons[0].startswith(
        "customer_region: FPR gap 0.3"
    )
    assert "south" not in unfair.checks["fairness"].reasons[0], "the small group is not judged"
    undecided = decide(p, GOOD, None, fair_table(None, None), None, None)
    assert undecided.passed and undecided.checks["fairness"].applied == 0
    assert len(undecided.checks["fairness"].details["notes"]) == 2


def test_latency_budget() -> None:
    p = policy(latency={"enabled": True, "p95_ms": 5.0, "p99_ms": 10.0})
    assert decide(p, GOOD, None, None, FAST_OK, None).passed
    slow = decide(p, GOOD, None, None, LatencyStats(100, 2.0, 8.0, 12.0, 20.0), None)
    assert not slow.passed and len(slow.checks["latency"].reasons) == 2
    broken = decide(
        p, GOOD, None, None, LatencyStats(0, math.nan, math.nan, math.nan, math.nan, 0, "no load"), None
    )
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
    assert (
        decide(policy(quality={"roc_auc": {"min": 0.5}}), GOOD, None, None, None, None)
        .checks["infra"]
        .skipped
    )


def test_verdict_serialises_and_explains_itself() -> None:
    p = policy(quality={"roc_auc": {"min": 0.95}}, fairness={"max_fpr_gap": 0.05})
    verdict = decide(p, GOOD, None, fair_table(0.1, 0.3), None, None)
    data = json.loads(json.dumps(verdict.to_dict()))
    assert data["passed"] is False and set(data["checks"]) == {"quality", "fairness", "latency", "infra"}
    assert verdict.checks_passed() == {"quality": False, "fairness": False, "latency": True, "infra": True}
    assert "2 of 4 checks failed (quality, fairness)" in verdict.why and "roc_auc 0.93" in verdict.why


# --- which comparison ran: fail closed on an unscorable champion ------------------------------------

CHANGE = {"roc_auc": {"min": 0.5, "max_regression": 0.02}}


def test_an_unscorable_champion_is_a_rejection_that_names_it() -> None:
    from loopline.gating.decide import CHAMPION_UNSCORABLE, Comparison

    broken = Comparison(CHAMPION_UNSCORABLE, "3", "OSError: [Errno 13] Permission denied: 'model.pkl'")
    verdict = decide(policy(quality=CHANGE), GOOD, None, None, None, None, comparison=broken)
    assert not verdict.passed and verdict.checks_passed()["quality"] is False
    reason = verdict.checks["quality"].reasons[0]
    assert reason.startswith(
        "champion v3 exists but could not be scored: OSError: [Errno 13] Permission denied"
    )
    assert "so the candidate is rejected" in reason and "no champion" not in verdict.why
    data = json.loads(json.dumps(verdict.to_dict()))
    assert (
        data["comparison"]["kind"] == "champion_unscorable" and data["comparison"]["champion_version"] == "3"
    )
    assert "Permission denied" in data["comparison"]["error"]
    # A fairness comparison with the champion cannot be checked either.
    fair = policy(fairness={"max_gap_increase": {"tpr": 0.1}})
    verdict = decide(fair, GOOD, None, fair_table(), None, None, comparison=broken)
    assert (
        not verdict.passed
        and "champion v3 exists but could not be scored" in verdict.checks["fairness"].reasons[0]
    )


def test_only_an_absent_champion_means_value_thresholds_only() -> None:
    from loopline.gating.decide import NO_CHAMPION, VS_CHAMPION, Comparison

    verdict = decide(policy(quality=CHANGE), GOOD, None, None, None, None, comparison=Comparison(NO_CHAMPION))
    assert verdict.passed and verdict.to_dict()["comparison"]["kind"] == "value_only_no_champion"
    assert "value thresholds only" in verdict.why and "no version holds the alias" in verdict.why
    versus = decide(
        policy(quality=CHANGE), GOOD, GOOD, None, None, None, comparison=Comparison(VS_CHAMPION, "2")
    )
    assert versus.passed and versus.to_dict()["comparison"]["kind"] == "vs_champion"
    assert "against champion v2" in versus.why
    with pytest.raises(ValueError, match="needs the error"):
        Comparison("champion_unscorable", "3")


# --- fairness with power -----------------------------------------------------------------------------


def blind_table(*, blind_positives: int = 12, min_group_positives: int = 10) -> FairnessTable:
    """Real rates from ``fairness_table``: the model catches every fraud except in age band 18-25."""
    import numpy as np

    from loopline.gating.metrics import fairness_table

    bands, labels, scores = [], [], []
    for band, positives in (("18-25", blind_positives), ("26-40", 30), ("41-60", 25)):
        bands += [band] * 400
        labels += [1] * positives + [0] * (400 - positives)
        caught = 0.0 if band == "18-25" else 0.9
        scores += [caught] * positives + [0.01] * (400 - positives)
    return fairness_table(
        np.array(labels),
        np.array(scores),
        {"customer_age_band": np.array(bands)},
        0.5,
        200,
        min_group_positives,
    )


def test_a_candidate_blind_in_one_age_band_is_rejected_naming_the_group() -> None:
    p = policy(fairness={"max_tpr_gap": 0.35, "min_group_positives": 10})
    verdict = decide(p, GOOD, None, blind_table(), None, None)
    assert not verdict.passed and verdict.checks_passed()["fairness"] is False
    reason = verdict.checks["fairness"].reasons[0]
    assert reason.startswith("customer_age_band: TPR gap 1 exceeds 0.35") and "18-25 0" in reason


def banded_table(caught: dict[str, tuple[int, int]], rows: int = 400) -> FairnessTable:
    """Real rates from ``fairness_table``: per age band, (frauds caught, frauds) among ``rows`` rows."""
    import numpy as np

    from loopline.gating.metrics import fairness_table

    bands, labels, scores = [], [], []
    for band, (hit, positives) in caught.items():
        bands += [band] * rows
        labels += [1] * positives + [0] * (rows - positives)
        scores += [0.9] * hit + [0.1] * (positives - hit) + [0.01] * (rows - positives)
    return fairness_table(
        np.array(labels), np.array(scores), {"customer_age_band": np.array(bands)}, 0.5, 200, 10
    )


def test_wilson_intervals_do_not_collapse_at_a_perfect_rate() -> None:
    from loopline.gating.metrics import wilson_interval

    low, high = wilson_interval(10, 10, 0.95)
    assert high == 1.0 and low == pytest.approx(0.722, abs=1e-3)  # 10 of 10 is not a certain 100 %
    assert wilson_interval(0, 10, 0.95) == (pytest.approx(0.0, abs=1e-12), pytest.approx(0.278, abs=1e-3))
    narrow = wilson_interval(7000, 10000, 0.95)
    assert narrow[1] - narrow[0] < 0.02


def test_a_gap_within_sampling_noise_of_the_bound_is_undecided_not_rejected() -> None:
    # The demo world's retrained candidate: 12 of 12 frauds caught in the small 18-25 band, 24 of 37 in
    # 26-40. The gap (0.351) is over 0.35 as measured, but 12 frauds cannot place it there.
    table = banded_table({"18-25": (12, 12), "26-40": (24, 37), "41-60": (41, 47), "60+": (13, 16)})
    assert table.tpr_gap["customer_age_band"] == pytest.approx(1 - 24 / 37)
    p = policy(fairness={"max_tpr_gap": 0.35, "min_group_positives": 10})
    verdict = decide(p, GOOD, None, table, None, None)
    assert verdict.passed, verdict.why
    [undecided] = verdict.checks["fairness"].details["undecided"]
    assert undecided["rate"] == "TPR" and undecided["interval"][0] < 0.35 < undecided["interval"][1]
    assert "cannot be placed above or below 0.35" in undecided["note"] and "18-25 1" in undecided["note"]
    assert "too small to decide: customer_age_band TPR" in verdict.why
    strict = policy(fairness={"max_tpr_gap": 0.35, "min_group_positives": 10, "unjudged_groups": "reject"})
    rejected = decide(strict, GOOD, None, table, None, None)
    assert not rejected.passed
    assert (
        rejected.checks["fairness"]
        .reasons[0]
        .startswith("customer_age_band: TPR gap 0.3514 cannot be placed above or below 0.35")
    )
    from loopline.gating.card import _not_judged

    listed = _not_judged({"verdict": verdict.to_dict(), "policy": p.model_dump()})
    assert listed[1].startswith("Not judged (reported only") and listed[2] == f"- {undecided['note']}"


def test_a_gap_surely_over_the_bound_rejects_and_one_surely_under_passes_quietly() -> None:
    p = policy(fairness={"max_tpr_gap": 0.35, "min_group_positives": 10})
    # The same 0.7 - 0.2 rates, once on 10 frauds per band and once on 200.
    few = banded_table({"18-25": (2, 10), "26-40": (7, 10)})
    many = banded_table({"18-25": (40, 200), "26-40": (140, 200)}, rows=1000)
    assert few.tpr_gap["customer_age_band"] == many.tpr_gap["customer_age_band"] == pytest.approx(0.5)
    assert decide(p, GOOD, None, few, None, None).checks["fairness"].details["undecided"]
    rejected = decide(p, GOOD, None, many, None, None)
    assert not rejected.passed
    assert "95% interval 0.4" in rejected.checks["fairness"].reasons[0]
    even = banded_table({"18-25": (140, 200), "26-40": (150, 200)}, rows=1000)
    quiet = decide(p, GOOD, None, even, None, None)
    assert quiet.passed and quiet.checks["fairness"].details["undecided"] == []


def test_thin_groups_are_not_judged_by_default_and_rejected_with_the_switch() -> None:
    thin = blind_table(blind_positives=4)  # 4 frauds: too few to judge the band's TPR
    p = policy(fairness={"max_tpr_gap": 0.35, "min_group_positives": 10})
    reported = decide(p, GOOD, None, thin, None, None)
    assert reported.passed, "not judged is reported, not a rejection, by default"
    [entry] = reported.checks["fairness"].details["not_judged"]
    assert (entry["group"], entry["n"], entry["positives"]) == ("18-25", 400, 4)
    assert "4 positive rows < min_group_positives 10" in entry["lacks"]
    assert "not judged" in reported.why and "customer_age_band=18-25" in reported.why
    strict = policy(fairness={"max_tpr_gap": 0.35, "min_group_positives": 10, "unjudged_groups": "reject"})
    rejected = decide(strict, GOOD, None, thin, None, None)
    assert not rejected.passed
    assert rejected.checks["fairness"].reasons == [
        "customer_age_band=18-25 not judged (4 positive rows < min_group_positives 10); unjudged_groups: reject "
        "(grow the holdout with holdout.max_days, or set fairness.unjudged_groups: report)"
    ]
    with pytest.raises(GatePolicyError, match="unjudged_groups"):
        policy_from_dict({"fairness": {"unjudged_groups": "ignore"}})


def test_a_gap_materially_worse_than_the_champions_is_rejected() -> None:
    from loopline.gating.decide import VS_CHAMPION, Comparison

    # Both within the absolute bound (0.35); the candidate's TPR gap is 0.25 above the champion's.
    p = policy(
        fairness={"max_tpr_gap": 0.35, "max_fpr_gap": 0.1, "max_gap_increase": {"tpr": 0.15, "fpr": 0.02}}
    )
    champion, candidate = fair_table(0.05, 0.01), fair_table(0.30, 0.01)
    versus = Comparison(VS_CHAMPION, "4")
    verdict = decide(p, GOOD, GOOD, candidate, None, None, champion_fairness=champion, comparison=versus)
    assert not verdict.passed
    assert verdict.checks["fairness"].reasons == [
        "customer_region: TPR gap 0.3 is 0.25 above champion v4's 0.05 on the same rows (allowed increase 0.15; "
        "candidate north 0.7; champion north 0.7)"
    ]
    compared = verdict.checks["fairness"].details["vs_champion"]
    assert [(c["rate"], c["passed"]) for c in compared] == [("TPR", False), ("FPR", True)]
    # Within the allowed increase, and without a champion the increase rule is not applied.
    assert decide(
        p, GOOD, GOOD, fair_table(0.15, 0.02), None, None, champion_fairness=champion, comparison=versus
    ).passed
    assert decide(p, GOOD, None, candidate, None, None).passed


def test_a_group_absent_from_the_holdout_is_listed_not_dropped() -> None:
    import numpy as np

    from loopline.gating.metrics import fairness_table

    labels = np.array([1] * 30 + [0] * 370 + [1] * 30 + [0] * 370)
    scores = np.where(labels == 1, 0.9, 0.01)
    bands = np.array(["26-40"] * 400 + ["41-60"] * 400)
    history = {"customer_age_band": ["18-25", "26-40", "41-60", "60+"]}  # what build_holdout records
    table = fairness_table(labels, scores, {"customer_age_band": bands}, 0.5, 200, 10, expected=history)
    absent = [g for g in table.groups if g.n == 0]
    assert [g.group for g in absent] == ["18-25", "60+"] and not any(
        g.judged_tpr or g.judged_fpr for g in absent
    )
    assert table.tpr_gap["customer_age_band"] == 0.0  # judged on the present groups only
    strict = policy(fairness={"max_tpr_gap": 0.35, "min_group_positives": 10, "unjudged_groups": "reject"})
    rejected = decide(strict, GOOD, None, table, None, None)
    assert not rejected.passed
    assert any(
        r.startswith("customer_age_band=18-25 not judged (0 rows < min_group_size 200")
        for r in rejected.checks["fairness"].reasons
    )
    # Without the history the absent groups vanish, and the same strict policy passes: the gap it closes.
    unaware = fairness_table(labels, scores, {"customer_age_band": bands}, 0.5, 200, 10)
    assert decide(strict, GOOD, None, unaware, None, None).passed


def test_a_gap_increase_of_two_frauds_in_a_small_band_is_undecided_and_a_blind_band_is_not() -> None:
    import numpy as np

    from loopline.gating.decide import VS_CHAMPION, Comparison
    from loopline.gating.metrics import fairness_table, gap_increase_intervals

    # Two bands of 400 rows; the champion catches 8 of 12 frauds in "small" and 45 of 50 in "large".
    bands = np.array(["small"] * 400 + ["large"] * 400)
    labels = np.zeros(800)
    labels[:12] = 1
    labels[400:450] = 1
    champion = np.full(800, 0.01)
    champion[:8] = 0.9
    champion[400:445] = 0.9
    groups = {"customer_age_band": bands}
    p = policy(fairness={"max_gap_increase": {"tpr": 0.15}, "min_group_positives": 10})
    versus = Comparison(VS_CHAMPION, "1")

    def judge(candidate):
        table = fairness_table(labels, candidate, groups, 0.5, 200, 10)
        champ = fairness_table(labels, champion, groups, 0.5, 200, 10)
        intervals = gap_increase_intervals(labels, candidate, champion, groups, table, 0.95)
        verdict = decide(
            p,
            GOOD,
            GOOD,
            table,
            None,
            None,
            champion_fairness=champ,
            comparison=versus,
            gap_increase=intervals,
        )
        return verdict, intervals["TPR:customer_age_band"]

    # Two frauds fewer caught in the small band: the gap grows by 0.17, over the allowed 0.15 as measured.
    two_fewer = champion.copy()
    two_fewer[6:8] = 0.01
    verdict, (low, high) = judge(two_fewer)
    assert low < 0.15 < high and verdict.passed, verdict.why
    [undecided] = verdict.checks["fairness"].details["undecided"]
    assert "cannot be placed above or below the allowed 0.15" in undecided["note"]
    # Blind in the small band: surely more than 0.15 worse than the champion.
    blind = champion.copy()
    blind[:12] = 0.01
    verdict, (low, _) = judge(blind)
    assert low > 0.15 and not verdict.passed
    assert "95% interval of the increase" in verdict.checks["fairness"].reasons[0]
    # The champion itself: nothing changes.
    verdict, (low, high) = judge(champion.copy())
    assert verdict.passed and low == high == 0.0
