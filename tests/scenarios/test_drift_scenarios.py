"""Drift decisions on simulated worlds, end to end through the real monitor (``run_check``): the shipped
drift policy, a trained champion with its reference and gate baseline, served days in a real prediction
log, real label delays, the real history and retrain policy.

Every world first lives 30 days (a live issuer has history; a simulated one starts empty, and its 30-day
aggregates need a month to mean what they mean in production), then the champion is trained on the
labelled days behind the label frontier, gated, and serves from day 60.

* covariate world: three normal days, then the simulator's covariate drift (more online payments,
  higher amounts). Normal days request nothing; the drift requests a retrain; checked hourly through a
  drifted day (a drift storm), exactly one request.
* concept world: from day 60 fraud moves to scams the model cannot see ("only labels show it"). While the
  labels of the served days are missing, nothing is requested and the concept check says it is waiting;
  once they have matured, concept drift requests a retrain.

The worlds are chosen by seed and size below; ``LOOPLINE_SCENARIO_WORLDS="covariate:5:450,concept:7:550"``
runs others (the decisions must hold on worlds they were not written against).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from scenario_world import World, build_world, log_served, served_rows

from loopline.lineage import history
from loopline.monitoring.monitor import run_check
from loopline.usecases.fraud.simulator import Drift

DAYS, SERVE_FROM, WARMUP = 67, 60, 30
COVARIATE_FROM = SERVE_FROM + 3
DEFAULT_WORLDS = "covariate:11:400,concept:19:600"


def _worlds(kind: str) -> list[tuple[int, int]]:
    spec = os.environ.get("LOOPLINE_SCENARIO_WORLDS") or DEFAULT_WORLDS
    out = []
    for item in spec.split(","):
        name, seed, customers = item.split(":")
        if name == kind:
            out.append((int(seed), int(customers)))
    return out or [
        next((int(s), int(c)) for n, s, c in (i.split(":") for i in DEFAULT_WORLDS.split(",")) if n == kind)
    ]


def served_world(root: Path, seed: int, customers: int, drift: Drift) -> World:
    world = build_world(
        root,
        seed=seed,
        customers=customers,
        days=DAYS,
        serve_from=SERVE_FROM,
        warmup_days=WARMUP,
        drift=drift,
    )
    log_served(world, served_rows(world, SERVE_FROM, DAYS - 1))
    return world


@pytest.fixture(scope="module", params=_worlds("covariate"), ids=lambda p: f"seed{p[0]}-{p[1]}")
def covariate_world(request, tmp_path_factory) -> World:
    seed, customers = request.param
    return served_world(
        tmp_path_factory.mktemp("covariate"), seed, customers, Drift("covariate", COVARIATE_FROM)
    )


@pytest.fixture(scope="module", params=_worlds("concept"), ids=lambda p: f"seed{p[0]}-{p[1]}")
def concept_world(request, tmp_path_factory) -> World:
    seed, customers = request.param
    return served_world(tmp_path_factory.mktemp("concept"), seed, customers, Drift("concept", SERVE_FROM))


def check(world: World, at) -> object:
    return run_check(world.settings, training_running=False, now=at)


def kinds(world: World) -> list[str]:
    """The retrain decisions in the world's history (requests, suppressions)."""
    return [e.kind for e in history.read(world.settings, kinds={"retrain_requested", "retrain_suppressed"})]


@pytest.mark.integration
def test_covariate_world_normal_days_pass_and_the_drift_storm_requests_one_retrain(covariate_world) -> None:
    world = covariate_world
    for day in range(SERVE_FROM, COVARIATE_FROM):
        result = check(world, world.day_start(day + 1))
        assert not result.retrain and result.status == "ok", result.summary
    assert kinds(world) == []
    verdict_days = sorted((world.settings.state.reports / "drift").iterdir())
    assert '"calibrated": true' in (verdict_days[-1] / "verdict.json").read_text()

    # The drift ramps up (today's amounts at once, the 7- and 30-day aggregates over days): checked at
    # the end of each drifted day, it requests a retrain within its first three days.
    requested_at = None
    for day in range(COVARIATE_FROM, COVARIATE_FROM + 3):
        at = world.day_start(day + 1)
        if check(world, at).retrain:
            requested_at = at
            break
    assert requested_at is not None, [
        e.reason for e in history.read(world.settings, kinds={"drift_checked"})
    ][-3:]
    requested = history.read(world.settings, kinds={"retrain_requested"})
    assert len(requested) == 1 and "dataset_drift" in requested[0].reason
    assert {"amount", "cust_amount_mean_24h"} & set(requested[0].details["drifted_columns"])
    # The storm goes on, checked every two hours: no second request, every drift verdict suppressed by
    # the first request's cooldown.
    later = [check(world, requested_at + timedelta(hours=h)) for h in range(2, 12, 2)]
    assert not any(r.retrain for r in later)
    drifted = [r for r in later if r.status == "drift"]
    assert drifted and all("cooldown" in r.reason for r in drifted), [r.summary for r in later]
    assert kinds(world) == ["retrain_requested"] + ["retrain_suppressed"] * len(drifted)


@pytest.mark.integration
def test_concept_world_waits_for_labels_then_requests_a_retrain(concept_world) -> None:
    world = concept_world
    for day in (SERVE_FROM + 1, SERVE_FROM + 4, DAYS):
        result = check(world, world.day_start(day))
        assert not result.retrain, result.summary
        assert "not judged: waiting for labels" in result.summary
    assert kinds(world) == []
    # Two weeks after the served days began, their genuine labels have matured: the concept check judges
    # them against the champion's gate holdout.
    late = check(world, world.day_start(SERVE_FROM + 16))
    assert late.retrain and late.reason == "concept_drift", late.summary
    assert "concept drift: PR-AUC" in late.summary and "sure it dropped" in late.summary
