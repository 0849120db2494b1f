"""Error text from Airflow bodies, and the token call against a real (tiny) HTTP server."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loopline.platform.airflow_api import AirflowApi, AirflowApiError, RunResult, _detail

# --- _detail --------------------------------------------------------------------------------------


def test_detail_of_a_422_lists_every_field_error() -> None:
    body = json.dumps(
        {
            "detail": [
                {"type": "missing", "loc": ["body", "conf", "epochs"], "msg": "Field required", "input": {}},
                {"type": "int_parsing", "loc": ["query", "limit"], "msg": "Input should be a valid integer"},
            ]
        }
    )
    assert _detail(body) == "conf.epochs: Field required; query.limit: Input should be a valid integer"


def test_detail_of_a_field_error_located_only_in_the_body_is_just_the_message() -> None:
    body = json.dumps({"detail": [{"loc": ["body"], "msg": "Invalid JSON"}, "plain item"]})
    assert _detail(body) == "Invalid JSON; plain item"


def test_detail_with_numeric_locations() -> None:
    body = json.dumps({"detail": [{"loc": ["body", "tasks", 0, "name"], "msg": "too long"}]})
    assert _detail(body) == "tasks.0.name: too long"


def test_detail_of_a_plain_message() -> None:
    assert _detail('{"detail": "The DAG with dag_id: `x` was not found"}') == (
        "The DAG with dag_id: `x` was not found"
    )


def test_detail_of_a_structured_message() -> None:
    assert _detail(json.dumps({"detail": {"reason": "not_found", "message": "m"}})) == "not_found"
    assert _detail(json.dumps({"detail": {"message": "no such run"}})) == "no such run"
    assert json.loads(_detail(json.dumps({"detail": {"code": 7}}))) == {"code": 7}


def test_detail_of_json_without_a_detail_key_keeps_the_payload() -> None:
    assert json.loads(_detail(json.dumps({"title": "Oops", "status": 500}))) == {
        "title": "Oops",
        "status": 500,
    }


def test_detail_of_non_json_text_is_the_text_truncated() -> None:
    assert _detail("Internal Server Error") == "Internal Server Error"
    assert _detail("<html>" + "x" * 2000) == ("<html>" + "x" * 2000)[:500]


def test_detail_of_an_empty_body_is_empty() -> None:
    assert _detail(None) == ""
    assert _detail("") == ""
    assert _detail(b"") == ""


def test_detail_of_json_bytes() -> None:
    assert _detail(b'{"detail": "paused"}') == "paused"


def test_detail_of_non_json_bytes_is_the_decoded_text() -> None:
    assert _detail(b"Bad Gateway") == "Bad Gateway"


# --- RunResult ------------------------------------------------------------------------------------


def test_run_result_succeeded_only_on_success() -> None:
    assert RunResult("d", "r", "success", {}).succeeded
    assert not RunResult("d", "r", "failed", {"t": "failed"}).succeeded


# --- token() --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours proxy variables; loopback requests must go straight to the test server."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listening: connecting is refused, and nobody can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class FakeAirflow:
    """A tiny HTTP server that answers POST /auth/token with a configurable status and body."""

    def __init__(self) -> None:
        self.status = 201
        self.body: bytes = b'{"access_token": "x"}'
        self.requests: list[tuple[str, str, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(("POST", self.path, payload))
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(fake.body)))
                self.end_headers()
                self.wfile.write(fake.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, status: int, body: object) -> None:
        self.status = status
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.fixture
def fake_airflow() -> Iterator[FakeAirflow]:
    fake = FakeAirflow()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()
        fake.thread.join(timeout=5)


def test_token_against_an_unreachable_port_says_to_run_loopline_up(closed_port: int) -> None:
    api = AirflowApi(f"http://127.0.0.1:{closed_port}", "loopline", "pw", timeout=2)
    with pytest.raises(AirflowApiError) as caught:
        api.token()
    message = str(caught.value)
    assert "loopline up" in message
    assert f"127.0.0.1:{closed_port}" in message


def test_token_returns_the_access_token_and_sends_the_credentials(fake_airflow: FakeAirflow) -> None:
    fake_airflow.answer(201, {"access_token": "x", "token_type": "bearer"})
    api = AirflowApi(fake_airflow.url + "/", "alice", "s3cret-pw")

    assert api.token() == "x"
    assert fake_airflow.requests == [("POST", "/auth/token", {"username": "alice", "password": "s3cret-pw"})]


@pytest.mark.parametrize("status", [401, 403])
def test_token_refused_names_the_user(fake_airflow: FakeAirflow, status: int) -> None:
    fake_airflow.answer(status, {"detail": "Invalid credentials"})
    api = AirflowApi(fake_airflow.url, "alice", "wrong")

    with pytest.raises(AirflowApiError) as caught:
        api.token()
    message = str(caught.value)
    assert "'alice'" in message
    assert "refused" in message
    assert "wrong" not in message  # the password is never echoed


def test_token_server_error_shows_status_and_detail(fake_airflow: FakeAirflow) -> None:
    fake_airflow.answer(500, {"detail": "metadata database is locked"})
    api = AirflowApi(fake_airflow.url, "alice", "pw")

    with pytest.raises(AirflowApiError) as caught:
        api.token()
    assert "500" in str(caught.value)
    assert "metadata database is locked" in str(caught.value)
