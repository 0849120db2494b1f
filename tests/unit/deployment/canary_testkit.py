"""Helpers of the canary tests: faulty challengers registered as real MLflow pyfunc versions, and a
constant client load against a running service."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import mlflow.pyfunc


class FaultyModel(mlflow.pyfunc.PythonModel):
    """The trained model with one fault: ``raise`` for some inputs, ``slow`` by ``delay_s`` per call,
    ``shift`` its scores to just below 1 (it flags everything). Warm-up rows (integral amounts) never raise, so it loads."""

    def __init__(self, fault: str, delay_s: float = 0.15) -> None:
        self.fault = fault
        self.delay_s = delay_s

    def load_context(self, context: Any) -> None:
        self.base = mlflow.pyfunc.load_model(context.artifacts["base"])

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        if self.fault == "raise":
            cents = (model_input["amount"] * 100).round().astype("int64")
            if ((cents % 100 != 0) & (cents % 3 == 0)).any():
                raise ValueError("injected fault: this model cannot score amounts like these")
        out = self.base.predict(model_input)
        if self.fault == "slow":
            time.sleep(self.delay_s)
        if self.fault == "shift":  # miscalibrated: every transaction looks like fraud (ranking kept)
            out = out.copy()
            out["score"] = 0.99 + 0.009 * out["score"]
        return out


def register_faulty(tracking_uri: str, base_version: str, fault: str, model_name: str = "fraud_detector") -> str:
    """Log and register a ``FaultyModel`` wrapping ``base_version``; returns the new version."""
    import mlflow
    from mlflow.artifacts import download_artifacts

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    base_uri = f"models:/{model_name}/{base_version}"
    signature = mlflow.models.get_model_info(base_uri).signature
    local = download_artifacts(base_uri)
    mlflow.set_experiment("canary-tests")
    with mlflow.start_run(run_name=f"faulty-{fault}"):
        info = mlflow.pyfunc.log_model(name="model", python_model=FaultyModel(fault), artifacts={"base": local},
                                       signature=signature, pip_requirements=["mlflow"])  # no inference: seconds
    return str(mlflow.register_model(info.model_uri, model_name).version)


@dataclass
class Load:
    """Single-row requests in ``clients`` threads until stopped: (status, variant, version) per request."""

    url: str
    transactions: list[dict[str, Any]]
    clients: int = 2
    outcomes: list[tuple[int, str | None, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(n,), daemon=True) for n in range(self.clients)]

    def _loop(self, offset: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            i = offset
            while not self._stop.is_set():
                tx = self.transactions[i % len(self.transactions)]
                try:
                    response = http.post("/v1/predict", json={"transactions": [tx]})
                    p = response.json()["predictions"][0] if response.status_code == 200 else {}
                    outcome = (response.status_code, p.get("variant"), p.get("model_version"))
                except httpx.HTTPError:
                    outcome = (-1, None, None)
                with self._lock:
                    self.outcomes.append(outcome)
                i += 7

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def failed(self) -> list[tuple[int, str | None, str | None]]:
        with self._lock:
            return [o for o in self.outcomes if o[0] != 200]

    def versions(self) -> Counter:
        with self._lock:
            return Counter((v, m) for s, v, m in self.outcomes if s == 200)
