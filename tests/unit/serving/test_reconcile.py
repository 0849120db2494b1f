"""Registry reconciliation on a real uvicorn server: sticky weighted routing from the registry's traffic
tag, and atomic switches between versions under constant load with zero failed requests."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest
from serving_testkit import MODEL, quick_config, running_server, wait_until

from loopline.platform.mlflow_util import mlflow_client
from loopline.serving.app import create_app
from loopline.serving.registry import RegistryReconciler
from loopline.serving.routing import assign


@pytest.fixture
def registry(serving_world):
    client = mlflow_client(serving_world.tracking_uri)
    yield client
    for alias in ("champion", "challenger"):
        try:
            client.delete_registered_model_alias(MODEL, alias)
        except Exception:  # noqa: BLE001 - not set
            pass
    client.delete_registered_model_tag(MODEL, "loopline.challenger_traffic")


@pytest.fixture(params=["inline", "threads"])
def server(serving_world, registry, request):
    config = quick_config()
    config = config.model_copy(
        update={"batching": config.batching.model_copy(update={"mode": request.param})}
    )
    app = create_app(
        serving_world.settings,
        config,
        source_factory=lambda engine: RegistryReconciler(engine, serving_world.settings, config),
    )
    with running_server(app) as url:
        yield url


def readyz(url: str) -> dict:
    return httpx.get(f"{url}/readyz", timeout=5).json()


def test_no_champion_alias_means_503_with_the_reason(server) -> None:
    wait_until(lambda: readyz(server).get("problem") == "no_champion", what="the registry's verdict")
    response = httpx.get(f"{server}/readyz", timeout=5)
    assert response.status_code == 503 and response.json()["reason"] == "no_champion"
    assert "http" not in response.text, "a code, not the registry's URL (that is in the log)"


def test_traffic_share_from_the_registry_routes_customers_stickily(server, registry, serving_world) -> None:
    champion, challenger = serving_world.versions
    registry.set_registered_model_alias(MODEL, "champion", champion)
    registry.set_registered_model_alias(MODEL, "challenger", challenger)
    registry.set_registered_model_tag(MODEL, "loopline.challenger_traffic", "0.4")
    wait_until(
        lambda: (readyz(server)["deployment"].get("challenger") or {}).get("share") == 0.4,
        what="the challenger at 40 %",
    )
    rows = serving_world.transactions
    seen: dict[str, set[tuple[str, str]]] = {}
    for _ in range(2):
        for start in range(0, len(rows), 25):
            body = {"transactions": rows[start : start + 25]}
            for tx, p in zip(
                rows[start : start + 25],
                httpx.post(f"{server}/v1/predict", json=body).json()["predictions"],
                strict=True,
            ):
                seen.setdefault(tx["customer_id"], set()).add((p["variant"], p["model_version"]))
    assert all(len(pairs) == 1 for pairs in seen.values()), "a customer saw two variants"
    expected = {c: assign(c, 0.4) for c in seen}
    assert {c: next(iter(pairs))[0] for c, pairs in seen.items()} == expected
    assert {v for pairs in seen.values() for _, v in pairs} == {champion, challenger}
    share = Counter(expected.values())["challenger"] / len(expected)
    assert 0.2 < share < 0.6
    # Rollback is one tag write: no customer sees the challenger any more.
    registry.set_registered_model_tag(MODEL, "loopline.challenger_traffic", "0")
    wait_until(
        lambda: readyz(server)["deployment"]["challenger"]["share"] == 0.0, what="the challenger at 0 %"
    )
    answers = httpx.post(f"{server}/v1/predict", json={"transactions": rows[:50]}).json()["predictions"]
    assert {p["variant"] for p in answers} == {"champion"}


def test_switching_versions_under_load_fails_no_request(server, registry, serving_world) -> None:
    first, second = serving_world.versions
    registry.set_registered_model_alias(MODEL, "champion", first)
    wait_until(lambda: httpx.get(f"{server}/readyz").status_code == 200, what="the first champion")
    stop = threading.Event()
    outcomes: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def client_loop(offset: int) -> None:
        with httpx.Client(base_url=server, timeout=30) as http:
            i = offset
            while not stop.is_set():
                tx = serving_world.transactions[i % len(serving_world.transactions)]
                try:
                    response = http.post("/v1/predict", json={"transactions": [tx]})
                    version = (
                        response.json()["predictions"][0]["model_version"]
                        if response.status_code == 200
                        else None
                    )
                    outcome = (response.status_code, version)
                except httpx.HTTPError as exc:
                    outcome = (-1, repr(exc))
                with lock:
                    outcomes.append(outcome)
                i += 7

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        for target in (second, first, second):  # promote, roll back, promote again: each a full reload
            registry.set_registered_model_alias(MODEL, "champion", target)
            wait_until(
                lambda t=target: readyz(server)["deployment"]["champion"]["version"] == t,
                timeout=60,
                what=f"champion {target}",
            )
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    failed = [o for o in outcomes if o[0] != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    versions = [v for _, v in outcomes]
    assert {first, second} <= set(versions) and versions[-1] == second and len(outcomes) > 50
