"""Issue 19, item 2: /readyz says whether the service is ready and why not, as a code; registry URLs,
paths and exception text stay in the server's log."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import pytest
from security_kit import bare_client
from serving_testkit import wait_until

from loopline.serving.app import READY_REASONS
from loopline.serving.engine import Deployment
from loopline.serving.registry import FixedModel

SECRET_BITS = ("http", "s3cret", "/srv/", "Traceback", "Error", "models:/", "mlflow.db")


@dataclass
class FakePredictor:
    version: str
    model_uri: str
    warmed: bool = True
    variant: str = "champion"


class FakeSource:
    """A model source that reports ``error`` (as RegistryReconciler/FixedModel do) and may swap in a model."""

    def __init__(self, engine, error=None, deployment=None, desired=None):
        self.engine, self.last_error, self.desired = engine, error, desired
        if deployment is not None:
            engine.swap(deployment)

    def start(self):
        return self

    def stop(self):
        pass


def _leaks(text: str) -> list[str]:
    return [bit for bit in SECRET_BITS if bit in text]


@pytest.mark.parametrize(
    ("error", "desired", "reason"),
    [
        (None, None, "model_not_loaded"),
        (
            "registry http://ops:s3cret@mlflow.internal:5000: ConnectionError('Max retries exceeded')",
            None,
            "registry_unreachable",
        ),
        (
            "registered model 'fraud_detector' has no @champion alias",
            type("D", (), {"champion": None})(),
            "no_champion",
        ),
        (
            "champion version 3 failed to load: OSError: [Errno 13] Permission denied: '/srv/mlflow.db'",
            type("D", (), {"champion": "3"})(),
            "model_load_failed",
        ),
    ],
)
def test_not_ready_says_why_as_a_code_and_leaks_nothing(tmp_path, caplog, error, desired, reason) -> None:
    caplog.set_level(logging.INFO, logger="loopline.serving")
    factory = lambda engine: FakeSource(engine, error, desired=desired)  # noqa: E731
    with bare_client(tmp_path, source_factory=factory) as client:
        response = client.get("/readyz")
        predict = client.post("/v1/predict", json={"transactions": []})
        refused = client.post(
            "/v1/predict",
            json={
                "transactions": [
                    {
                        "transaction_id": "t",
                        "event_timestamp": "2026-01-01T00:00:00Z",
                        "customer_id": "c",
                        "merchant_id": "m",
                        "device_id": "d",
                        "channel": "online",
                        "amount": 1.0,
                        "merchant_category": "fuel",
                        "merchant_country": "DE",
                    }
                ]
            },
        )
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready" and body["reason"] == reason and reason in READY_REASONS
    assert body["problem"] == (None if error is None else reason)
    assert _leaks(response.text) == [], response.text
    assert predict.status_code == 422
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert reason in refused.json()["detail"] and _leaks(refused.text) == [], refused.text
    if error is not None:  # the details are in the log instead, once
        logged = [r.getMessage() for r in caplog.records if "readiness" in r.getMessage()]
        assert any(error in line for line in logged), logged


def test_ready_names_versions_but_no_uris(tmp_path) -> None:
    deployment = Deployment(
        champion=FakePredictor("7", "models:/fraud_detector/7"),
        challenger=FakePredictor("8", "s3://bucket/path/model", variant="challenger"),
        challenger_share=0.25,
    )
    failing = "challenger version 8 failed to load: FileNotFoundError: /srv/x"

    def factory(engine):
        return FakeSource(engine, failing, deployment, desired=type("D", (), {"champion": "7"})())

    with bare_client(tmp_path, source_factory=factory) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "reason": "serving",
        "problem": "challenger_load_failed",
        "deployment": {
            "champion": {"version": "7"},
            "challenger": {"version": "8", "share": 0.25, "shadow": False},
        },
    }
    assert _leaks(response.text) == []


def test_warming_and_a_fixed_model_that_cannot_load(tmp_path) -> None:
    from loopline.serving.config import load_serving_config

    config = load_serving_config()
    cold = Deployment(champion=FakePredictor("1", "models:/fraud_detector/1", warmed=False))
    with bare_client(tmp_path / "a", source_factory=lambda engine: FakeSource(engine, None, cold)) as client:
        assert client.get("/readyz").json()["reason"] == "warming"
    tried = threading.Event()

    def loader(uri, version, variant):
        tried.set()
        raise OSError("cannot open /srv/models/model.pkl: Permission denied")

    factory = lambda engine: FixedModel(engine, "models:/fraud_detector/1", None, config, loader=loader)  # noqa: E731
    with bare_client(tmp_path / "b", source_factory=factory) as client:
        wait_until(tried.is_set, what="a load attempt")
        wait_until(lambda: client.get("/readyz").json()["reason"] == "model_load_failed", what="load failure")
        response = client.get("/readyz")
    assert response.json()["problem"] == "model_load_failed", "the gate's probe stops waiting on this"
    assert _leaks(response.text) == [], response.text


def test_starting_before_the_lifespan_ran() -> None:
    from loopline.serving.app import _readiness

    assert _readiness(None, None) == (False, "starting", None)
