"""The gate's fairness for a regressor: the MAE per group and the worst judged group's MAE over the best's
(``fairness.max_mae_ratio``), on the delivery simulator's holdout with its customer tiers. A group too small
to judge is listed, never silently passed; bounds of the other task are refused; renamed keys say so; the
infra probes are built from the use case's event columns."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from test_gate_decide import policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitoring"))
from delivery_world import DELIVERY, Estimator, days  # noqa: E402

from loopline.config.use_case import load_use_case  # noqa: E402
from loopline.gating.card import render_model_card  # noqa: E402
from loopline.gating.decide import Comparison, check_fairness, decide  # noqa: E402
from loopline.gating.infra import _check_predictions, _edge_cases, probe_requests  # noqa: E402
from loopline.gating.metrics import error_table  # noqa: E402
from loopline.gating.policy import GatePolicyError, policy_from_dict  # noqa: E402

SEEDS = (3, 4, 5, 6, 7)
TIER = "customer_tier"
FAIR = {"fairness": {"max_mae_ratio": 1.25, "max_gap_increase": {"mae_ratio": 0.10}, "min_group_size": 200}}


def holdout(seed: int, worse_for: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(minutes, champion's predictions, candidate's predictions, tiers) of two held-out days; the
    candidate is the champion, or ``worse_for`` a tier: 4 minutes noisier for its orders."""
    estimator = Estimator.fit(days(seed, 0, 7))
    rows = days(seed, 7, 9)
    champion = estimator.predict(rows)
    tiers = rows[TIER].astype(str).to_numpy()
    noise = np.random.default_rng(seed).normal(0.0, 4.0, len(rows))
    candidate = champion + (noise * (tiers == worse_for) if worse_for else 0.0)
    return rows[DELIVERY.label_column].to_numpy(float), champion, candidate, tiers


def judge(seed: int, worse_for: str | None = None, **overrides: object):
    minutes, champion, candidate, tiers = holdout(seed, worse_for)
    p = policy(quality={"mae": {"max": 6.0}}, **{**FAIR, **overrides})
    table = error_table(minutes, candidate, {TIER: tiers}, p.fairness.min_group_size)
    champion_table = error_table(minutes, champion, {TIER: tiers}, p.fairness.min_group_size)
    return p, table, check_fairness(p, table, champion_table, Comparison("vs_champion", "1"))


@pytest.mark.parametrize("seed", SEEDS)
def test_an_estimator_equally_good_for_every_tier_passes(seed: int) -> None:
    _, table, result = judge(seed)
    assert result.passed and result.applied == 2, result.reasons
    assert table.task == "regression" and table.threshold is None
    assert {g.group for g in table.groups} == {"new", "regular", "premium"}
    assert all(g.judged_mae and g.mae is not None for g in table.groups)
    ratio = table.mae_ratio[TIER]
    assert ratio is not None and 1.0 <= ratio < 1.25


@pytest.mark.parametrize("seed", SEEDS)
def test_an_estimator_worse_for_new_customers_is_rejected(seed: int) -> None:
    _, table, result = judge(seed, worse_for="new")
    assert not result.passed
    assert any(
        r.startswith(f"{TIER}: MAE ratio (worst group over best)") and "exceeds 1.25" in r
        for r in result.reasons
    )
    assert any("above champion v1's" in r for r in result.reasons)  # and grew beyond the allowed increase
    worst = max((g for g in table.groups if g.judged_mae), key=lambda g: g.mae or 0.0)
    assert worst.group == "new"


def test_a_group_too_small_is_not_judged_and_said_so() -> None:
    _, table, result = judge(3, worse_for="premium", fairness={**FAIR["fairness"], "min_group_size": 400})
    premium = next(g for g in table.groups if g.group == "premium")
    assert premium.n < 400 and not premium.judged_mae
    assert result.passed  # report: the judged groups decide
    assert result.details["not_judged"] == [
        {
            "attribute": TIER,
            "group": "premium",
            "n": premium.n,
            "lacks": f"{premium.n} rows < min_group_size 400",
        }
    ]
    _, _, rejected = judge(
        3, fairness={**FAIR["fairness"], "min_group_size": 400, "unjudged_groups": "reject"}
    )
    assert not rejected.passed and "customer_tier=premium not judged" in rejected.reasons[0]


def test_fewer_than_two_judged_groups_is_a_note_not_a_pass_of_the_ratio() -> None:
    minutes, champion, _, tiers = holdout(3)
    table = error_table(minutes, champion, {TIER: tiers}, min_group_size=10**6)
    assert table.mae_ratio == {TIER: None}
    p = policy(quality={"mae": {"max": 6.0}}, **FAIR)
    result = check_fairness(p, table)
    assert result.applied == 0
    assert (
        f"{TIER}: fewer than two groups large enough to judge the MAE ratio (worst group over best)"
        in (result.details["notes"])
    )


def test_a_perfect_group_against_an_imperfect_one_is_an_infinite_ratio() -> None:
    table = error_table([10.0, 10.0, 20.0, 20.0], [10.0, 10.0, 25.0, 15.0], {"g": ["a", "a", "b", "b"]}, 2)
    assert table.mae_ratio["g"] == math.inf


def test_the_verdict_and_the_card_show_the_mae_per_group() -> None:
    p, table, _ = judge(4, worse_for="new")
    verdict = decide(p, {"mae": 2.6, "rmse": 3.4}, None, table, None, None)
    assert not verdict.passed and "fairness" in verdict.why
    report = {
        "model_name": DELIVERY.model_name,
        "gated_at": "now",
        "candidate": {"version": "2", "run_id": "r"},
        "holdout": {
            "path": "h",
            "labelled_rows": 1800,
            "label": DELIVERY.label_column,
            "positive_rows": None,
        },
        "policy": p.model_dump(),
        "metrics": {
            "candidate": {"mae": 2.6, "rmse": 3.4},
            "champion": None,
            "higher_is_better": {"mae": False},
        },
        "fairness": table.to_dict(),
        "verdict": verdict.to_dict(),
    }
    card = render_model_card(report)
    assert "| attribute | group | n | MAE | champion MAE | judged |" in card
    assert f"- {TIER}: MAE ratio worst/best" in card and "positive" not in card.split("## Fairness")[0]


def test_fairness_bounds_of_the_other_task_are_refused() -> None:
    classifier_bounds = policy(quality={"mae": {"max": 6.0}}, fairness={"max_tpr_gap": 0.3})
    with pytest.raises(GatePolicyError, match="fairness.max_tpr_gap do not apply to the 'delivery' use case"):
        classifier_bounds.check_task("regression", "delivery")
    regressor_bounds = policy(fairness={"max_mae_ratio": 1.3})
    with pytest.raises(GatePolicyError, match="fairness.max_mae_ratio do not apply to the 'fraud' use case"):
        regressor_bounds.check_task("binary_classification", "fraud")
    ok = policy(quality={"mae": {"max": 6.0}}, **FAIR)
    assert ok.check_task("regression", "delivery") is ok


@pytest.mark.parametrize(
    ("section", "old", "new"),
    [
        ("holdout", "min_fraud_rows", "min_positive_rows"),
        ("quality.expected_cost", "missed_fraud_cost", "missed_positive_cost"),
    ],
)
def test_renamed_keys_are_refused_naming_the_new_key(section: str, old: str, new: str) -> None:
    data: dict[str, object] = {old: 5}
    for part in reversed(section.split(".")):
        data = {part: data}
    with pytest.raises(GatePolicyError, match=f"`{old}` was renamed `{new}`"):
        policy_from_dict(data)


def test_infra_probes_are_built_from_the_use_cases_event_columns() -> None:
    rows = days(3, 0, 1).head(2)
    event = {c: rows.iloc[0][c] for c in DELIVERY.event_columns}
    event = {
        k: (v.isoformat() if hasattr(v, "isoformat") else v.item() if hasattr(v, "item") else v)
        for k, v in event.items()
    }
    (probe,) = probe_requests([event], "7", DELIVERY)
    assert (
        probe[DELIVERY.id_column].endswith(event[DELIVERY.id_column])
        and probe[DELIVERY.id_column] != event[DELIVERY.id_column]
    )
    (unknown_name, (unknown,)), (sparse_name, (sparse,)) = _edge_cases(event, DELIVERY)
    assert (
        unknown_name == "unknown_unit" and unknown[DELIVERY.unit_column] == "restaurant_id_gate_probe_unknown"
    )
    assert sparse_name == "missing_optional_fields" and TIER not in sparse
    answer = {
        "predictions": [{DELIVERY.id_column: event[DELIVERY.id_column], "score": 31.5, "model_version": "7"}]
    }
    assert _check_predictions(
        "single", 200, answer, [event], "7", DELIVERY
    ).passed  # minutes, not a probability
    answer["predictions"][0]["score"] = float("nan")
    assert not _check_predictions("single", 200, answer, [event], "7", DELIVERY).passed
    fraud = load_use_case("fraud")
    fraud_event = {fraud.id_column: "t1"}
    bad = {"predictions": [{fraud.id_column: "t1", "score": 31.5, "model_version": "7"}]}
    checked = _check_predictions("single", 200, bad, [fraud_event], "7", fraud)
    assert not checked.passed and "not in [0, 1]" in checked.detail


@pytest.mark.parametrize("seed", SEEDS)
def test_a_worse_estimator_is_rejected_and_an_equal_one_passes_the_whole_gate(seed: int) -> None:
    from loopline.gating.metrics import quality_metrics

    minutes, champion, candidate, tiers = holdout(seed)
    p = policy(quality={"mae": {"max": 6.0, "max_regression": 0.25}, "rmse": {"max_regression": 0.5}}, **FAIR)
    champ = quality_metrics(minutes, champion, p, "regression")
    champ_table = error_table(minutes, champion, {TIER: tiers}, p.fairness.min_group_size)
    vs = Comparison("vs_champion", "1")
    equal = decide(
        p,
        quality_metrics(minutes, candidate, p, "regression"),
        champ,
        champ_table,
        None,
        None,
        champion_fairness=champ_table,
        comparison=vs,
    )
    assert equal.passed, equal.why
    later = candidate + 2.0  # two minutes late on every order
    worse = decide(
        p,
        quality_metrics(minutes, later, p, "regression"),
        champ,
        error_table(minutes, later, {TIER: tiers}, p.fairness.min_group_size),
        None,
        None,
        champion_fairness=champ_table,
        comparison=vs,
    )
    assert not worse.passed and any(r.startswith("quality: mae") for r in worse.reasons), worse.why


def test_the_use_cases_own_gate_policy_wins_over_the_platform_default(tmp_path: Path) -> None:
    from dataclasses import replace

    from loopline.config import Settings
    from loopline.gating.policy import load_policy

    root = Path(__file__).resolve().parents[3]
    config_dir = root / "include" / "config"
    platform = config_dir / "gate.yaml"
    assert (
        replace(DELIVERY, policies_dir=tmp_path).policy_file("gate", config_dir) == platform
    )  # none of its own
    (tmp_path / "gate.yaml").write_text("quality: {mae: {max: 6.0}}\nfairness: {max_mae_ratio: 1.25}\n")
    own = replace(DELIVERY, policies_dir=tmp_path).policy_file("gate", config_dir)
    assert own == tmp_path / "gate.yaml"
    assert load_policy(own).check_task("regression", "delivery").fairness.max_mae_ratio == 1.25
    assert Settings(use_case="fraud", project_dir=root).policy_file("gate").parent.name == "policies"
