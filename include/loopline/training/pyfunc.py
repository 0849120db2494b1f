"""The MLflow pyfunc flavour of the tabular model: raw feature rows in, a ``score`` column out (a classifier's
probability, a regressor's prediction in the label's units)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel  # what mlflow.pyfunc.PythonModel is (mlflow.pyfunc re-exports it)

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import TensorSpec

BUNDLE_ARTIFACT = "fraud_model"  # the artifact key of every registered version, old and new: never rename it


def as_model_input(frame: pd.DataFrame, categorical: list[str], numeric: list[str]) -> pd.DataFrame:
    """Raw rows in the types the logged signature declares: categoricals as str (missing: None), every
    numeric as float64 (ints and bools converted, missing: NaN). MLflow's schema enforcement refuses
    int64 or bool where the signature says double, so callers with online-store rows use this first."""
    out = pd.DataFrame(index=frame.index)
    for column in categorical:
        values = frame[column].astype("object")
        # The ignores: pandas-stubs allow no None as ``other``; pandas takes it (None, not NaN, here).
        kept = values.where(values.notna(), None)  # type: ignore[call-overload]
        out[column] = kept.map(lambda v: v if v is None else str(v))
    for column in numeric:
        values = frame[column].astype("object").where(frame[column].notna(), None)  # type: ignore[call-overload]
        out[column] = pd.to_numeric(
            values.map(lambda v: float(v) if isinstance(v, bool) else v), errors="coerce"
        ).astype("float64")
    return out


def signature_for(categorical: list[str], numeric: list[str]) -> ModelSignature:
    """Input: the raw feature columns (all optional: a missing value is scored, imputed); output: score (a
    classifier's probability, a regressor's prediction)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    inputs: list[ColSpec | TensorSpec] = [ColSpec("string", c, required=False) for c in categorical]
    inputs += [ColSpec("double", c, required=False) for c in numeric]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double", "score")]))


def save_bundle(model: Any, path: str | Path) -> Path:
    """Pickle a ``TabularModel`` (weights already on CPU) for ``log_model(artifacts=...)``."""
    path = Path(path)
    with open(path, "wb") as handle:
        pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def load_bundle(path: str | Path) -> Any:
    with open(path, "rb") as handle:
        return pickle.load(handle)


class TabularPyfuncModel(PythonModel):
    """Wraps the preprocessor + torch weights; scores on CPU whatever device trained it.

    ``predict`` takes raw feature rows (see ``as_model_input`` for the declared types): unseen categories
    go to the unknown bucket, missing numerics are imputed and flagged, extra columns are ignored. Its
    ``score`` is the bundle's ``predict``: a classifier's probability, a regressor's prediction in the
    label's units."""

    def load_context(self, context: Any) -> None:
        self.model = load_bundle(context.artifacts[BUNDLE_ARTIFACT])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        scores = self.model.predict(frame)
        return pd.DataFrame({"score": scores}, index=frame.index)

    def predict_columns(self, columns: dict[str, Any]) -> Any:
        """Serving's hot path: the scores ``predict`` gives for ``pd.DataFrame(columns)``, as a float64 array,
        without building the frame (columns in the signature's types: object arrays of str/None for the
        categoricals, float64 for the numerics). For a handful of rows the DataFrame costs more than the model."""
        return self.model.predict(columns)


# MLflow pickles the python_model of each logged version by reference: versions registered before the rename
# name loopline.training.pyfunc.FraudDetectorModel, and load through this alias.
FraudDetectorModel = TabularPyfuncModel
