"""A challenger broken in serving — it cannot load, or it fails every request it is routed — is rolled back
at the next bake poll with that reason, not after ``bake.max_seconds`` as "not enough traffic": the pure
decision (``check_health``, ``analyse``) and the bake's read of a real prediction log and a real /metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from canary_testkit import Replica

from loopline.config import Settings
from loopline.deployment.analysis import ServingHealth, VariantWindow, analyse, check_health
from loopline.deployment.canary import CanaryPlan, Phase, StepState, bake_progress, judge_step
from loopline.deployment.policy import CanaryPolicy, CanaryPolicyError, load_canary_policy
from loopline.deployment.windows import ErrorSource
from loopline.serving.prediction_log import LoggedPrediction, PredictionLog

CONFIG_DIR = Path(__file__).resolve().parents[3] / "include" / "config"
LOAD_ERROR = (
    "cannot load models:/fraud_detector/2 from sqlite:///mlflow.db: No such file or directory: 'MLmodel'"
)
SCORE_ERROR = "ValueError('injected fault: this model cannot score any amount with cents')"


def policy(**health: int) -> CanaryPolicy:
    data = CanaryPolicy().model_dump()
    data["analysis"]["health"].update(health)
    return CanaryPolicy.model_validate(data)


def seen(**fields) -> ServingHealth:
    """The challenger's health in a step: by default it answered some requests and nothing failed."""
    return ServingHealth(
        **{
            "version": "7",
            "answered": 50,
            "failed": 0,
            "load_failures": 0,
            "champion_answered": 500,
            "champion_failed": 0,
            **fields,
        }
    )


# --- The pure decision --------------------------------------------------------------------------------------


@pytest.mark.parametrize("needed", [1, 2, 5])
def test_a_challenger_that_keeps_failing_to_load_fails_at_the_policys_count(needed: int) -> None:
    rule = policy(min_load_failures=needed)
    short = check_health(rule, seen(answered=0, load_failures=needed - 1, load_error=LOAD_ERROR))
    assert short.status == "pass" and not short.blocks
    broken = check_health(rule, seen(answered=0, load_failures=needed, load_error=LOAD_ERROR))
    assert broken.status == "fail"
    assert broken.reason.startswith(
        f"challenger v7 cannot load in serving: {LOAD_ERROR} ({needed} failed load"
    )
    assert broken.values["load_failures"] == needed and broken.values["answered"] == 0


def test_no_traffic_yet_is_waiting_not_broken() -> None:
    idle = seen(answered=0, failed=0, load_failures=0, champion_answered=0)
    checked = check_health(policy(), idle)
    assert checked.status == "pass" and "not (yet) broken" in checked.reason
    verdict = analyse(policy(), VariantWindow("1"), VariantWindow("7"), health=idle)
    assert not verdict.passed and verdict.not_enough_traffic and verdict.why.startswith("not enough traffic")


def test_a_challenger_that_answers_on_some_replica_is_left_to_the_other_checks() -> None:
    # One replica cannot load it, another serves it: its traffic there is judged like any other.
    checked = check_health(policy(), seen(answered=3, load_failures=40, load_error=LOAD_ERROR))
    assert checked.status == "pass"
    checked = check_health(policy(), seen(answered=1, failed=500, request_error=SCORE_ERROR))
    assert checked.status == "pass"


@pytest.mark.parametrize("needed", [1, 10, 30])
def test_failing_every_request_fails_naming_the_count_and_the_first_error(needed: int) -> None:
    rule = policy(min_failed_requests=needed)
    assert check_health(rule, seen(answered=0, failed=needed - 1, request_error=SCORE_ERROR)).status == "pass"
    broken = check_health(rule, seen(answered=0, failed=needed + 2, request_error=SCORE_ERROR))
    assert broken.status == "fail"
    assert broken.reason.startswith(
        f"challenger v7 failed every one of its {needed + 2} requests: {SCORE_ERROR}"
    )


def test_a_shared_outage_is_not_the_challengers_failure() -> None:
    # The feature store is down: the champion fails (nearly) everything too.
    outage = seen(answered=0, failed=40, champion_answered=2, champion_failed=400, request_error=SCORE_ERROR)
    checked = check_health(policy(), outage)
    assert checked.status == "skipped" and "shared outage" in checked.reason
    # The champion failing a little (within the errors check's limit) leaves the challenger's 100 % its own.
    own = seen(answered=0, failed=40, champion_answered=500, champion_failed=2, request_error=SCORE_ERROR)
    assert check_health(policy(), own).status == "fail"


@pytest.mark.parametrize(
    "unknown",
    [
        {"failed": None, "load_failures": None},
        {"load_failures": None},
        {"failed": 40, "champion_failed": None},
    ],
)
def test_counts_that_cannot_be_read_never_promote(unknown: dict) -> None:
    health = seen(answered=0, **{"failed": 0, **unknown})
    checked = check_health(policy(), health)
    assert checked.status == "skipped" and not checked.blocks
    champion = VariantWindow(
        "1", scores=(0.1,) * 300, latencies_ms=(1.0,) * 300, errors=health.champion_failed
    )
    verdict = analyse(policy(), champion, VariantWindow("7", errors=health.failed), health=health)
    assert not verdict.passed, verdict.why


def test_a_broken_verdict_says_what_was_seen_and_judges_nothing_else() -> None:
    health = seen(answered=0, failed=0, load_failures=3, load_error=LOAD_ERROR)
    verdict = analyse(
        policy(),
        VariantWindow("1", scores=(0.1,) * 300, latencies_ms=(1.0,) * 300),
        VariantWindow("7"),
        health=health,
    )
    assert not verdict.passed and not verdict.not_enough_traffic
    assert verdict.why == f"health: {check_health(policy(), health).reason}"
    statuses = {c.name: c.status for c in verdict.checks}
    assert statuses == {
        "errors": "skipped",
        "latency": "skipped",
        "score_shift": "skipped",
        "labelled": "skipped",
        "health": "fail",
    }
    assert json.loads(json.dumps(verdict.to_dict()))["why"] == verdict.why  # recorded as tags and history


def test_the_shipped_policy_sets_the_health_rule_and_bad_values_name_the_field(tmp_path: Path) -> None:
    shipped = load_canary_policy(CONFIG_DIR / "canary.yaml")
    assert shipped.analysis.health.min_load_failures >= 2  # one failed attempt may be a passing hiccup
    assert shipped.analysis.health.min_failed_requests <= shipped.bake.min_requests
    bad = tmp_path / "canary.yaml"
    bad.write_text("analysis:\n  health:\n    min_load_failures: 0\n")
    with pytest.raises(CanaryPolicyError, match="min_load_failures"):
        load_canary_policy(bad)


# --- The bake: a real prediction log and a real /metrics -----------------------------------------------------


def rows(n: int, ts: float, variant: str, version: str) -> list[LoggedPrediction]:
    return [
        LoggedPrediction(
            request_id=f"{variant}{i}",
            ts=ts,
            transaction_id=f"{variant}-tx{i}",
            customer_id=f"c{i}",
            inputs={},
            features={},
            score=0.1,
            decision=False,
            variant=variant,
            model_version=version,
            latency_ms=1.0,
        )
        for i in range(n)
    ]


@pytest.fixture
def replica() -> Iterator[Replica]:
    started = Replica()
    yield started
    started.stop()


@pytest.fixture
def baking(tmp_path: Path, replica: Replica):
    """The shipped policy (bake.min_seconds 300, max_seconds 3600), a prediction log, and step 1 of a canary
    of version 2 against champion 1 whose errors are counted from ``replica``'s /metrics."""
    settings = Settings(state_dir=tmp_path)
    log = PredictionLog(settings.state.prediction_log)
    source = ErrorSource(metrics_urls=(replica.url,))
    plan = CanaryPlan(
        "2",
        "1",
        (Phase(0.05, "live"), Phase(1.0, "live")),
        replica.url,
        started_at=time.time() - 1,
        errors_at_start=source.mark(),
        errors_from=source,
    )
    replica.metrics.load_failed("challenger", "2", "failed before the step: not this step's")
    step = StepState(0, time.time(), source.mark())
    yield settings, log, plan, step, load_canary_policy(CONFIG_DIR / "canary.yaml")
    log.close()


def test_the_bake_ends_at_the_next_poll_when_the_challenger_cannot_load(baking, replica: Replica) -> None:
    settings, log, plan, step, shipped = baking
    log.append(rows(5, step.started_at + 0.1, "champion", "1"))
    replica.metrics.load_failed("challenger", "2", LOAD_ERROR)
    waiting = bake_progress(settings, shipped, plan, step, now=step.started_at + 1)
    assert not waiting.done and waiting.broken == ""  # one failed attempt: maybe a hiccup, the retry decides
    replica.metrics.load_failed("challenger", "2", LOAD_ERROR)
    progress = bake_progress(settings, shipped, plan, step, now=step.started_at + 2)
    assert progress.done and not progress.timed_out and progress.elapsed_s < shipped.bake.min_seconds
    assert progress.broken.startswith("challenger v2 cannot load in serving: failed before the step")
    assert "2 failed load attempts" in progress.broken  # the attempt before the step is not counted
    verdict = judge_step(settings, shipped, plan, step)
    assert not verdict.passed and verdict.why.startswith("health: challenger v2 cannot load in serving: ")
    health = next(c for c in verdict.checks if c.name == "health")
    assert (health.values["answered"], health.values["load_failures"]) == (0, 2)


def test_the_bake_ends_at_the_next_poll_when_the_challenger_fails_every_request(
    baking, replica: Replica
) -> None:
    settings, log, plan, step, shipped = baking
    log.append(rows(40, step.started_at + 0.1, "champion", "1"))
    replica.metrics.scoring_failed(
        "challenger", "2", shipped.analysis.health.min_failed_requests - 1, SCORE_ERROR
    )
    assert not bake_progress(settings, shipped, plan, step, now=step.started_at + 1).done
    replica.metrics.scoring_failed("challenger", "2", 3, "a later error")
    progress = bake_progress(settings, shipped, plan, step, now=step.started_at + 2)
    failed = shipped.analysis.health.min_failed_requests + 2
    assert progress.done and not progress.timed_out and progress.requests["challenger"] == failed
    assert progress.broken.startswith(
        f"challenger v2 failed every one of its {failed} requests: {SCORE_ERROR}"
    )
    assert judge_step(settings, shipped, plan, step).why.startswith(
        f"health: {progress.broken.split(' (')[0]}"
    )


def test_a_healthy_challenger_without_traffic_keeps_baking(baking, replica: Replica) -> None:
    settings, log, plan, step, shipped = baking
    progress = bake_progress(settings, shipped, plan, step, now=step.started_at + 1)
    assert (
        not progress.done and progress.broken == "" and progress.requests == {"champion": 0, "challenger": 0}
    )
    log.append(
        rows(3, step.started_at + 0.1, "challenger", "2")
    )  # it answers: failed loads elsewhere don't matter
    for _ in range(5):
        replica.metrics.load_failed("challenger", "2", LOAD_ERROR)
    assert not bake_progress(settings, shipped, plan, step, now=step.started_at + 2).done


def test_unreadable_counters_never_end_the_bake_early_nor_promote(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    log = PredictionLog(settings.state.prediction_log)
    source = ErrorSource(metrics_urls=("http://127.0.0.1:9/metrics",))  # the discard port: nothing listens
    plan = CanaryPlan(
        "2",
        "1",
        (Phase(0.05, "live"), Phase(1.0, "live")),
        source.metrics_urls[0],
        started_at=time.time() - 1,
        errors_from=source,
    )
    shipped = load_canary_policy(CONFIG_DIR / "canary.yaml")
    step = StepState(0, time.time(), source.mark())
    log.append(rows(300, step.started_at + 0.1, "champion", "1"))
    assert not bake_progress(settings, shipped, plan, step, now=step.started_at + 1).done
    timed_out = bake_progress(settings, shipped, plan, step, now=step.started_at + shipped.bake.max_seconds)
    assert timed_out.done and timed_out.timed_out and timed_out.broken == ""
    verdict = judge_step(settings, shipped, plan, step, until=step.started_at + 2)
    assert not verdict.passed
    assert {c.name: c.status for c in verdict.checks}["health"] == "skipped"
    log.close()
