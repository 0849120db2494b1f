"""The canary end to end, through the real serving app (uvicorn on a free port, its real
RegistryReconciler) and a real SQLite MLflow registry: a better challenger is promoted, a broken, a slow
and a worse one are rolled back; no client request fails during promotion, rollback or a production
rollback under constant load; every decision lands in the history."""

from __future__ import annotations

import time

import httpx
import pytest
from canary_testkit import Load, register_faulty, reset
from serving_testkit import MODEL, quick_config, running_server, wait_until

from loopline.deployment.actions import (
    TAG_CANARY,
    TAG_REASON,
    read_state,
    rollback_production,
)
from loopline.deployment.canary import FIRST_MODEL_REASON, begin, run_canary
from loopline.deployment.policy import CanaryPolicy
from loopline.lineage import history
from loopline.serving.app import create_app
from loopline.serving.registry import RegistryReconciler


def fast_policy(**analysis) -> CanaryPolicy:
    base = CanaryPolicy().model_dump()
    base["steps"] = [0.5, 1.0]
    base["bake"] = {"min_requests": 30, "min_seconds": 0.5, "max_seconds": 40, "poll_seconds": 0.2}
    # Same-model noise on a shared 2-core machine: loose relative limits; the faults below are far outside.
    base["analysis"]["latency"].update(slack_ms=20.0, max_p95_ms=100.0)
    # ~120 sticky customers: PSI of the same model over 10-60 of them is noise up to ~1; the shifted one ~4.
    base["analysis"]["score_shift"].update(max_psi=2.0, min_units=10)
    for check in ("errors", "latency", "score_shift"):
        base["analysis"][check]["min_requests"] = 30
    for check, values in analysis.items():
        base["analysis"][check].update(values)
    return CanaryPolicy.model_validate(base)


@pytest.fixture(scope="module")
def faulty(serving_world, registry) -> dict[str, str]:
    base = serving_world.versions[0]
    return {
        fault: register_faulty(serving_world.tracking_uri, base, fault)
        for fault in ("raise", "slow", "shift")
    }


@pytest.fixture(scope="module")
def server(serving_world, registry):
    config = quick_config()
    app = create_app(
        serving_world.settings,
        config,
        source_factory=lambda engine: RegistryReconciler(engine, serving_world.settings, config),
    )
    with running_server(app) as url:
        yield url


@pytest.fixture
def deployed(serving_world, registry, server):
    """Champion = version 1 serving; the test sets the challenger."""
    reset(registry)
    registry.set_registered_model_alias(MODEL, "champion", serving_world.versions[0])
    wait_until(lambda: champion_served(server) == serving_world.versions[0], what="champion 1 serving")
    yield registry
    reset(registry)


def champion_served(url: str) -> str | None:
    response = httpx.get(f"{url}/readyz", timeout=5)
    return ((response.json().get("deployment") or {}).get("champion") or {}).get("version")


def challenger_served(url: str) -> str | None:
    return (
        (httpx.get(f"{url}/readyz", timeout=5).json().get("deployment") or {}).get("challenger") or {}
    ).get("version")


def events_since(settings, first_id: int) -> list[history.Event]:
    return [e for e in history.read(settings) if (e.id or 0) > first_id]


def last_event_id(settings) -> int:
    events = history.read(settings, limit=1)
    return events[0].id if events else 0


def canary(serving_world, server, deployed, challenger: str, policy: CanaryPolicy, clients: int = 2):
    deployed.set_registered_model_alias(MODEL, "challenger", challenger)
    wait_until(
        lambda: challenger_served(server) == challenger, timeout=60, what=f"challenger {challenger} loaded"
    )
    with Load(server, serving_world.transactions, clients=clients) as load:
        time.sleep(0.3)
        outcome = run_canary(serving_world.settings, policy, challenger, metrics_url=f"{server}/metrics")
        time.sleep(0.6)  # a few reconcile polls after the decision, still under load
    return outcome, load


def test_first_model_is_promoted_directly_with_the_reason(serving_world, registry) -> None:
    reset(registry)
    first = last_event_id(serving_world.settings)
    registry.set_registered_model_alias(MODEL, "challenger", serving_world.versions[0])
    start = begin(serving_world.settings, fast_policy())
    assert start.action == "promoted" and start.plan is None
    state = read_state(serving_world.settings)
    assert (state.champion, state.challenger) == (serving_world.versions[0], None)
    [event] = [e for e in events_since(serving_world.settings, first) if e.kind == "promoted"]
    assert event.reason == FIRST_MODEL_REASON and event.version == serving_world.versions[0]
    reset(registry)


def test_a_better_challenger_is_promoted_and_production_rolls_back_in_one_step(
    serving_world, server, deployed
) -> None:
    champion, challenger = serving_world.versions
    first = last_event_id(serving_world.settings)
    outcome, load = canary(serving_world, server, deployed, challenger, fast_policy())
    assert outcome.action == "promoted", outcome.verdicts[-1]["why"] if outcome.verdicts else outcome.reason
    assert len(outcome.verdicts) == 2 and all(v["passed"] for v in outcome.verdicts)
    assert not load.failed(), f"{len(load.failed())} of {len(load.outcomes)} requests failed during promotion"
    assert ("challenger", challenger) in load.versions()
    state = read_state(serving_world.settings)
    assert (state.champion, state.challenger, state.previous_champion, state.share) == (
        challenger,
        None,
        champion,
        None,
    )
    assert deployed.get_model_version(MODEL, challenger).tags[TAG_CANARY] == "promoted"
    wait_until(lambda: champion_served(server) == challenger, what="the promoted champion serving")
    kinds = [e.kind for e in events_since(serving_world.settings, first)]
    assert kinds == ["canary_started", "traffic_shifted", "traffic_shifted", "promoted"]

    # Production one step back, under load: the previous champion serves again, no request fails.
    with Load(server, serving_world.transactions) as load:
        time.sleep(0.3)
        demoted, restored = rollback_production(serving_world.settings, "test: the new champion misbehaves")
        wait_until(lambda: champion_served(server) == champion, what="the previous champion back")
        time.sleep(0.3)
    assert (demoted, restored) == (challenger, champion)
    assert not load.failed() and load.versions()[("champion", champion)] > 0
    state = read_state(serving_world.settings)
    assert (state.champion, state.previous_champion) == (champion, None)
    assert deployed.get_model_version(MODEL, challenger).tags[TAG_CANARY] == "rolled_back"
    last = history.read(serving_world.settings, limit=1)[0]
    assert (last.kind, last.version, last.details["scope"]) == ("rolled_back", challenger, "production")


def assert_rolled_back(serving_world, deployed, outcome, challenger: str, check: str) -> None:
    assert outcome.action == "rolled_back", [v["why"] for v in outcome.verdicts]
    failed = {c["name"] for c in outcome.verdicts[-1]["checks"] if c["status"] == "fail"}
    assert check in failed, outcome.verdicts[-1]["why"]
    state = read_state(serving_world.settings)
    assert (state.champion, state.challenger) == (serving_world.versions[0], None)
    assert state.share is None
    tags = deployed.get_model_version(MODEL, challenger).tags
    assert tags[TAG_CANARY] == "rolled_back" and check in tags[TAG_REASON]
    last = history.read(serving_world.settings, limit=1)[0]
    assert (last.kind, last.version) == ("rolled_back", challenger)


def test_a_broken_challenger_is_rolled_back_on_errors(serving_world, server, deployed, faulty) -> None:
    outcome, load = canary(serving_world, server, deployed, faulty["raise"], fast_policy())
    assert_rolled_back(serving_world, deployed, outcome, faulty["raise"], "errors")
    errors = next(c for c in outcome.verdicts[-1]["checks"] if c["name"] == "errors")["values"]
    assert errors["challenger_rate"] > 0.05 and errors["champion_rate"] == 0
    # Only the challenger's requests failed, and none after the rollback took effect.
    assert load.failed() and all(status == 500 for status, _, _ in load.failed())
    with Load(server, serving_world.transactions) as after:
        time.sleep(1.0)
    assert not after.failed() and {v for v, _ in after.versions()} == {"champion"}


def test_a_slow_challenger_is_rolled_back_on_latency(serving_world, server, deployed, faulty) -> None:
    outcome, load = canary(serving_world, server, deployed, faulty["slow"], fast_policy(), clients=3)
    assert_rolled_back(serving_world, deployed, outcome, faulty["slow"], "latency")
    assert outcome.verdicts[0]["checks"][1]["values"]["challenger_p95_ms"] > 100
    assert not load.failed(), "slow is not broken: no request may fail, during the canary or the rollback"


def test_a_worse_challenger_is_rolled_back_on_score_shift_without_failed_requests(
    serving_world, server, deployed, faulty
) -> None:
    outcome, load = canary(serving_world, server, deployed, faulty["shift"], fast_policy())
    assert_rolled_back(serving_world, deployed, outcome, faulty["shift"], "score_shift")
    assert not load.failed(), f"{len(load.failed())} requests failed during the rollback"
    assert ("challenger", faulty["shift"]) in load.versions()


def test_loopline_traffic_replays_curated_transactions_open_loop(
    serving_world, server, deployed, monkeypatch, capsys
) -> None:
    import argparse
    import json

    from loopline.cli.serving import cmd_traffic

    for key, value in serving_world.env().items():
        monkeypatch.setenv(key, value)
    code = cmd_traffic(
        argparse.Namespace(rps=40.0, duration=1.5, url=server, batch=2, recorded=False, json=True)
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and report["sent"] == 60 and report["ok"] == 60 and report["errors"] == {}
    assert report["variants"] == {f"champion:{serving_world.versions[0]}": 120}  # 2 transactions a request
    assert 20 < report["achieved_rps"] <= 41 and report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]


def test_the_plan_carries_the_score_shift_the_gate_saw_between_the_two_versions(
    serving_world, registry, monkeypatch
) -> None:
    import numpy as np
    import pandas as pd

    from loopline.deployment.canary import CanaryPlan, Phase, _holdout_psi
    from loopline.gating import gate

    champion, challenger = serving_world.versions
    policy = fast_policy()
    assert _holdout_psi(serving_world.settings, policy, challenger, champion) is None, "not gated: not known"
    # What the gate logged for the challenger (the round trip through MLflow: test_gate_run).
    scores = np.random.default_rng(0).beta(1, 12, 500)
    holdout = pd.DataFrame({"score": scores + 0.1, "champion_score": scores, "champion_version": champion})
    asked = []
    monkeypatch.setattr(
        gate,
        "read_holdout_scores",
        lambda uri, model, version: asked.append((model, version)) or ("v", holdout),
    )
    shift = _holdout_psi(serving_world.settings, policy, challenger, champion)
    assert asked == [(MODEL, challenger)] and shift is not None and shift > 0.25
    assert _holdout_psi(serving_world.settings, policy, challenger, "99") is None, "gated against another"
    plan = CanaryPlan(challenger, champion, (Phase(0.25, "live"),), "http://x/metrics", holdout_psi=shift)
    assert CanaryPlan.from_dict(plan.to_dict()).holdout_psi == shift
