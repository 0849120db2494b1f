"""Canary scenarios: the real canary (``run_canary``) against a real serving process (uvicorn, its
RegistryReconciler, the real /metrics) and a real SQLite MLflow registry, under constant client load.

- a challenger that cannot load in serving (its files gone, or its loading raising) is rolled back at once
  — at the first bake poll that sees a retry fail too, long before ``bake.min_seconds`` — naming "cannot
  load" and the error serving reported;
- a challenger that loads but fails every request it is routed is rolled back at once naming the count
  and the first error;
- a healthy challenger (the champion's weights, registered again) that takes a while to load is waiting,
  not broken, and is promoted.

Every decision lands in the decision history and on the version's tags like any other rollback. Each
scenario runs with several seeds: the seed picks the customers that send traffic and the first step's
share. The world (a small trained model in a Feast store) is the serving tests' one, built once.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

_UNIT = Path(__file__).resolve().parents[1] / "unit"
for _path in (_UNIT, _UNIT / "serving", _UNIT / "deployment"):  # the serving and canary test kits, by name
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from canary_testkit import Load, register_faulty, remove_files, reset  # noqa: E402
from serving.conftest import serving_world  # noqa: E402,F401  (the serving tests' world: a session fixture)
from serving_testkit import MODEL, quick_config, running_server, wait_until  # noqa: E402

from loopline.deployment.actions import TAG_CANARY, TAG_REASON, read_state  # noqa: E402
from loopline.deployment.canary import CanaryOutcome, run_canary  # noqa: E402
from loopline.deployment.policy import CanaryPolicy, load_canary_policy  # noqa: E402
from loopline.lineage import history  # noqa: E402
from loopline.platform.mlflow_util import mlflow_client  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[2] / "include" / "config"
SEEDS = (11, 29)
# Long enough that a rollback before it can only be the early exit of a broken challenger (the
# bake's minimum time was not waited for, let alone its maximum).
BROKEN_MIN_SECONDS = 30.0


def canary_policy(first_share: float, min_seconds: float) -> CanaryPolicy:
    """The shipped policy (its health rule included) with two steps and a test-sized bake."""
    data = load_canary_policy(CONFIG_DIR / "canary.yaml").model_dump()
    data["steps"] = [first_share, 1.0]
    data["bake"] = {
        "min_requests": 30,
        "min_seconds": min_seconds,
        "max_seconds": 4 * BROKEN_MIN_SECONDS,
        "poll_seconds": 0.2,
    }
    # Same-model noise on a shared 2-core machine (as tests/unit/deployment/test_canary.py): loose relative
    # limits, a few dozen sticky customers.
    data["analysis"]["latency"].update(slack_ms=20.0, max_p95_ms=100.0)
    data["analysis"]["score_shift"].update(max_psi=2.0, min_units=10)
    for check in ("errors", "latency", "score_shift"):
        data["analysis"][check]["min_requests"] = 30
    return CanaryPolicy.model_validate(data)


def canary_traffic(world, seed: int) -> tuple[list[dict], float]:
    """The seed's customers (amounts with cents: the erroring fault fails every one of those) and first share."""
    rng = random.Random(seed)
    with_cents = [tx for tx in world.transactions if round(tx["amount"] * 100) % 100]
    return rng.sample(with_cents, k=int(len(with_cents) * 0.8)), rng.choice((0.25, 0.35, 0.5))


@pytest.fixture(scope="module")
def canary_world(request):
    """The serving tests' world (``serving_world``, imported above: one build per session)."""
    return request.getfixturevalue("serving_world")


@pytest.fixture(scope="module")
def canary_registry(canary_world):
    client = mlflow_client(canary_world.tracking_uri)
    reset(client)
    yield client
    reset(client)


@pytest.fixture(scope="module")
def canary_versions(canary_world, canary_registry) -> dict[str, str]:
    """Challengers registered as real versions: ``no_files`` (its stored files deleted), ``load_raises``
    (its model's loading raises), ``raise_all`` (loads, then fails every transaction with cents)."""
    base, uri = canary_world.versions[0], canary_world.tracking_uri
    versions = {
        "no_files": register_faulty(uri, base, "none"),
        "load_raises": register_faulty(uri, base, "unloadable"),
        "raise_all": register_faulty(uri, base, "raise_all"),
    }
    remove_files(uri, versions["no_files"])
    return versions


@pytest.fixture(scope="module")
def canary_server(canary_world, canary_registry):
    from loopline.serving.app import create_app
    from loopline.serving.registry import RegistryReconciler

    config = quick_config()
    app = create_app(
        canary_world.settings,
        config,
        source_factory=lambda engine: RegistryReconciler(engine, canary_world.settings, config),
    )
    with running_server(app) as url:
        yield url


@pytest.fixture
def canary_champion(canary_world, canary_registry, canary_server) -> str:
    """Version 1 is the champion, serving; no challenger yet."""
    reset(canary_registry)
    champion = canary_world.versions[0]
    canary_registry.set_registered_model_alias(MODEL, "champion", champion)
    wait_until(
        lambda: serving_alone(canary_server) == champion, timeout=60, what=f"champion {champion} alone"
    )
    yield champion
    reset(canary_registry)


def serving_alone(url: str) -> str | None:
    """The champion version the service answers with, when it serves no challenger (else None)."""
    import httpx

    deployment = httpx.get(f"{url}/readyz", timeout=5).json().get("deployment") or {}
    return None if deployment.get("challenger") else (deployment.get("champion") or {}).get("version")


def run(
    world, url: str, registry, version: str, policy: CanaryPolicy, traffic: list[dict]
) -> tuple[CanaryOutcome, Load, float]:
    """The gate's hand-over (the challenger alias), then the canary at once, under constant load — serving
    learns of the challenger while the first step bakes, as in production."""
    registry.set_registered_model_alias(MODEL, "challenger", version)
    with Load(url, traffic, clients=2) as load:
        started = time.monotonic()
        outcome = run_canary(world.settings, policy, version, metrics_url=f"{url}/metrics")
        took = time.monotonic() - started
    return outcome, load, took


def health_of(verdict: dict) -> dict:
    return next(c for c in verdict["checks"] if c["name"] == "health")


def assert_rolled_back_at_once(
    world, registry, outcome: CanaryOutcome, version: str, took: float, policy: CanaryPolicy, said: str
) -> dict:
    """Rolled back in the first step, before its minimum bake, with ``said`` in the reason, the decision in
    the history and on the version's tags; returns the health check that decided."""
    assert outcome.action == "rolled_back", outcome.reason
    assert len(outcome.verdicts) == 1 and took < policy.bake.min_seconds, (took, outcome.reason)
    health = health_of(outcome.verdicts[0])
    assert health["status"] == "fail" and health["reason"].startswith(f"challenger v{version} {said}")
    assert said in outcome.reason
    state = read_state(world.settings)
    assert (state.champion, state.challenger, state.share) == (world.versions[0], None, None)
    tags = registry.get_model_version(MODEL, version).tags
    assert tags[TAG_CANARY] == "rolled_back" and said in tags[TAG_REASON]
    last = history.read(world.settings, limit=1)[0]
    assert (last.kind, last.version, last.details["scope"]) == ("rolled_back", version, "canary")
    assert said in last.reason and last.details["verdict"]["why"].startswith("health: ")
    return health


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fault", ["no_files", "load_raises"])
def test_a_challenger_that_cannot_load_is_rolled_back_at_once(
    canary_world, canary_registry, canary_server, canary_versions, canary_champion, fault, seed
) -> None:
    traffic, share = canary_traffic(canary_world, seed)
    policy = canary_policy(share, BROKEN_MIN_SECONDS)
    version = canary_versions[fault]
    outcome, load, took = run(canary_world, canary_server, canary_registry, version, policy, traffic)
    health = assert_rolled_back_at_once(
        canary_world, canary_registry, outcome, version, took, policy, "cannot load in serving"
    )
    values = health["values"]
    assert values["answered"] == 0 and values["load_failures"] >= policy.analysis.health.min_load_failures
    # The error serving reported, as it reported it: the version's own URI and what went wrong.
    assert f"models:/{MODEL}/{version}" in values["load_error"] and values["load_error"] in outcome.reason
    if fault == "load_raises":
        assert "injected fault" in values["load_error"]
    assert not load.failed(), "the champion answers every request while the challenger cannot load"
    assert {variant for variant, _ in load.versions()} == {"champion"}


@pytest.mark.parametrize("seed", SEEDS)
def test_a_challenger_failing_every_request_is_rolled_back_at_once(
    canary_world, canary_registry, canary_server, canary_versions, canary_champion, seed
) -> None:
    traffic, share = canary_traffic(canary_world, seed)
    policy = canary_policy(share, BROKEN_MIN_SECONDS)
    version = canary_versions["raise_all"]
    outcome, load, took = run(canary_world, canary_server, canary_registry, version, policy, traffic)
    health = assert_rolled_back_at_once(
        canary_world, canary_registry, outcome, version, took, policy, "failed every one of its"
    )
    values = health["values"]
    assert values["answered"] == 0 and values["failed"] >= policy.analysis.health.min_failed_requests
    assert f"failed every one of its {values['failed']} requests: " in outcome.reason
    assert "injected fault" in values["request_error"] and values["request_error"] in outcome.reason
    failed = load.failed()
    assert failed and all(
        status == 500 for status, _, _ in failed
    )  # its customers' requests, until the rollback
    wait_until(lambda: serving_alone(canary_server) == canary_champion, what="serving to drop the challenger")
    with Load(canary_server, traffic, clients=2) as after:
        time.sleep(0.5)
    assert not after.failed() and {variant for variant, _ in after.versions()} == {"champion"}


@pytest.mark.parametrize("seed", SEEDS)
def test_a_healthy_challenger_still_loading_is_waited_for_and_promoted(
    canary_world, canary_registry, canary_server, canary_champion, seed
) -> None:
    traffic, share = canary_traffic(canary_world, seed)
    policy = canary_policy(share, 0.5)
    version = canary_world.versions[1]  # the champion's weights, registered again
    outcome, load, _ = run(canary_world, canary_server, canary_registry, version, policy, traffic)
    assert all(health_of(v)["status"] == "pass" for v in outcome.verdicts), [
        v["why"] for v in outcome.verdicts
    ]
    assert outcome.action == "promoted", [v["why"] for v in outcome.verdicts]
    assert not load.failed() and ("challenger", version) in load.versions()
    assert read_state(canary_world.settings).champion == version
    assert history.read(canary_world.settings, limit=1)[0].kind == "promoted"
