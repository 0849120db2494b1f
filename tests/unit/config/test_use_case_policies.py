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
    # fraud ships its training policy; its gate, canary and drift policies are the platform's defaults
    assert fraud.policy_file("training", platform).parent == fraud.policies_dir
    assert fraud.policy_file("gate", platform) == platform / "gate.yaml"
    assert fraud.policy_file("drift", platform) == platform / "drift.yaml"


def test_the_platform_gate_policy_is_refused_for_a_regressor() -> None:
    """Fraud's thresholds (PR-AUC, TPR gaps) cannot judge minutes: the gate says so instead of passing."""
    from loopline.gating.policy import GatePolicyError

    policy = load_policy(Settings().config_dir / "gate.yaml")
    with pytest.raises(GatePolicyError, match="do not apply to the 'delivery' use case"):
        policy.check_task("regression", "delivery")
