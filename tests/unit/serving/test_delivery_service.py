"""The prediction service reads its use case: with ``LOOPLINE_USE_CASE=delivery`` it takes orders (``{"orders":
[...]}``, validated against the delivery contract), answers a small real regressor's minutes (not a
probability: no cap at 1, no threshold decision), and logs each under its order id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from security_kit import bare_config
from serving_testkit import wait_until

# tests/unit is on sys.path: the regression tests' delivery training set and config (a seconds-long CPU run).
from training.test_regression_training import delivery_config, delivery_training_set

from loopline.config import Settings
from loopline.config.use_case import load_use_case
from loopline.serving.app import create_app
from loopline.serving.prediction_log import PredictionLog
from loopline.serving.predictor import Predictor, warmup_events
from loopline.serving.registry import FixedModel
from loopline.training.train import train

DELIVERY = load_use_case("delivery")
ORDER = {
    "order_id": "o_000000000042",
    "ordered_at": "2026-01-05T12:30:00Z",
    "restaurant_id": "r_0042",
    "pickup_zone": "centre",
    "dropoff_zone": "suburbs_north",
    "distance_km": 7.5,
    "item_count": 3,
    "order_value_eur": 38.0,
    "weather_condition": "rain",
    "couriers_busy_share": 0.8,
    "customer_tier": "regular",
}


class NoFeatures:
    """The online lookup of a use case whose model takes only the order's own columns."""

    def lookup(self, events: list[dict[str, Any]], fresh: Any = None) -> list[dict[str, Any]]:
        return [{} for _ in events]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Predictor]:
    root = tmp_path_factory.mktemp("delivery-serving")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOOPLINE_USE_CASE", "delivery")
        settings = Settings(state_dir=root / "state", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
        settings.state.ensure()
        path = delivery_training_set(root / "orders.parquet", seed=7, days=2, orders_per_day=300)
        result = train(
            path,
            delivery_config(epochs=3),
            tracking_uri=settings.mlflow_uri,
            register_name=DELIVERY.model_name,
            use_case=DELIVERY,
        )
        assert result is not None
        predictor = Predictor.load(
            f"models:/{DELIVERY.model_name}/{result.version}",
            version=str(result.version),
            variant="champion",
            settings=settings,
            features=NoFeatures(),  # type: ignore[arg-type]
            warmup_rounds=2,
        )
    return settings, predictor


@pytest.fixture(scope="module")
def client(world: tuple[Settings, Predictor]):
    settings, predictor = world
    assert settings.use_case == "delivery"
    config = bare_config()
    uri = predictor.model_uri
    app = create_app(
        settings,
        config,
        source_factory=lambda engine: FixedModel(engine, uri, settings, config, loader=lambda *_: predictor),
    )
    with TestClient(app) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200, what="/readyz")
        yield test_client


def test_the_predictor_is_the_use_cases(world: tuple[Settings, Predictor]) -> None:
    _, predictor = world
    assert predictor.id_column == "order_id" and not predictor.classifier
    assert "customer_tier" not in predictor.event_inputs  # a fairness group, never an input
    assert set(predictor.event_inputs) == {*predictor.categorical, *predictor.numeric}
    (warm,) = warmup_events(1, DELIVERY)
    assert set(warm) == set(DELIVERY.event_columns) - {"customer_tier"}


def test_an_order_is_answered_in_minutes_without_a_decision_and_logged(
    client: TestClient, world: tuple[Settings, Predictor]
) -> None:
    settings, _ = world
    response = client.post("/v1/predict", json={"orders": [ORDER]})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert set(prediction) == {"order_id", "score", "decision", "model_version", "variant", "request_id"}
    assert prediction["order_id"] == ORDER["order_id"]
    assert prediction["decision"] is None
    assert 5 < prediction["score"] < 240, prediction  # minutes: not a probability, not capped at 1
    far = {**ORDER, "order_id": "o_000000000043", "distance_km": 25.0}
    near = {**ORDER, "order_id": "o_000000000044", "distance_km": 0.5}
    both = client.post("/v1/predict", json={"orders": [far, near]}).json()["predictions"]
    assert [p["order_id"] for p in both] == [far["order_id"], near["order_id"]]

    rows = PredictionLog(settings.state.prediction_log).read()
    row = rows[rows["request_id"] == prediction["request_id"]].iloc[0]
    assert row["transaction_id"] == ORDER["order_id"]  # the stored id column keeps its name (see the log)
    assert row["customer_id"] == ORDER["restaurant_id"]  # the unit routing is sticky by
    assert row["score"] == pytest.approx(prediction["score"]) and not row["decision"]
    assert json.loads(row["inputs"])["distance_km"] == ORDER["distance_km"]

    # The score histogram is in minutes too: the answered scores fall in finite buckets, not all in +Inf.
    metrics = client.get("/metrics").text
    inf = [
        line for line in metrics.splitlines() if line.startswith("loopline_score_bucket") and "+Inf" in line
    ]
    below = [
        line
        for line in metrics.splitlines()
        if line.startswith("loopline_score_bucket") and 'le="500.0"' in line
    ]
    assert (
        inf
        and below
        and [line.rsplit(" ", 1)[1] for line in inf] == [line.rsplit(" ", 1)[1] for line in below]
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"distance_km": -1}, "distance_km"),
        ({"distance_km": "far"}, "distance_km"),
        ({"pickup_zone": "atlantis"}, "pickup_zone"),
        ({"item_count": 0}, "item_count"),
        ({"order_id": None}, "order_id"),
        ({"restaurant_id": "<b>r</b>"}, "restaurant_id"),
        ({"ordered_at": "3026-01-01T00:00:00Z"}, "ordered_at"),
    ],
)
def test_a_bad_order_is_a_422_naming_the_field(
    client: TestClient, changes: dict[str, Any], field: str
) -> None:
    order = {k: v for k, v in {**ORDER, **changes}.items() if v is not None}
    response = client.post("/v1/predict", json={"orders": [order]})
    assert response.status_code == 422, response.text
    assert ["body", "orders", 0, field] in [e["loc"][:4] for e in response.json()["detail"]]


def test_fraud_s_list_key_is_not_delivery_s(client: TestClient) -> None:
    response = client.post("/v1/predict", json={"transactions": [ORDER]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][:2] == ["body", "orders"]


def test_the_openapi_schema_documents_orders_and_minutes(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["PredictRequest"]["properties"]["orders"]["items"] == {
        "$ref": "#/components/schemas/Order"
    }
    order = schemas["Order"]
    assert set(order["required"]) == set(DELIVERY.event_columns) - {"customer_tier"}
    assert order["properties"]["pickup_zone"]["enum"][0] == "centre"
    prediction = schemas["Prediction"]["properties"]
    assert "order_id" in prediction and "maximum" not in prediction["score"]


def test_the_model_name_defaults_to_the_use_case_s(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from loopline.serving.config import load_serving_config

    monkeypatch.setenv("LOOPLINE_USE_CASE", "delivery")
    assert load_serving_config().registry.model_name == "delivery_time"
    explicit = tmp_path / "serving.yaml"
    explicit.write_text("registry:\n  model_name: eta_v2\n")
    assert load_serving_config(explicit).registry.model_name == "eta_v2"
    monkeypatch.setenv("LOOPLINE_USE_CASE", "fraud")
    assert load_serving_config().registry.model_name == "fraud_detector"
