"""Failed transactions summed over serving replicas, through a real Prometheus binary: two real serving
replicas (uvicorn on free ports, each with its own metrics and RegistryReconciler) under load, scraped
every second by Prometheus on a free loopback port. The canary's count equals the sum of both replicas'
own counters, and a faulty challenger whose errors, spread over the replicas, stay under the limit on any
one replica's /metrics is rolled back once they are summed.

Needs the ``prometheus`` binary (Debian: ``apt-get install -y --no-install-recommends prometheus``); the
Debian service is not used: the test runs the binary itself with its own config and storage in tmp.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from canary_testkit import register_faulty, reset
from serving_testkit import MODEL, quick_config, running_server, wait_until
from test_canary import fast_policy

from loopline.config import Settings
from loopline.deployment import actions
from loopline.deployment.canary import CanaryPlan, Phase, StepState, judge_step, run_canary
from loopline.deployment.windows import ErrorSource, ErrorsUnavailable, prometheus_query
from loopline.platform.processes import free_port
from loopline.serving.app import create_app
from loopline.serving.registry import RegistryReconciler

PROMETHEUS_APT = "apt-get install -y --no-install-recommends prometheus"
SCRAPE_S = 1.0
# The errors check's absolute limit in the rollback test. The challenger fails exactly half of its
# transactions (see HalfFailingLoad): summed over both replicas its rate is ~0.5 (a little less, as the
# errors of the last scrape interval are not in Prometheus yet); one replica's /metrics shows about half
# of the errors against all the answered rows: ~0.5 / 1.5 = 0.33.
MAX_ERROR_RATE = 0.42


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail(f"the prometheus binary is missing in CI: .ci/run must install it ({PROMETHEUS_APT})")
    pytest.skip(f"the prometheus binary is not installed ({PROMETHEUS_APT})")


@pytest.fixture(scope="module")
def prometheus_bin() -> str:
    """Requested first by the tests that need Prometheus: skip (or fail in CI) before building anything."""
    return prometheus_binary()


@contextlib.contextmanager
def running_prometheus(binary: str, targets: list[str], workdir: Path) -> Iterator[str]:
    """The real Prometheus binary scraping ``targets`` (host:port) every second; yields its base URL."""
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": f"{SCRAPE_S:g}s", "scrape_timeout": f"{SCRAPE_S:g}s"},
                "scrape_configs": [
                    {"job_name": "loopline-serving", "static_configs": [{"targets": targets}]}
                ],
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not _ready(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Prometheus did not become ready:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def failing_and_clean(transactions: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Per customer: a transaction ``FaultyModel("raise")`` fails on (cents not whole, divisible by 3) and
    one it scores (a whole amount); the champion scores both."""
    pairs = []
    for tx in transactions:
        whole = 3 * max(1, round(tx["amount"] / 3))
        pairs.append(
            (
                {**tx, "transaction_id": f"{tx['transaction_id']}-x", "amount": whole + 0.03},
                {**tx, "transaction_id": f"{tx['transaction_id']}-ok", "amount": float(whole)},
            )
        )
    return pairs


class HalfFailingLoad:
    """``clients`` threads per replica, each posting customer after customer the failing transaction and
    then the clean one: whichever variant a customer is routed to gets as many of each (±1 per thread),
    so a faulty challenger fails exactly half of its transactions. Counts HTTP 500s per replica."""

    def __init__(self, urls: list[str], transactions: list[dict[str, Any]], clients: int = 2) -> None:
        self.pairs = failing_and_clean(transactions)
        self.failed: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._loop, args=(url, n * 17), daemon=True)
            for url in urls
            for n in range(clients)
        ]

    def _loop(self, url: str, offset: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            i = offset
            while not self._stop.is_set():
                for tx in self.pairs[i % len(self.pairs)]:
                    status = http.post("/v1/predict", json={"transactions": [tx]}).status_code
                    with self._lock:
                        (self.answered if status == 200 else self.failed)[url] += 1
                i += 1

    def __enter__(self) -> HalfFailingLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


@pytest.fixture(scope="module")
def faulty(serving_world, registry) -> str:
    return register_faulty(serving_world.tracking_uri, serving_world.versions[0], "raise")


@pytest.fixture(scope="module")
def replicas(serving_world, registry) -> Iterator[list[str]]:
    """Two serving processes' worth of app (own metrics registry, own reconciler), one prediction log."""
    config = quick_config()
    apps = [
        create_app(
            serving_world.settings,
            config,
            source_factory=lambda engine: RegistryReconciler(engine, serving_world.settings, config),
        )
        for _ in range(2)
    ]
    with running_server(apps[0]) as first, running_server(apps[1]) as second:
        yield [first, second]


@pytest.fixture(scope="module")
def prometheus(prometheus_bin, replicas, tmp_path_factory) -> Iterator[str]:
    targets = [url.removeprefix("http://") for url in replicas]
    with running_prometheus(prometheus_bin, targets, tmp_path_factory.mktemp("prometheus")) as url:
        # Both replicas scraped at least twice: the counts below have a baseline.
        wait_until(
            lambda: _scrapes(url) >= 2 * len(targets), timeout=30, what="Prometheus scraping both replicas"
        )
        yield url


def _scrapes(url: str) -> int:
    result = httpx.get(f"{url}/api/v1/query", params={"query": "count_over_time(up[1m])"}, timeout=5).json()
    return sum(int(float(r["value"][1])) for r in result["data"]["result"])


def deployment(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/readyz", timeout=5).json().get("deployment") or {}


def deploy(serving_world, registry, replicas: list[str], challenger: str, share: float | None) -> None:
    """Champion version 1 and ``challenger`` loaded on both replicas; ``share``: its live traffic now."""
    champion = serving_world.versions[0]
    reset(registry)
    registry.set_registered_model_alias(MODEL, "champion", champion)
    registry.set_registered_model_alias(MODEL, "challenger", challenger)
    if share is not None:
        actions.shift_traffic(serving_world.settings, challenger, share)

    def serving() -> bool:
        for url in replicas:
            now = deployment(url)
            if (now.get("champion") or {}).get("version") != champion:
                return False
            if (now.get("challenger") or {}).get("version") != challenger:
                return False
            if share is not None and (now.get("challenger") or {}).get("share") != share:
                return False
        return True

    wait_until(serving, timeout=90, what=f"champion {champion} and challenger {challenger} on both replicas")


@pytest.mark.integration
def test_the_count_from_prometheus_is_the_sum_of_both_replicas_counters(
    prometheus_bin, serving_world, registry, faulty, replicas, prometheus
) -> None:
    deploy(serving_world, registry, replicas, faulty, share=0.5)
    key = ("challenger", faulty)
    metrics = [f"{url}/metrics" for url in replicas]
    both, each = ErrorSource(metrics_urls=tuple(metrics)), [ErrorSource(metrics_urls=(m,)) for m in metrics]
    by_prometheus = ErrorSource(prometheus_url=prometheus)
    mark = both.mark()
    assert mark is not None and set(mark) == set(metrics)
    since = time.time()
    with HalfFailingLoad(replicas, serving_world.transactions) as load:
        time.sleep(4)
    time.sleep(3 * SCRAPE_S)  # Prometheus scrapes the final counters (load stopped: nothing changes now)
    until = time.time()

    summed = by_prometheus.count({}, since, until)
    per_replica = [
        source.count({m: mark[m]}, since, until).get(key, 0) for source, m in zip(each, metrics, strict=True)
    ]
    assert all(n > 0 for n in per_replica), f"both replicas must have failed requests: {per_replica}"
    # Exact: integer counts of what was scraped, no extrapolation, and no error after the last scrape.
    assert summed[key] == both.count(mark, since, until)[key] == sum(per_replica)
    assert summed[key] == sum(load.failed.values())  # what the clients saw: one error per failed request
    assert per_replica == [load.failed[url] for url in replicas]
    assert summed.get(("champion", serving_world.versions[0]), 0) == 0


@pytest.mark.integration
def test_a_challenger_failing_on_every_replica_is_rolled_back_only_when_errors_are_summed(
    prometheus_bin, serving_world, registry, faulty, replicas, prometheus
) -> None:
    policy = fast_policy(errors={"max_rate": MAX_ERROR_RATE, "max_increase": 0.0}).with_overrides(
        bake_seconds=8, min_requests=200, max_bake_seconds=90, steps=[0.5]
    )

    def canary(settings: Settings, **errors_from: Any) -> dict[str, Any]:
        deploy(serving_world, registry, replicas, faulty, share=None)
        with HalfFailingLoad(replicas, serving_world.transactions):
            time.sleep(0.3)
            outcome = run_canary(settings, policy, faulty, **errors_from)
        [verdict] = outcome.verdicts
        return {
            "outcome": outcome.action,
            "why": verdict["why"],
            "errors": next(c for c in verdict["checks"] if c["name"] == "errors"),
        }

    # Today's single /metrics URL: one replica's share of the errors looks like a tolerable rate.
    one = canary(serving_world.settings, metrics_url=f"{replicas[0]}/metrics")
    assert one["errors"]["status"] == "pass", one["why"]
    assert one["errors"]["values"]["challenger_rate"] < MAX_ERROR_RATE

    # LOOPLINE_PROMETHEUS_URL set (as compose and Kubernetes do): summed over both replicas, the same
    # challenger is rolled back on errors.
    summed = canary(serving_world.settings.model_copy(update={"prometheus_url": prometheus}))
    assert summed["outcome"] == "rolled_back" and summed["errors"]["status"] == "fail", summed["why"]
    assert summed["errors"]["values"]["challenger_rate"] > MAX_ERROR_RATE
    assert summed["errors"]["values"]["challenger_errors"] > one["errors"]["values"]["challenger_errors"]
    state = actions.read_state(serving_world.settings)
    assert (state.champion, state.challenger) == (serving_world.versions[0], None)
    reset(registry)


@pytest.mark.integration
def test_windows_prometheus_cannot_count_are_unavailable_with_the_reason(prometheus_bin, prometheus) -> None:
    now = time.time()
    with pytest.raises(ErrorsUnavailable, match="too short"):
        ErrorSource(prometheus_url=prometheus).count({}, now - SCRAPE_S / 2, now)
    with pytest.raises(ErrorsUnavailable, match="scrapes no serving replica"):
        ErrorSource(prometheus_url=prometheus, selector='job="another-installation"').count({}, now - 30, now)
    with pytest.raises(ErrorsUnavailable, match="refused the query"):
        prometheus_query(prometheus, "up[", now)


def test_unreadable_errors_block_the_step_and_say_why(tmp_path: Path) -> None:
    """No Prometheus answering: the errors check cannot judge, says why, and the step does not pass."""
    unreachable = "http://127.0.0.1:9"  # the discard port: nothing listens
    plan = CanaryPlan(
        "2",
        "1",
        (Phase(0.5, "live"),),
        "",
        started_at=time.time() - 60,
        errors_at_start={},
        errors_from=ErrorSource(prometheus_url=unreachable),
    )
    step = StepState(0, time.time() - 30, {})
    verdict = judge_step(Settings(state_dir=tmp_path), fast_policy(), plan, step)
    errors = next(c for c in verdict.checks if c.name == "errors")
    assert not verdict.passed and errors.status == "insufficient"
    assert f"cannot query Prometheus at {unreachable}" in errors.reason
