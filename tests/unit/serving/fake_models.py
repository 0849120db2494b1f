"""A model source that serves a fake, instantly scoring predictor through the real engine and prediction
log: for tests of what happens around scoring (the log's timeouts, retention) without a trained model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loopline.serving.engine import Deployment
from loopline.serving.predictor import Scored


@dataclass
class InstantPredictor:
    version: str = "1"
    model_uri: str = "models:/fraud_detector/1"
    variant: str = "champion"
    warmed: bool = True

    def score(self, rows: list[dict[str, Any]], fresh: Any = None) -> list[Scored]:
        return [Scored(str(r["transaction_id"]), 0.25, False, {"amount": float(r["amount"])}) for r in rows]


class InstantSource:
    def __init__(self, engine: Any) -> None:
        engine.swap(Deployment(champion=InstantPredictor()))
        self.last_error = None

    def start(self) -> InstantSource:
        return self

    def stop(self) -> None:
        pass
