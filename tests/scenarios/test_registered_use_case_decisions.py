"""The gate's decisions for a use case Loopline does not contain (``examples/maintenance``, registered by its
entry point), on simulated worlds it was not tuned on: its first model passes its own gate, a longer retrain of
the same data passes against that champion, and a candidate that learned too little is rejected, naming the
metric. Everything goes through the platform: the use case's simulator writes the landing layout, the real
ingest (its suites) publishes it, the Feast repo the package ships defines the features, the real trainer fits
its training policy, and the real gate applies its gate policy.

Only the use case's name is specific here: a team copies this file for its own. Each world is a seed of the
simulator with the demo's options; ``LOOPLINE_REGISTERED_SCENARIO_SEEDS="5,6"`` runs others.
"""

from __future__ import annotations

import os
from datetime import date
from typing import Any

import pandas as pd
import pytest
from scenario_world import World, training_and_holdout

from loopline.config import Settings
from loopline.config.use_case import SimulationRequest, load_use_case

NAME = "maintenance"
SEEDS = [int(s) for s in (os.environ.get("LOOPLINE_REGISTERED_SCENARIO_SEEDS") or "1,4").split(",")]
START = date(2026, 3, 2)  # a Monday
FAST = ["device=cpu", "hpo.trials=0"]


def _gate_policy(settings: Settings) -> Any:
    """The use case's gate policy with the serving-path checks off: the worlds have no online store."""
    from loopline.gating.policy import load_policy

    policy = load_policy(settings.policy_file("gate"))
    return policy.model_copy(
        update={
            "latency": policy.latency.model_copy(update={"enabled": False}),
            "infra": policy.infra.model_copy(update={"enabled": False}),
        }
    )


def _train(world: dict[str, Any], *overrides: str) -> str:
    from loopline.training.config import load_config
    from loopline.training.train import train

    settings = world["settings"]
    config = load_config(settings.policy_file("training"), [*FAST, *overrides])
    result = train(world["manifest"], config, tracking_uri=settings.mlflow_uri, use_case=world["use_case"])
    assert result is not None
    return str(result.version)


def _gate(world: dict[str, Any], version: str) -> Any:
    from loopline.gating.gate import run_gate

    return run_gate(
        world["settings"],
        version,
        world["holdout"],
        model_name=world["use_case"].model_name,
        policy=world["policy"],
    )


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def world(request, tmp_path_factory) -> dict[str, Any]:
    from loopline.data.ingest import ingest_file, landed_files
    from loopline.features.curated import curated_time_range
    from loopline.features.definitions import feature_definitions
    from loopline.features.materialize import offline_sink
    from loopline.features.offline_refresh import refresh_aggregates
    from loopline.platform.feast_store import apply_feature_repo

    use_case = load_use_case(NAME)
    root = tmp_path_factory.mktemp(NAME)
    settings = Settings(
        use_case=NAME,
        state_dir=root / "state",
        mlflow_tracking_uri=f"sqlite:///{root / 'state' / 'mlflow.db'}",
    )
    settings.state.ensure()
    simulator = use_case.load_simulator()
    plan = simulator.demo
    options = {k: v for k, v in plan.options.items() if k != "bad"}  # the broken batch is ingest's business
    simulator.write(
        SimulationRequest(
            out=settings.state.landing, days=plan.days, start=START, seed=request.param, options=options
        )
    )
    results = [ingest_file(settings, path) for path in landed_files(settings)]
    assert {r.status for r in results} == {"published"}, [r.summary() for r in results]
    first, last = curated_time_range(settings)
    refresh_aggregates(
        settings.state.curated,
        offline_sink(settings),
        pd.Timestamp(first),
        pd.Timestamp(last),
        feature_definitions(use_case),
    )
    apply_feature_repo(settings)
    policy = _gate_policy(settings)
    scenario = World(settings, START, plan.days, plan.days, "", None, model_name=use_case.model_name)
    manifest = training_and_holdout(scenario, policy, root, first_day=0)
    return {
        "settings": settings,
        "use_case": use_case,
        "policy": policy,
        "manifest": manifest,
        "holdout": scenario.holdout,
        "epochs": plan.epochs,
    }


@pytest.mark.integration
def test_a_first_model_passes_and_a_longer_retrain_passes_against_it(world) -> None:
    from loopline.platform.mlflow_util import mlflow_client

    first = _train(world, f"epochs={world['epochs']}")
    verdict = _gate(world, first)
    assert verdict.passed, verdict.why
    mlflow_client(world["settings"].mlflow_uri).set_registered_model_alias(
        world["use_case"].model_name, "champion", first
    )
    retrain = _train(world)  # the training policy's own epochs, as a drift-triggered retrain runs
    verdict = _gate(world, retrain)
    assert verdict.passed, verdict.why
    assert verdict.comparison.kind == "vs_champion"


@pytest.mark.integration
def test_a_candidate_that_learned_too_little_is_rejected_naming_the_metric(world) -> None:
    weak = _train(world, "epochs=1", "lr=0.00001", "early_stopping.patience=1")
    verdict = _gate(world, weak)
    assert not verdict.passed
    reasons = " ".join(verdict.checks["quality"].reasons)
    assert any(metric in reasons for metric in ("pr_auc", "roc_auc", "recall_at_fpr")), verdict.why
