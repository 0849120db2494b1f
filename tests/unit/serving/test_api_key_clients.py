"""Loopline's own clients of the prediction service send its API key when one is set: the gate's probe
calls (``gating.infra``) and the canary's metrics scrape (``deployment.windows``)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loopline.deployment.windows import scrape_metrics
from loopline.gating.infra import _call
from loopline.serving.config import API_KEY_ENV

KEY = "k3y-for-the-clients-test-0123456789"


@pytest.fixture
def recorder():
    """A local HTTP server that answers 200 with an empty metrics page and records each request's headers."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            seen.append(dict(self.headers))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            body = b"# no samples\n" if self.path == "/metrics" else b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("key", [KEY, None])
def test_the_gate_probe_and_the_canary_scrape_send_the_key_when_one_is_set(recorder, monkeypatch, key):
    base, seen = recorder
    if key is None:
        monkeypatch.delenv(API_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(API_KEY_ENV, key)
    assert _call(f"{base}/v1/predict", b"{}")[0] == 200
    scrape_metrics(f"{base}/metrics")
    assert len(seen) == 2
    for headers in seen:
        assert headers.get("Authorization") == (f"Bearer {key}" if key else None)
