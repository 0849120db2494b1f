"""Issue 19, item 3: what a request may carry. Non-finite numbers are a 422 (FastAPI's own 422 handler could
not encode the NaN it echoed: 500 and a closed connection), and the fields that flow into reports (ids,
merchant category) are restricted to safe characters, so markup is refused at the edge."""

from __future__ import annotations

import json

import pytest
from security_kit import TX, bare_client, raw_predict

from loopline.config.use_case import load_use_case
from loopline.serving.request import event_model
from loopline.usecases.fraud.simulator import CATEGORIES, SimulationConfig, simulate

Transaction = event_model(load_use_case("fraud"))  # what /v1/predict validates each transaction with

XSS = "</script><script>alert(1)</script>"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with bare_client(tmp_path_factory.mktemp("edge")) as test_client:
        yield test_client


def _body(amount_literal: str) -> bytes:
    """A request whose amount is written verbatim into the JSON text (json.dumps cannot write NaN as JSON)."""
    text = json.dumps({"transactions": [{**TX, "amount": 0}]})
    return text.replace('"amount": 0', f'"amount": {amount_literal}').encode()


def test_a_valid_request_passes_validation(client) -> None:
    response = raw_predict(client, _body("42.5"))
    assert response.status_code == 503, response.text  # valid; no model loaded in this app


@pytest.mark.parametrize(
    ("literal", "echoed"),
    [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("1e400", "Infinity"),
        ("-1e400", "-Infinity"),
    ],
)
def test_non_finite_amounts_are_a_422_naming_the_field(client, literal, echoed) -> None:
    body = _body(literal)
    assert literal.encode() in body
    response = raw_predict(client, body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    amount = [e for e in errors if e["loc"] == ["body", "transactions", 0, "amount"]]
    assert amount, errors
    assert "finite" in amount[0]["msg"] or "greater than 0" in amount[0]["msg"], amount
    assert amount[0]["input"] == echoed
    # The connection stays usable: the next request on it is answered normally.
    assert raw_predict(client, _body("1.5")).status_code == 503


def test_nan_anywhere_in_the_body_is_a_422_not_a_500(client) -> None:
    for body in (
        b'{"amount": NaN}',
        b'{"transactions": NaN}',
        b"[NaN, Infinity, -Infinity, 1e400]",
        b'{"transactions": [{"amount": NaN, "nested": {"x": [Infinity]}}]}',
    ):
        response = raw_predict(client, body)
        assert response.status_code == 422, (body, response.status_code, response.text)
        json.loads(response.text)  # strict JSON: no NaN token in the answer


@pytest.mark.parametrize(
    "field", ["transaction_id", "customer_id", "merchant_id", "device_id", "card_id", "merchant_category"]
)
@pytest.mark.parametrize("value", [XSS, "a b", 'a"b', "a<b", "a/b", "é", "a\nb"])
def test_markup_and_odd_characters_in_report_fields_are_refused(client, field, value) -> None:
    response = client.post("/v1/predict", json={"transactions": [{**TX, field: value}]})
    assert response.status_code == 422, response.text
    (error,) = [e for e in response.json()["detail"] if e["loc"][:4] == ["body", "transactions", 0, field]]
    assert error["type"] == "string_pattern_mismatch" and "pattern" in error["msg"]


def test_upper_case_or_overlong_categories_are_refused(client) -> None:
    for value in ("Grocery", "x" * 65):
        response = client.post("/v1/predict", json={"transactions": [{**TX, "merchant_category": value}]})
        assert response.status_code == 422, value


def test_everything_the_simulator_and_the_gate_produce_still_passes() -> None:
    sim = simulate(SimulationConfig(days=2, n_customers=60, seed=3))
    rows = sim.transactions.assign(event_timestamp=lambda f: f["event_timestamp"].astype(str))
    for row in rows.to_dict("records"):
        Transaction.model_validate(row)
    for category in CATEGORIES:
        Transaction.model_validate({**TX, "merchant_category": category})
    for probe_id in (
        "gate_probe_v12_tx_000000000001_gate_unknown",
        "c_gate_probe_unknown",
        "__warmup_c3",
        "T0a1b2c3",
        "urn:tx:2026.01.05-1",
    ):
        Transaction.model_validate({**TX, "transaction_id": probe_id, "customer_id": probe_id})


def test_the_schema_documents_the_restrictions(client) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Transaction"]["properties"]
    assert schema["merchant_category"]["pattern"] and schema["customer_id"]["pattern"]
    assert schema["amount"]["exclusiveMinimum"] == 0


def test_over_a_real_connection_nan_is_a_422_and_the_connection_lives_on(tmp_path) -> None:
    """The bug as a client saw it: uvicorn answered 500 and closed the connection."""
    import httpx
    from security_kit import bare_config
    from serving_testkit import running_server

    from loopline.config import Settings
    from loopline.serving.app import create_app

    app = create_app(Settings(state_dir=tmp_path), bare_config())
    with running_server(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        for literal in ("NaN", "1e400", "NaN"):
            response = http.post(
                "/v1/predict", content=_body(literal), headers={"content-type": "application/json"}
            )
            assert response.status_code == 422, response.text
            assert response.headers.get("connection", "").lower() != "close"
