"""Issue 19, item 1: the optional API key. Set, it guards /v1/predict, /metrics and the docs (Bearer or
X-API-Key, compared in constant time, 401 with WWW-Authenticate and a body that echoes nothing); the probes
stay open; unset, the middleware does no work for it at all. Loopline's own clients send it."""

from __future__ import annotations

import asyncio
import json

import pytest
from security_kit import TX, bare_client, bare_config

from loopline.serving import app as app_module
from loopline.serving.config import (
    API_KEY_ENV,
    AuthConfig,
    ServingConfigError,
    api_keys,
    client_headers,
)

KEY = "k3y-for-tests-0123456789abcdef"
OLD_KEY = "old-key-still-accepted-98765"
GUARDED = [
    ("POST", "/v1/predict"),
    ("GET", "/metrics"),
    ("GET", "/docs"),
    ("GET", "/openapi.json"),
    ("GET", "/no-such-path"),
]


def _call(client, method, path, headers=None):
    if method == "POST":
        return client.post(path, json={"transactions": [TX]}, headers=headers or {})
    return client.get(path, headers=headers or {})


@pytest.fixture
def keyed(tmp_path, monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, f"{KEY}, {OLD_KEY}")
    with bare_client(tmp_path) as client:
        yield client


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_guarded_routes_refuse_without_a_valid_key(keyed, method, path) -> None:
    for headers in (
        None,
        {"Authorization": "Bearer wrong-key-0123456789abc"},
        {"X-API-Key": "wrong"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": KEY},
        {"X-API-Key": ""},
    ):
        response = _call(keyed, method, path, headers)
        assert response.status_code == 401, (path, headers, response.status_code)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/json"
        assert "API key" in response.json()["detail"]
        assert KEY not in response.text and OLD_KEY not in response.text and "wrong" not in response.text


@pytest.mark.parametrize(("method", "path"), GUARDED[:4])
@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {KEY}"},
        {"X-API-Key": KEY},
        {"X-API-Key": OLD_KEY},
    ],
)
def test_guarded_routes_answer_with_a_valid_key(keyed, method, path, headers) -> None:
    response = _call(keyed, method, path, headers)
    assert response.status_code == (503 if method == "POST" else 200), (path, response.text)


def test_probes_stay_open(keyed) -> None:
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 503  # open, and not ready: no model in this app


def test_refusals_are_counted_in_the_metrics(keyed) -> None:
    for _ in range(3):
        keyed.post("/v1/predict", json={"transactions": [TX]})
    text = keyed.get("/metrics", headers={"X-API-Key": KEY}).text
    assert 'loopline_http_errors_total{route="/v1/predict",status="401"} 3.0' in text


def test_an_invalid_body_with_a_valid_key_still_gets_its_422(keyed) -> None:
    response = keyed.post(
        "/v1/predict", json={"transactions": [{**TX, "amount": -1}]}, headers={"X-API-Key": KEY}
    )
    assert response.status_code == 422


def test_the_schema_documents_the_key(keyed) -> None:
    spec = keyed.get("/openapi.json", headers={"X-API-Key": KEY}).json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert "401" in spec["paths"]["/v1/predict"]["post"]["responses"]
    assert spec["paths"]["/healthz"]["get"]["security"] == []


def test_one_constant_time_compare_per_key_when_set_and_none_when_unset(tmp_path, monkeypatch) -> None:
    calls = []
    real = app_module.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app_module.hmac, "compare_digest", spy)
    monkeypatch.setenv(API_KEY_ENV, KEY)
    with bare_client(tmp_path / "keyed") as client:
        client.post("/v1/predict", json={"transactions": [TX]}, headers={"X-API-Key": KEY})
        assert len(calls) == 1
    calls.clear()
    monkeypatch.delenv(API_KEY_ENV)
    with bare_client(tmp_path / "open") as client:
        assert client.post("/v1/predict", json={"transactions": [TX]}).status_code == 503
        assert client.get("/metrics").status_code == 200 and client.get("/docs").status_code == 200
        assert "securitySchemes" not in client.get("/openapi.json").json()["components"]
    assert calls == [], "no key set: no per-request work for it"


def test_keys_come_from_the_environment_or_a_key_file(tmp_path) -> None:
    config = bare_config()
    assert api_keys(config, {}) == ()
    assert api_keys(config, {API_KEY_ENV: f" {KEY} ,{OLD_KEY},"}) == (KEY, OLD_KEY)
    key_file = tmp_path / "serving-api-key"
    key_file.write_text(f"{OLD_KEY}\n")
    from_file = config.model_copy(update={"auth": AuthConfig(api_key_file=key_file)})
    assert api_keys(from_file, {}) == (OLD_KEY,)
    assert api_keys(from_file, {API_KEY_ENV: KEY}) == (KEY,), "the environment variable wins"
    for text, problem in (("", "holds no API key"), ("short", "shorter than 16")):
        key_file.write_text(text)
        with pytest.raises(ServingConfigError, match=problem):
            api_keys(from_file, {})
    with pytest.raises(ServingConfigError, match="cannot be read"):
        api_keys(config.model_copy(update={"auth": AuthConfig(api_key_file=tmp_path / "missing")}), {})
    with pytest.raises(ServingConfigError, match="shorter than 16"):
        api_keys(config, {API_KEY_ENV: "admin"})
    with pytest.raises(ValueError, match="absolute"):
        AuthConfig(api_key_file="relative/key")


def test_a_short_key_stops_the_app_from_starting_open(tmp_path, monkeypatch) -> None:
    from loopline.config import Settings
    from loopline.serving.app import create_app

    monkeypatch.setenv(API_KEY_ENV, "changeme")
    with pytest.raises(ServingConfigError, match=API_KEY_ENV):
        create_app(Settings(state_dir=tmp_path), bare_config())


def test_client_headers() -> None:
    assert client_headers({}) == {}
    assert client_headers({API_KEY_ENV: f"{KEY},{OLD_KEY}"}) == {"Authorization": f"Bearer {KEY}"}


def test_loopline_traffic_sends_the_key(tmp_path, monkeypatch) -> None:
    """`loopline traffic` (and the demo, which replays with it) against a keyed server: no 401s."""
    from serving_testkit import running_server

    from loopline.config import Settings
    from loopline.serving.app import create_app
    from loopline.serving.traffic import replay

    app = create_app(Settings(state_dir=tmp_path), bare_config(), keys=[KEY])
    rows = [{k: v for k, v in TX.items() if k != "event_timestamp"}]
    with running_server(app) as url:
        monkeypatch.delenv(API_KEY_ENV, raising=False)
        without = asyncio.run(replay(url, rows, rps=20, duration_s=0.2))
        monkeypatch.setenv(API_KEY_ENV, KEY)
        with_key = asyncio.run(replay(url, rows, rps=20, duration_s=0.2))
    assert set(without.errors) == {"401"}, without
    assert set(with_key.errors) == {"503"}, with_key  # authenticated; no model loaded in this app
    json.dumps(with_key.to_dict())
