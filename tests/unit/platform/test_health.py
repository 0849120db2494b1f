"""Airflow's health as ``loopline status`` reports it, against a real (tiny) HTTP server: a slow api-server is
waited for, and one that never answers is reported with the reason, never as an empty health."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loopline.config import Settings
from loopline.platform.health import AIRFLOW_COMPONENTS, airflow_health, airflow_health_report

HEALTHY = {name: {"status": "healthy"} for name in AIRFLOW_COMPONENTS}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours proxy variables; loopback requests must go straight to the test server."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


class SlowAirflow:
    """Answers GET /api/v2/monitor/health after ``delay_s`` seconds."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake.requests += 1
                time.sleep(fake.delay_s)
                body = json.dumps(HEALTHY).encode()
                self.send_response(200 if self.path == "/api/v2/monitor/health" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def slow_airflow() -> Iterator[SlowAirflow]:
    fake = SlowAirflow(delay_s=3)
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
        fake.thread.join(timeout=5)


def _settings(tmp_path: Path, url: str) -> Settings:
    return Settings(state_dir=tmp_path / "state", airflow_url=url)


def test_a_slow_api_server_is_waited_for_not_reported_empty(
    tmp_path: Path, slow_airflow: SlowAirflow
) -> None:
    settings = _settings(tmp_path, slow_airflow.url)
    assert airflow_health(settings) == {}  # the waiting loop's 2-second probe gives up on it
    health, why_unknown = airflow_health_report(settings, patience_s=10)
    assert why_unknown is None
    assert health == {name: "healthy" for name in HEALTHY}


def test_an_api_server_that_never_answers_is_reported_with_the_reason(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connecting is refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        began = time.monotonic()
        health, why_unknown = airflow_health_report(_settings(tmp_path, url), patience_s=2)
    assert health == {}
    assert why_unknown == f"no answer from {url}/api/v2/monitor/health within 2 s"
    assert 2 <= time.monotonic() - began < 6  # it kept asking for its patience, and no longer


def test_status_says_at_once_why_airflow_health_is_unknown_when_its_api_server_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loopline.platform import stack

    down = stack.StackStatus(
        running={"mlflow": True, "api-server": False}, pids={"mlflow": 1, "api-server": 2}
    )
    monkeypatch.setattr(stack, "status", lambda settings: down)
    began = time.monotonic()
    info = stack.describe(_settings(tmp_path, "http://127.0.0.1:9"))
    assert time.monotonic() - began < 2  # not the report's 15 s of patience: nothing would answer
    assert info["airflow"]["health"] == {}
    assert info["airflow"]["health_unknown"] == "the api-server is not running (`loopline up` starts it)"
