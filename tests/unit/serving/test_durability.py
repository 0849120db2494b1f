"""kill -9 of a real server process loses no acknowledged prediction; the process also proves the
``python -m loopline.serving --model-uri`` entry point the gate uses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from local_servers import PG_USER, postgres_server
from serving_testkit import wait_until

from loopline.platform.processes import free_port
from loopline.serving.prediction_log import PostgresPredictionLog, PredictionLog

pytestmark = pytest.mark.integration  # a separate process imports torch, MLflow and Feast: ~20-40 s here


@pytest.fixture(scope="module")
def postgres_log_url() -> Iterator[str]:
    """A throwaway Postgres for the log, as compose and Kubernetes run it."""
    with postgres_server() as port:
        yield f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres"


@pytest.mark.parametrize(
    "mode,backend", [("inline", "sqlite"), ("threads", "sqlite"), ("inline", "postgres")]
)
def test_acknowledged_predictions_survive_kill_9(serving_world, tmp_path, mode, backend, request) -> None:
    port = free_port()
    config = tmp_path / "serving.yaml"
    config.write_text(f"batching: {{mode: {mode}}}\n")
    # The world's state dir: its feature store, its registry and its prediction log (ids here are unique).
    env = {**os.environ, **serving_world.env()}
    log_url = request.getfixturevalue("postgres_log_url") if backend == "postgres" else None
    if log_url:
        env["LOOPLINE_PREDICTION_LOG_URL"] = log_url
    # What a parent that imported feast.metrics hands down: the service must not keep its metrics there.
    leaked_metrics_dir = tmp_path / "feast_metrics_parent"
    leaked_metrics_dir.mkdir()
    env["PROMETHEUS_MULTIPROC_DIR"] = env["PROMETHEUS_MULTIPROCESS_DIR"] = str(leaked_metrics_dir)
    url = f"http://127.0.0.1:{port}"
    log_file = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loopline.serving",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-uri",
            f"models:/fraud_detector/{serving_world.versions[0]}",
            "--log-level",
            "warning",
            "--config",
            str(config),
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    enough = threading.Event()
    try:

        def ready() -> bool:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        started = time.monotonic()
        wait_until(ready, timeout=120, what="the server's /readyz")
        print(f"server ready after {time.monotonic() - started:.1f} s")

        def client_loop(offset: int) -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                i = offset
                while not stop.is_set():
                    tx = {
                        **serving_world.transactions[i % len(serving_world.transactions)],
                        "transaction_id": f"kill9_{offset}_{i}",
                    }
                    try:
                        response = http.post("/v1/predict", json={"transactions": [tx]})
                    except httpx.HTTPError:
                        return  # the server died under us: that request was never acknowledged
                    if response.status_code == 200:
                        with lock:
                            acknowledged.append(response.json()["predictions"][0]["transaction_id"])
                            if len(acknowledged) >= 200:
                                enough.set()
                    i += 1

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        assert enough.wait(60), f"only {len(acknowledged)} acknowledged predictions in 60 s"
        server.send_signal(signal.SIGKILL)  # right after an answer, mid-traffic, with requests in flight
        server.wait(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop.set()
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        log_file.close()
    log = (
        PostgresPredictionLog(log_url, read_only=True)
        if log_url
        else PredictionLog(serving_world.settings.state.prediction_log, read_only=True)
    )
    logged = set(log.read()["transaction_id"])
    missing = set(acknowledged) - logged
    assert len(acknowledged) >= 200 and not missing, f"{len(missing)} acknowledged predictions lost"
    assert not list(leaked_metrics_dir.iterdir()), "the service kept its metrics in Feast's multiprocess dir"
