"""The delivery use case's decisions on simulated cities: drift end to end through the real monitor
(``run_check``) with the shipped delivery drift policy, a trained and gated champion, served days in a real
prediction log and the minutes arriving at hand-over — the regressor's counterpart of
``test_drift_scenarios``.

Each city lives 30 days: the champion trains on the four weeks before its gate holdout, so it has seen a few
rainy days, as a delivery model in production has (one sky per day: 12 % of days rain, 3 % snow). It serves
from day 30, and from day 33 couriers are slower in the old town and the harbour: the same orders take
longer, which only the minutes show. Normal served days, rainy ones included, request nothing (the concept
check weighs the day-to-day spread of the champion's error, ``monitoring.concept.day_spread``); the slower
couriers request a retrain for concept drift (the served MAE behind the label frontier against the gate
holdout's) within two days, and not for data drift (the orders look the same).

A city whose normal served days bring a sky the champion never trained on (its rainy days all fell in the
validation split, say) is skipped, saying so: the champion's first such day is a real drop in its quality
(measured: +94 % MAE on an unseen rainy day), and a retrain that teaches it that sky is the right answer,
not a false alarm. Seed 12 is such a city.

``LOOPLINE_DELIVERY_SCENARIO_SEEDS="3,8"`` runs other cities (the decisions must hold on cities they were
not written against).

The gate, on the same city: a really trained candidate that learned too little (one epoch at a tiny learning
rate) is rejected on quality against the champion, naming its MAE. With ``test_drift_scenarios`` and
``test_gate_scenarios`` (fraud) these are both use cases' decisions: no false retrain, drift caught, a
worse candidate rejected.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
from delivery_city import DELIVERY, build_delivery_world
from scenario_world import World, log_served, served_rows

from loopline.lineage import history
from loopline.monitoring.monitor import run_check
from loopline.monitoring.reference import SPLIT, load_reference
from loopline.usecases.delivery.simulator import DeliveryDrift

DAYS, SERVE_FROM, SLOWER_FROM = 37, 30, 33
SKY = "weather_condition"
SEEDS = [int(s) for s in (os.environ.get("LOOPLINE_DELIVERY_SCENARIO_SEEDS") or "5,1").split(",")]


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def city(request, tmp_path_factory) -> World:
    world = build_delivery_world(
        tmp_path_factory.mktemp("delivery"),
        seed=request.param,
        days=DAYS,
        serve_from=SERVE_FROM,
        drift=DeliveryDrift("slower_couriers", SLOWER_FROM),
    )
    served = served_rows(world, SERVE_FROM, DAYS - 1)
    trained_on = set(
        load_reference(world.settings.mlflow_uri, world.model_name).frame.query(f"{SPLIT} == 'train'")[SKY]
    )
    normal = served[served[DELIVERY.time_column] < pd.Timestamp(world.day_start(SLOWER_FROM))]
    unseen = sorted(set(normal[SKY]) - trained_on)
    if unseen:
        pytest.skip(
            f"city {request.param} serves {unseen} on a normal day, a sky its champion never trained on"
        )
    log_served(world, served)
    return world


@pytest.mark.integration
def test_normal_days_request_nothing_and_slower_couriers_request_a_retrain_for_concept_drift(city) -> None:
    for day in range(SERVE_FROM, SLOWER_FROM):
        result = run_check(city.settings, training_running=False, now=city.day_start(day + 1))
        assert not result.retrain and result.status == "ok", result.summary
    assert not history.read(city.settings, kinds={"retrain_requested"})

    requested = None
    for day in range(SLOWER_FROM, SLOWER_FROM + 2):
        result = run_check(city.settings, training_running=False, now=city.day_start(day + 1))
        if result.retrain:
            requested = result
            break
    assert requested is not None, [e.reason for e in history.read(city.settings, kinds={"drift_checked"})][
        -2:
    ]
    (event,) = history.read(city.settings, kinds={"retrain_requested"})
    assert "concept_drift" in event.reason and "dataset_drift" not in event.reason, event.reason


@pytest.mark.integration
def test_a_candidate_that_learned_too_little_is_rejected_naming_its_mae(city) -> None:
    from delivery_city import FAST_TRAINING, delivery_gate_policy

    from loopline.gating.gate import run_gate
    from loopline.training.config import load_config
    from loopline.training.train import train

    settings = city.settings
    assert city.training_set is not None and city.holdout is not None
    config = load_config(settings.policy_file("training"), [*FAST_TRAINING, "epochs=1", "lr=0.00001"])
    worse = train(str(city.training_set), config, tracking_uri=settings.mlflow_uri, use_case=DELIVERY)
    assert worse is not None
    verdict = run_gate(
        settings,
        worse.version,
        city.holdout,
        model_name=DELIVERY.model_name,
        policy=delivery_gate_policy(settings),
    )
    assert not verdict.passed and verdict.checks_passed()["quality"] is False, verdict.why
    assert verdict.comparison.kind == "vs_champion", verdict.comparison
    assert any(r.startswith("quality: mae") for r in verdict.reasons), verdict.reasons
