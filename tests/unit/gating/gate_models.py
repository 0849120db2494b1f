"""Real fraud models with one thing wrong, for the gate tests: each wraps the trained bundle.

Logged with ``code_paths`` (this file), so the serving process of the infra check can unpickle them.
"""

from __future__ import annotations

import time
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from loopline.training.pyfunc import BUNDLE_ARTIFACT, load_bundle


class AlteredModel(mlflow.pyfunc.PythonModel):
    """``noisy``: scores mostly replaced by noise (a worse ranking); ``unfair``: one group's scores
    pushed up so every transaction in it is flagged; ``blind``: one group's scores pushed to zero so no
    transaction in it is flagged (no fraud caught there); ``slow``: a delay per call (0: the base model
    as a new version); ``broken``: cannot load."""

    def __init__(
        self, mode: str, delay_s: float = 0.0, group_column: str = "", group_value: str = ""
    ) -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.group_column = group_column
        self.group_value = group_value

    def load_context(self, context: Any) -> None:
        if self.mode == "broken":
            raise RuntimeError("injected by the test: the model's weights cannot be read")
        self.model = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        scores = np.asarray(self.model.predict_proba(frame), dtype="float64")
        if self.mode == "noisy":
            # Deterministic per row (a hash of the amount), so candidate metrics are repeatable.
            amounts = frame["amount"].fillna(0).to_numpy()
            noise = (np.sin(amounts * 12.9898) * 43758.5453) % 1.0
            scores = 0.15 * scores + 0.85 * noise
        elif self.mode == "unfair" and self.group_column in frame:
            mask = (frame[self.group_column] == self.group_value).to_numpy()
            scores = np.where(mask, 0.6 + 0.4 * scores, scores)
        elif self.mode == "blind" and self.group_column in frame:
            mask = (frame[self.group_column] == self.group_value).to_numpy()
            scores = np.where(mask, 0.0, scores)
        elif self.mode == "slow":
            time.sleep(self.delay_s)
        return pd.DataFrame({"score": scores}, index=frame.index)
