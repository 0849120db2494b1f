"""One loaded model version behind the online feature lookup: THE serving code path.

``Predictor.predict`` is what the HTTP service runs per batch and what the benchmark gate times
in-process: online features of the use case's feature service (Feast) → model input in the signature's
types → the MLflow pyfunc → score (a classifier's probability, a regressor's prediction in the label's
units) and, for a classifier, the threshold decision.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from loopline.config import Settings
from loopline.config.use_case import UseCase, load_use_case
from loopline.serving.request import contract

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np
    import pandas as pd

    from loopline.features.fresh import FreshFeatures
    from loopline.features.online import OnlineFeatures


class ModelLoadError(RuntimeError):
    """A model version could not be loaded or did not pass its warm-up."""


@dataclass(frozen=True)
class Scored:
    """One event's result plus what the prediction log keeps about it. ``decision``: whether a classifier's
    score reached the threshold; None for a regressor (no threshold decision)."""

    event_id: str
    score: float
    decision: bool | None
    features: dict[str, Any]

    def response(self, model_version: str, variant: str, id_column: str) -> dict[str, Any]:
        """The answer, the event's id under ``id_column`` (the use case's)."""
        return {
            id_column: self.event_id,
            "score": self.score,
            "decision": self.decision,
            "model_version": model_version,
            "variant": variant,
        }


def _as_float(value: Any) -> float:
    """What ``as_model_input`` makes of a numeric cell: float64, missing or unparsable → NaN."""
    if value is None:
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


_PLAIN_NUMBERS = frozenset((float, int))


def _as_str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def model_columns(
    rows: list[dict[str, Any]], categorical: list[str], numeric: list[str]
) -> dict[str, np.ndarray]:
    """The columns of ``pyfunc.as_model_input(pd.DataFrame(rows), ...)`` built from Python values: an object
    array of str/None per categorical, a float64 array per numeric (a test pins ``model_frame`` of these to
    identical output)."""
    import numpy as np

    data: dict[str, Any] = {}
    for column in categorical:
        values = np.empty(len(rows), dtype="object")
        values[:] = [_as_str(r.get(column)) for r in rows]
        data[column] = values
    # One list of floats per row and one conversion for all of them (a generator per column cost ~3x more):
    # ints and floats, nearly every cell, skip ``_as_float``'s checks.
    table = [
        # cast: the cells are Any (``type(v) in`` is the check; mypy does not narrow on it)
        [
            float(v) if type(v) in _PLAIN_NUMBERS else _as_float(v)
            for v in map(cast("Callable[[str], Any]", row.get), numeric)
        ]
        for row in rows
    ]
    by_column = np.array(table, dtype="float64").reshape(len(rows), len(numeric)).T.copy()
    for j, column in enumerate(numeric):
        data[column] = by_column[j]
    return data


def _frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """``model_columns`` output as a DataFrame, columns in signature order."""
    import pandas as pd

    # Plain ndarrays (not Series) per column: the DataFrame constructor then builds two blocks cheaply.
    return pd.DataFrame(columns, columns=list(columns))


def model_frame(rows: list[dict[str, Any]], categorical: list[str], numeric: list[str]) -> pd.DataFrame:
    """``model_columns`` as a DataFrame: ~50x cheaper than ``as_model_input`` for a handful of rows."""
    return _frame(model_columns(rows, categorical, numeric))


def _signature_columns(model: Any) -> tuple[list[str], list[str]]:
    """(categorical, numeric) inputs from the logged signature: strings and doubles."""
    schema = model.metadata.get_input_schema()
    if schema is None:
        raise ModelLoadError(
            "the model has no input signature: log it with loopline.training (signature_for)"
        )
    categorical: list[str] = []
    numeric: list[str] = []
    for spec in schema.inputs:
        kind = getattr(spec.type, "name", str(spec.type))
        (categorical if kind == "string" else numeric).append(spec.name)
    return categorical, numeric


def _scorer(model: Any) -> Callable[[dict[str, np.ndarray]], Any]:
    """``model_columns`` output → scores, one per row.

    When the signature is all strings and doubles, ``model_columns`` already builds exactly its types, so
    MLflow's per-call schema enforcement (and its wrapper) only repeats that work: the pyfunc's own Python
    model is called directly, through ``predict_columns`` when it has one (Loopline's fraud model: no
    DataFrame at all, which costs more than the model for a handful of rows), else ``predict`` on the
    frame. Other signatures (ints, dates, ...) and other flavours keep MLflow's ``predict``."""

    def through_mlflow(columns: dict[str, np.ndarray]) -> Any:
        return model.predict(_frame(columns))["score"]

    schema = model.metadata.get_input_schema()
    kinds = {getattr(spec.type, "name", str(spec.type)) for spec in schema.inputs} if schema else set()
    try:
        python_model = model.unwrap_python_model()
    except Exception:  # not a python_model flavour (sklearn, torch, ...): MLflow's path
        return through_mlflow
    if not kinds <= {"string", "double"}:
        return through_mlflow
    if callable(getattr(python_model, "predict_columns", None)):
        predict_columns: Callable[[dict[str, np.ndarray]], Any] = python_model.predict_columns
        return predict_columns
    return lambda columns: python_model.predict(None, _frame(columns))["score"]


def warmup_events(n: int, use_case: UseCase) -> list[dict[str, Any]]:
    """Synthetic events of unknown entities (the use case's required event columns, valid values, known
    vocabularies): they exercise the whole path without touching state."""
    request = contract(use_case)
    now = datetime.now(UTC).isoformat()
    time_column = use_case.time_column
    return [
        {c: now if c == time_column else request.example_value(c, i) for c in request.required}
        for i in range(n)
    ]


class Predictor:
    """A loaded, warmed model version. Thread-safe for one caller at a time per predictor."""

    def __init__(
        self,
        model: Any,
        *,
        model_uri: str,
        version: str,
        variant: str,
        features: OnlineFeatures,
        threshold: float,
        use_case: UseCase | None = None,
    ) -> None:
        self.use_case = use_case or load_use_case(Settings().use_case)
        self.model = model
        self.model_uri = model_uri
        self.version = str(version)
        self.variant = variant
        self.features = features
        self.threshold = float(threshold)
        self.categorical, self.numeric = _signature_columns(model)
        # The event's own columns the model takes (the rest come from the feature store), its id, and whether
        # it makes a threshold decision (a classifier) or predicts a quantity (a regressor: no decision).
        self.event_inputs = contract(self.use_case).model_inputs([*self.categorical, *self.numeric])
        self.id_column = self.use_case.id_column
        self.classifier = self.use_case.task == "binary_classification"
        self._predict = _scorer(model)
        self.warmed = False
        self.load_seconds = 0.0

    @classmethod
    def load(
        cls,
        model_uri: str,
        *,
        version: str,
        variant: str,
        settings: Settings,
        features: OnlineFeatures | None = None,
        threshold: float | None = None,
        warmup_rounds: int | None = None,
    ) -> Predictor:
        """Load ``model_uri`` (``models:/fraud_detector/3``, ``runs:/...``, a path) from the settings'
        MLflow, open the online store (unless ``features`` is shared), and warm it up."""
        import mlflow

        from loopline.serving.config import load_serving_config

        config = load_serving_config(config_dir=settings.config_dir)
        started = time.monotonic()
        mlflow.set_tracking_uri(settings.mlflow_uri)
        mlflow.set_registry_uri(settings.mlflow_uri)
        try:
            model = mlflow.pyfunc.load_model(model_uri)
        except Exception as exc:  # MLflow raises many types (missing version, bad artifacts, unpickling)
            raise ModelLoadError(f"cannot load {model_uri} from {settings.mlflow_uri}: {exc}") from exc
        if features is None:
            from loopline.features.online import OnlineFeatures

            features = OnlineFeatures(settings)
        threshold = config.decision_threshold if threshold is None else threshold
        predictor = cls(
            model,
            model_uri=model_uri,
            version=version,
            variant=variant,
            features=features,
            threshold=threshold,
            use_case=load_use_case(settings.use_case),
        )
        predictor.warm(warmup_rounds or config.warmup.rounds, batch=config.batching.max_rows)
        predictor.load_seconds = time.monotonic() - started
        return predictor

    def warm(self, rounds: int, batch: int = 32) -> None:
        """Run the full path a few times (single rows and a batch) so the first request is not slow."""
        try:
            for i in range(rounds):
                self.score(warmup_events(batch if i % 4 == 3 else 1, self.use_case))
        except Exception as exc:
            raise ModelLoadError(f"{self.model_uri} failed its warm-up prediction: {exc}") from exc
        self.warmed = True

    def with_variant(self, variant: str) -> Predictor:
        """The same loaded model under another variant name (a promoted challenger keeps its weights)."""
        clone = object.__new__(Predictor)
        clone.__dict__.update(self.__dict__)
        clone.variant = variant
        return clone

    def score(self, events: list[dict[str, Any]], fresh: FreshFeatures | None = None) -> list[Scored]:
        """Features → model input → pyfunc for each event, in order. ``fresh``: the service's recent
        events (the engine passes them; the gate's in-process timing and the warm-up do not)."""
        import numpy as np

        if not events:
            return []
        looked_up = self.features.lookup(events, fresh)
        inputs = self.event_inputs
        rows = [
            {**{k: event.get(k) for k in inputs}, **feats}
            for event, feats in zip(events, looked_up, strict=True)
        ]
        scores = np.asarray(
            self._predict(model_columns(rows, self.categorical, self.numeric)), dtype="float64"
        )
        if len(scores) != len(events):
            raise RuntimeError(f"the model returned {len(scores)} scores for {len(events)} rows")
        key = self.id_column
        if not self.classifier:
            return [
                Scored(str(event[key]), float(s), None, feats)
                for event, s, feats in zip(events, scores.tolist(), looked_up, strict=True)
            ]
        threshold = self.threshold
        return [
            Scored(str(event[key]), float(s), bool(s >= threshold), feats)
            for event, s, feats in zip(events, scores.tolist(), looked_up, strict=True)
        ]

    def predict(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``{<id column>, "score", "decision", "model_version", "variant"}`` per event."""
        return [s.response(self.version, self.variant, self.id_column) for s in self.score(events)]
