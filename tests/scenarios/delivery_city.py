"""A simulated delivery city for the decision scenarios, built like ``scenario_world``'s card worlds: every
order and delivery published into a curated store, the delivery features computed offline, a delivery-time
regressor trained on the labelled days before the gate's holdout (the real trainer with the use case's
policy, made quick), gated by the delivery gate policy and made the champion. Served days are then scored on
their point-in-time features and logged with ``scenario_world.served_rows`` / ``log_served``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
from scenario_world import World, training_and_holdout

from loopline.config import Settings
from loopline.config.use_case import load_use_case
from loopline.usecases.delivery.simulator import DeliveryConfig, DeliveryDrift, simulate

DELIVERY = load_use_case("delivery")
START = date(2026, 3, 2)  # a Monday
FAST_TRAINING = ["epochs=8", "model.hidden_sizes=[32, 16]", "early_stopping.patience=3", "device=cpu"]


def delivery_gate_policy(settings: Settings):
    """The shipped delivery gate policy with the serving-path checks off (the worlds have no online store)."""
    from loopline.gating.policy import load_policy

    policy = load_policy(settings.policy_file("gate"))
    return policy.model_copy(
        update={
            "latency": policy.latency.model_copy(update={"enabled": False}),
            "infra": policy.infra.model_copy(update={"enabled": False}),
        }
    )


def build_delivery_world(
    root: Path, *, seed: int, days: int, serve_from: int, drift: DeliveryDrift | None = None
) -> World:
    from loopline.data.ingest import publish
    from loopline.features.curated import curated_time_range
    from loopline.features.definitions import feature_definitions
    from loopline.features.materialize import offline_sink
    from loopline.features.offline_refresh import refresh_aggregates
    from loopline.gating.gate import run_gate
    from loopline.platform.feast_store import apply_feature_repo
    from loopline.platform.mlflow_util import mlflow_client
    from loopline.training.config import load_config
    from loopline.training.train import train

    root.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        use_case=DELIVERY.name,
        state_dir=root / "state",
        mlflow_tracking_uri=f"sqlite:///{root / 'state' / 'mlflow.db'}",
    )
    settings.state.ensure()
    city = simulate(DeliveryConfig(seed=seed, start=START, days=days, drift=drift))
    events, labels = DELIVERY.batch_kinds
    publish(settings, pd.concat([d.orders for d in city], ignore_index=True), events, "sim")
    publish(settings, pd.concat([d.deliveries for d in city], ignore_index=True), labels, "sim")
    first, last = curated_time_range(settings)
    refresh_aggregates(
        settings.state.curated,
        offline_sink(settings),
        pd.Timestamp(first),
        pd.Timestamp(last),
        feature_definitions(DELIVERY),
    )
    apply_feature_repo(settings)
    world = World(settings, START, days, serve_from, "", city, model_name=DELIVERY.model_name)
    policy = delivery_gate_policy(settings)
    manifest = training_and_holdout(world, policy, root, first_day=0)
    result = train(
        manifest,
        load_config(settings.policy_file("training"), FAST_TRAINING),
        tracking_uri=settings.mlflow_uri,
        use_case=DELIVERY,
    )
    assert result is not None
    verdict = run_gate(settings, result.version, world.holdout, model_name=DELIVERY.model_name, policy=policy)
    assert verdict.passed, verdict.reasons
    mlflow_client(settings.mlflow_uri).set_registered_model_alias(
        DELIVERY.model_name, "champion", result.version
    )
    world.version = result.version
    return world
