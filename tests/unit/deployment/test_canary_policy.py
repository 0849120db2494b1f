"""The canary policy: the shipped YAML loads, bad fields are named, overrides speed up a bake."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.deployment.policy import CanaryPolicyError, load_canary_policy

REPO_CONFIG = Path(__file__).resolve().parents[3] / "include" / "config"


def test_shipped_policy_loads_with_a_ramp_ending_at_full_traffic() -> None:
    policy = load_canary_policy(config_dir=REPO_CONFIG)
    assert policy.steps[0] <= 0.1 and policy.steps[-1] == 1.0
    assert policy.approval.required is False
    assert policy.bake.max_seconds >= policy.bake.min_seconds


@pytest.mark.parametrize(("text", "field"), [
    ("steps: [0.5, 0.25]", "steps"),
    ("steps: [0, 1]", "steps"),
    ("steps: []", "steps"),
    ("steps: [1.0]", "shadow"),
    ("bake: {min_seconds: 100, max_seconds: 10}", "max_seconds"),
    ("analysis: {errors: {max_rate: 2}}", "analysis.errors.max_rate"),
    ("surprise: 1", "surprise"),
])
def test_invalid_policy_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(text)
    with pytest.raises(CanaryPolicyError, match=field.split(".")[-1]):
        load_canary_policy(path)


def test_missing_explicit_file_is_an_error_but_missing_default_means_defaults(tmp_path: Path) -> None:
    with pytest.raises(CanaryPolicyError, match="not found"):
        load_canary_policy(tmp_path / "nope.yaml")
    assert load_canary_policy(config_dir=tmp_path).steps == (0.05, 0.25, 0.5, 1.0)


def test_overrides_shorten_the_bake_and_every_minimum_sample() -> None:
    policy = load_canary_policy(config_dir=REPO_CONFIG).with_overrides(bake_seconds=2, min_requests=7)
    assert policy.bake.min_seconds == 2 and policy.bake.min_requests == 7
    assert {policy.analysis.errors.min_requests, policy.analysis.latency.min_requests,
            policy.analysis.score_shift.min_requests} == {7}
    with pytest.raises(CanaryPolicyError, match="min_requests"):
        policy.with_overrides(min_requests=0)
