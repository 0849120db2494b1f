"""The canary policy: the shipped YAML loads, bad fields are named, overrides speed up a bake, and where
failed predictions are counted (policy, settings, explicit URLs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.config import Settings
from loopline.deployment.canary import error_source
from loopline.deployment.policy import CanaryPolicy, CanaryPolicyError, load_canary_policy
from loopline.deployment.windows import ErrorSource

REPO_CONFIG = Path(__file__).resolve().parents[3] / "include" / "config"


def test_shipped_policy_loads_with_a_ramp_ending_at_full_traffic() -> None:
    policy = load_canary_policy(REPO_CONFIG / "canary.yaml")
    assert policy.steps[0] <= 0.1 and policy.steps[-1] == 1.0
    assert policy.approval.required is False
    assert policy.bake.max_seconds >= policy.bake.min_seconds


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("steps: [0.5, 0.25]", "steps"),
        ("steps: [0, 1]", "steps"),
        ("steps: []", "steps"),
        ("steps: [1.0]", "shadow"),
        ("bake: {min_seconds: 100, max_seconds: 10}", "max_seconds"),
        ("analysis: {errors: {max_rate: 2}}", "analysis.errors.max_rate"),
        ("surprise: 1", "surprise"),
    ],
)
def test_invalid_policy_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(text)
    with pytest.raises(CanaryPolicyError, match=field.split(".")[-1]):
        load_canary_policy(path)


def test_a_renamed_key_is_refused_naming_the_new_one(tmp_path: Path) -> None:
    """``score_shift.min_customers`` became ``min_units`` (any use case's unit): an old file fails loudly
    rather than silently judging with the default minimum."""
    path = tmp_path / "canary.yaml"
    path.write_text("analysis: {score_shift: {min_customers: 10}}")
    with pytest.raises(CanaryPolicyError, match="`min_customers` was renamed `min_units`"):
        load_canary_policy(path)
    path.write_text("analysis: {score_shift: {min_units: 10}}")
    assert load_canary_policy(path).analysis.score_shift.min_units == 10


def test_missing_explicit_file_is_an_error_but_missing_default_means_defaults(tmp_path: Path) -> None:
    with pytest.raises(CanaryPolicyError, match="not found"):
        load_canary_policy(tmp_path / "nope.yaml")
    # No canary.yaml where the settings look (a use case without its own, a project without include/config).
    bare = Settings(use_case="fraud", project_dir=tmp_path)
    assert load_canary_policy(settings=bare).steps == (0.05, 0.25, 0.5, 1.0)


def test_overrides_shorten_the_bake_and_every_minimum_sample() -> None:
    policy = load_canary_policy(REPO_CONFIG / "canary.yaml").with_overrides(bake_seconds=2, min_requests=7)
    assert policy.bake.min_seconds == 2 and policy.bake.min_requests == 7
    assert {
        policy.analysis.errors.min_requests,
        policy.analysis.latency.min_requests,
        policy.analysis.score_shift.min_requests,
    } == {7}
    with pytest.raises(CanaryPolicyError, match="min_requests"):
        policy.with_overrides(min_requests=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("analysis: {errors: {source: {metrics_urls: ['serving-a:8000/metrics']}}}", "must be an http"),
        (
            "analysis: {errors: {source: {metrics_urls: ['http://a/metrics', 'http://a/metrics']}}}",
            "listed twice",
        ),
        ("analysis: {errors: {source: {prometheus_selector: 'job=serving'}}}", "label matchers"),
        (
            "analysis: {errors: {source: {metrics_urls: ['http://a/metrics'], prometheus_selector: 'job=\"x\"'}}}",
            "remove one of the two",
        ),
        ("analysis: {errors: {source: {prometheus_url: 'http://p:9090'}}}", "prometheus_url"),
    ],
)
def test_invalid_error_source_says_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(text)
    with pytest.raises(CanaryPolicyError, match=message) as error:
        load_canary_policy(path)
    assert "analysis.errors.source" in str(error.value)


def test_where_errors_are_counted(tmp_path: Path) -> None:
    """The URL(s) given win, then the policy's metrics_urls, then LOOPLINE_PROMETHEUS_URL, then the
    serving URL's own /metrics; a bad Prometheus URL is named as such."""
    policy = load_canary_policy(REPO_CONFIG / "canary.yaml")
    plain = Settings(state_dir=tmp_path, serving_url="http://serving:8000")
    with_prometheus = Settings(
        state_dir=tmp_path, serving_url="http://serving:8000", prometheus_url="http://prometheus:9090"
    )
    assert error_source(plain, policy) == ErrorSource(metrics_urls=("http://serving:8000/metrics",))
    assert error_source(plain.model_copy(update={"prometheus_url": "  "}), policy) == error_source(
        plain, policy
    )
    assert error_source(with_prometheus, policy) == ErrorSource(prometheus_url="http://prometheus:9090")
    assert error_source(with_prometheus, policy, "http://one:8000/metrics") == ErrorSource(
        metrics_urls=("http://one:8000/metrics",)
    )
    assert error_source(with_prometheus, policy, ["http://a/metrics", "http://b/metrics"]).metrics_urls == (
        "http://a/metrics",
        "http://b/metrics",
    )
    data = policy.model_dump()
    data["analysis"]["errors"]["source"] = {"metrics_urls": ["http://a/metrics", "http://b/metrics"]}
    fixed_replicas = CanaryPolicy.model_validate(data)
    assert error_source(with_prometheus, fixed_replicas).metrics_urls == (
        "http://a/metrics",
        "http://b/metrics",
    )
    data["analysis"]["errors"]["source"] = {"prometheus_selector": 'job="loopline-serving"'}
    assert (
        error_source(with_prometheus, CanaryPolicy.model_validate(data)).selector == 'job="loopline-serving"'
    )
    with pytest.raises(CanaryPolicyError, match="LOOPLINE_PROMETHEUS_URL.*http"):
        error_source(plain.model_copy(update={"prometheus_url": "prometheus:9090"}), policy)
