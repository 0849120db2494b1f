"""The HTTP API in-process (Starlette's TestClient runs the app's lifespan): answers, errors, probes."""

from __future__ import annotations

import json
import threading

import pytest
from fastapi.testclient import TestClient
from serving_testkit import quick_config, wait_until

from loopline.serving.app import GuardMiddleware, create_app
from loopline.serving.prediction_log import PredictionLog
from loopline.serving.predictor import Predictor
from loopline.serving.registry import FixedModel

URI = "models:/fraud_detector/1"


@pytest.fixture(scope="module")
def loaded(serving_world) -> Predictor:
    return Predictor.load(
        URI, version="1", variant="champion", settings=serving_world.settings, warmup_rounds=2
    )


def fixed_app(world, loaded: Predictor, gate: threading.Event | None = None, config=None):
    """An app serving ``URI``; its loader hands over the already loaded predictor (once ``gate`` opens)."""
    config = config or quick_config()

    def loader(uri: str, version: str, variant: str) -> Predictor:
        if gate is not None:
            gate.wait(30)
        return loaded

    return create_app(
        world.settings,
        config,
        source_factory=lambda engine: FixedModel(engine, URI, world.settings, config, loader=loader),
    )


@pytest.fixture(scope="module")
def client(serving_world, loaded):
    with TestClient(fixed_app(serving_world, loaded)) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200, what="/readyz")
        yield test_client


def test_not_ready_until_a_model_is_warm(serving_world, loaded) -> None:
    gate = threading.Event()
    with TestClient(fixed_app(serving_world, loaded, gate)) as test_client:
        assert test_client.get("/healthz").status_code == 200
        ready = test_client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "model_not_loaded"
        assert URI not in ready.text, "no model URIs in the open probe"
        refused = test_client.post("/v1/predict", json={"transactions": serving_world.transactions[:1]})
        assert refused.status_code == 503 and "no model is ready" in refused.json()["detail"]
        gate.set()
        wait_until(lambda: test_client.get("/readyz").status_code == 200, what="/readyz after load")
        assert test_client.get("/readyz").json()["deployment"]["champion"]["version"] == "1"
        assert (
            test_client.post("/v1/predict", json={"transactions": serving_world.transactions[:1]}).status_code
            == 200
        )


def test_predict_one_is_answered_and_logged(client, serving_world) -> None:
    tx = serving_world.transactions[3]
    response = client.post("/v1/predict", json={"transactions": [tx]})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["transaction_id"] == tx["transaction_id"]
    assert (prediction["model_version"], prediction["variant"]) == ("1", "champion")
    assert 0 <= prediction["score"] <= 1 and prediction["decision"] == (prediction["score"] >= 0.5)
    assert prediction["request_id"] == response.headers["x-request-id"]
    rows = PredictionLog(serving_world.settings.state.prediction_log).read()
    row = rows[rows["request_id"] == prediction["request_id"]].iloc[0]
    assert row["transaction_id"] == tx["transaction_id"] and row["customer_id"] == tx["customer_id"]
    assert row["score"] == pytest.approx(prediction["score"]) and row["model_version"] == "1"
    assert json.loads(row["inputs"])["amount"] == tx["amount"]
    assert "cust_tx_count_24h" in json.loads(row["features"]) and row["latency_ms"] > 0


def test_predict_many_keeps_order(client, serving_world) -> None:
    batch = serving_world.transactions[:60]
    response = client.post("/v1/predict", json={"transactions": batch})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["transaction_id"] for p in predictions] == [t["transaction_id"] for t in batch]
    assert len({p["request_id"] for p in predictions}) == 1


def _tx(world, **changes):
    tx = {**world.transactions[0], **changes}
    return {k: v for k, v in tx.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"channel": "telepathy"}, "channel"),
        ({"amount": -5}, "amount"),
        ({"amount": "lots"}, "amount"),
        ({"customer_id": None}, "customer_id"),
        ({"customer_id": ""}, "customer_id"),
        ({"merchant_country": "Germany"}, "merchant_country"),
        ({"event_timestamp": "3026-01-01T00:00:00Z"}, "event_timestamp"),
        ({"event_timestamp": "yesterday"}, "event_timestamp"),
    ],
)
def test_bad_fields_get_a_field_level_422(client, serving_world, changes, field) -> None:
    response = client.post("/v1/predict", json={"transactions": [_tx(serving_world, **changes)]})
    assert response.status_code == 422
    assert ["body", "transactions", 0, field] in [e["loc"][:4] for e in response.json()["detail"]]


def test_batch_size_and_shape_are_validated(client, serving_world) -> None:
    limit = quick_config().limits.max_events_per_request
    too_many = [serving_world.transactions[0]] * (limit + 1)
    for body in ({"transactions": []}, {"transactions": too_many}, {"rows": []}, [1, 2]):
        response = client.post("/v1/predict", json=body)
        assert response.status_code == 422, body
    broken = client.post(
        "/v1/predict", content=b'{"transactions": [', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422


def test_oversized_bodies_get_413_declared_or_streamed(client, serving_world) -> None:
    limit = quick_config().limits.max_body_bytes
    big = json.dumps({"transactions": [serving_world.transactions[0]], "padding": "x" * limit}).encode()
    declared = client.post("/v1/predict", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "limit" in declared.json()["detail"]

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    streamed = client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_non_json_content_types_get_415(client, serving_world, content_type) -> None:
    body = json.dumps({"transactions": serving_world.transactions[:1]}).encode()
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/predict", content=body, headers=headers)
    assert response.status_code == 415 and "application/json" in response.json()["detail"]
    ok = client.post("/v1/predict", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


def test_metrics_count_requests_errors_latency_and_scores(client, serving_world) -> None:
    for tx in serving_world.transactions[:5]:
        assert client.post("/v1/predict", json={"transactions": [tx]}).status_code == 200
    client.post("/v1/predict", json={"transactions": []})
    text = client.get("/metrics").text
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("loopline_predictions_total{")
        and 'variant="champion"' in line
        and 'version="1"' in line
    )
    assert counted >= 5
    assert 'loopline_http_errors_total{route="/v1/predict",status="422"}' in text
    assert 'loopline_score_bucket{le="0.5",variant="champion",version="1"}' in text
    assert 'loopline_prediction_seconds_count{variant="champion",version="1"}' in text
    assert 'loopline_model_loaded{variant="champion",version="1"} 1.0' in text


def test_openapi_documents_the_contract(client) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/predict"]["post"]
    assert {"200", "413", "415", "422", "503"} <= set(post["responses"])
    schemas = spec["components"]["schemas"]
    assert schemas["Transaction"]["properties"]["amount"]["exclusiveMinimum"] == 0
    limit = quick_config().limits.max_events_per_request
    assert schemas["PredictRequest"]["properties"]["transactions"]["maxItems"] == limit


def _guard(app):
    """The app's GuardMiddleware instance (Starlette builds the middleware stack on the first request)."""
    layer = app.middleware_stack
    while not isinstance(layer, GuardMiddleware):
        layer = layer.app
    return layer


def test_the_middleware_fast_path_answers_like_the_fastapi_route(client, serving_world) -> None:
    """Valid predict requests are answered by GuardMiddleware with the route's own function; the same request
    through FastAPI's route gets the same answer, and invalid ones still get FastAPI's 422 from the route."""
    guard = _guard(client.app)
    batch = serving_world.transactions[5:9]
    fast = client.post("/v1/predict", json={"transactions": batch})
    calls = []
    original = guard.predict
    guard.predict = None  # everything through FastAPI's router
    try:
        routed = client.post("/v1/predict", json={"transactions": batch})
    finally:
        guard.predict = original

    def counting(body):
        calls.append(body)
        return original(body)

    guard.predict = counting
    try:
        again = client.post("/v1/predict", json={"transactions": batch})
        invalid = client.post("/v1/predict", json={"transactions": [{**batch[0], "amount": -1}]})
    finally:
        guard.predict = original
    assert fast.status_code == routed.status_code == again.status_code == 200
    assert len(calls) == 2, "both bodies went through the fast path first"

    def without_ids(response):
        return [{k: v for k, v in p.items() if k != "request_id"} for p in response.json()["predictions"]]

    assert without_ids(fast) == without_ids(routed) == without_ids(again)
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == [
        "body",
        "transactions",
        0,
        "amount",
    ]
