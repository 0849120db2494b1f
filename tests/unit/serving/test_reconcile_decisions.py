"""The reconciler's decisions against a scripted registry (fast: no models, no server)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from serving_testkit import quick_config

from loopline.config import Settings
from loopline.serving.engine import Engine
from loopline.serving.prediction_log import PredictionLog
from loopline.serving.registry import RegistryReconciler


@dataclass(frozen=True)
class FakePredictor:
    version: str
    variant: str
    model_uri: str = ""
    warmed: bool = True

    def with_variant(self, variant: str) -> FakePredictor:
        return replace(self, variant=variant)


@dataclass
class FakeRegistry:
    aliases: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    down: bool = False

    def get_registered_model(self, name: str):
        if self.down:
            raise ConnectionError("registry unreachable")
        return type("RM", (), {"aliases": dict(self.aliases), "tags": dict(self.tags)})()


@pytest.fixture
def world(tmp_path):
    registry = FakeRegistry()
    loads: list[str] = []
    broken: set[str] = set()

    def loader(uri: str, version: str, variant: str) -> FakePredictor:
        loads.append(version)
        if version in broken:
            raise RuntimeError(f"version {version} is corrupt")
        return FakePredictor(version, variant, uri)

    engine = Engine(PredictionLog(tmp_path / "p.db"), inline=True)
    reconciler = RegistryReconciler(
        engine, Settings(state_dir=tmp_path), quick_config(), loader=loader, client=registry
    )
    return registry, reconciler, engine, loads, broken


def test_promotion_reuses_the_loaded_challenger_and_rollback_drops_it(world) -> None:
    registry, reconciler, engine, loads, _ = world
    registry.aliases = {"champion": "1", "challenger": "2"}
    registry.tags = {"loopline.challenger_traffic": "0.05"}
    first = reconciler.reconcile_once()
    assert (first.champion.version, first.challenger.version, first.challenger_share) == ("1", "2", 0.05)
    assert loads == ["1", "2"] and engine.deployment is first
    registry.tags["loopline.challenger_traffic"] = "0.5"
    assert reconciler.reconcile_once().challenger_share == 0.5 and loads == ["1", "2"], "a ramp loads nothing"
    registry.aliases = {"champion": "2"}  # promotion: the alias moves, the challenger alias goes
    promoted = reconciler.reconcile_once()
    assert (promoted.champion.version, promoted.champion.variant, promoted.challenger) == (
        "2",
        "champion",
        None,
    )
    assert loads == ["1", "2"], "the promoted version was already warm"


def test_a_broken_challenger_leaves_all_traffic_on_the_champion(world) -> None:
    registry, reconciler, engine, _, broken = world
    broken.add("7")
    registry.aliases = {"champion": "1", "challenger": "7"}
    registry.tags = {"loopline.challenger_traffic": "0.5"}
    deployment = reconciler.reconcile_once()
    assert deployment.champion.version == "1" and deployment.challenger is None
    assert deployment.challenger_share == 0.0 and "corrupt" in reconciler.last_error


def test_a_broken_new_champion_or_a_dead_registry_keeps_the_current_one_serving(world) -> None:
    registry, reconciler, engine, _, broken = world
    registry.aliases = {"champion": "1"}
    reconciler.reconcile_once()
    broken.add("3")
    registry.aliases = {"champion": "3"}
    assert reconciler.reconcile_once().champion.version == "1" and "3" in reconciler.last_error
    registry.down = True
    reconciler.step()
    assert engine.deployment.champion.version == "1" and "unreachable" in reconciler.last_error
    registry.down, registry.aliases = False, {}
    reconciler.reconcile_once()
    assert engine.deployment.champion.version == "1" and "@champion" in reconciler.last_error


def test_every_failed_load_is_counted_in_the_metrics_with_its_first_error(tmp_path) -> None:
    """What the canary reads (summed over replicas) to roll back a challenger that cannot load at once."""
    from prometheus_client import generate_latest

    from loopline.deployment.windows import parse_metrics
    from loopline.serving.metrics import ServingMetrics

    broken = {"7"}

    def loader(uri: str, version: str, variant: str) -> FakePredictor:
        if version in broken:
            raise RuntimeError(f"cannot load {uri}: version {version} is corrupt")
        return FakePredictor(version, variant, uri)

    metrics = ServingMetrics()
    registry = FakeRegistry({"champion": "1", "challenger": "7"}, {"loopline.challenger_traffic": "0.5"})
    engine = Engine(PredictionLog(tmp_path / "p.db"), inline=True, observer=metrics)
    reconciler = RegistryReconciler(
        engine, Settings(state_dir=tmp_path), quick_config(), loader=loader, client=registry
    )
    for _ in range(3):  # every poll retries the version, and counts the attempt
        assert reconciler.reconcile_once().challenger is None
    scraped = parse_metrics(generate_latest(metrics.registry).decode())
    assert scraped.load_failures == {("challenger", "7"): 3.0}
    assert scraped.first_errors == {
        ("load", "challenger", "7"): "cannot load models:/fraud_detector/7: version 7 is corrupt"
    }
    broken.clear()  # the artifact store is back: the version loads, its load error is history
    assert reconciler.reconcile_once().challenger.version == "7"
    scraped = parse_metrics(generate_latest(metrics.registry).decode())
    assert scraped.first_errors == {} and scraped.load_failures == {("challenger", "7"): 3.0}
    engine.log.close()
