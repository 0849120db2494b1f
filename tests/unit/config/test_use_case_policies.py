"""Each use case's policies: where they are read from, and that every one of them fits its task (a policy of
the other task's metrics is refused when loaded for a run, so a shipped one that does not fit would stop its
loop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.config import Settings
from loopline.config.drift_policy import load_drift_config
from loopline.config.use_case import available_use_cases, load_use_case
from loopline.deployment.policy import load_canary_policy
from loopline.gating.policy import load_policy
from loopline.training.config import check_task, load_config

KINDS = ("training", "gate", "canary", "canary.demo", "drift")


@pytest.mark.parametrize("name", available_use_cases())
def test_every_policy_a_use_case_runs_with_fits_its_task(name: str) -> None:
    use_case = load_use_case(name)
    settings = Settings(use_case=name)
    files = {kind: settings.policy_file(kind) for kind in KINDS}
    assert all(path.is_file() for path in files.values()), files
    check_task(load_config(files["training"], []), use_case)
    load_policy(files["gate"]).check_task(use_case.task, name)
    load_canary_policy(files["canary"]).check_task(use_case.task, name)
    load_canary_policy(files["canary.demo"]).check_task(use_case.task, name)
    load_drift_config(files["drift"])


def test_a_use_case_overrides_only_the_policies_it_ships(tmp_path: Path) -> None:
    delivery, fraud = load_use_case("delivery"), load_use_case("fraud")
    platform = Settings().config_dir
    assert delivery.policies_dir is not None
    for kind in KINDS:  # delivery ships all of its own
        assert delivery.policy_file(kind, platform) == delivery.policies_dir / f"{kind}.yaml"
    # fraud ships its training, gate and drift policies; its canary policies are the platform's defaults
    assert fraud.policy_file("training", platform).parent == fraud.policies_dir
    assert fraud.policy_file("gate", platform) == fraud.policies_dir / "gate.yaml"
    assert fraud.policy_file("drift", platform) == fraud.policies_dir / "drift.yaml"
    assert fraud.policy_file("canary", platform) == platform / "canary.yaml"


def test_fraud_gate_policy_is_refused_for_a_regressor() -> None:
    """Fraud's thresholds (PR-AUC, TPR gaps) cannot judge minutes: the gate says so instead of passing."""
    from loopline.gating.policy import GatePolicyError

    policy = load_policy(Settings(use_case="fraud").policy_file("gate"))
    with pytest.raises(GatePolicyError, match="do not apply to the 'delivery' use case"):
        policy.check_task("regression", "delivery")


def test_the_platform_defaults_name_no_use_case_and_pass_nothing_on_their_own() -> None:
    """include/config's gate and drift policies fit any use case (no columns, no quality bar of one problem);
    a candidate judged by the default gate alone is rejected, naming what to set."""
    from loopline.config.drift_policy import load_drift_config
    from loopline.gating.decide import decide

    platform = Settings().config_dir
    words = {w.lower() for name in available_use_cases() for w in _use_case_words(load_use_case(name))}
    for kind in ("gate", "drift", "canary"):
        text = (platform / f"{kind}.yaml").read_text()
        code = "\n".join(line.split("#")[0] for line in text.splitlines()).lower()
        assert not {w for w in words if w in code}, f"include/config/{kind}.yaml names a use case's columns"
    gate = load_policy(platform / "gate.yaml")
    for task in ("binary_classification", "regression"):
        gate.check_task(task, "any")
    assert gate.fairness.group_columns is None  # the use case's groups
    load_drift_config(platform / "drift.yaml")
    metrics = {"pr_auc": 0.9, "roc_auc": 0.95, "mae": 1.0}
    verdict = decide(gate, metrics, None, None, None, None)
    assert not verdict.passed
    assert "sets no quality threshold" in verdict.why and "gate.yaml" in verdict.why


def _use_case_words(use_case) -> set[str]:
    return {*use_case.event_columns, *use_case.label_columns, use_case.name}
