"""The tabular model of every use case: a preprocessor fitted on training rows and an MLP with categorical
embeddings, one output per row.

``TabularModel`` bundles both (plus the weights, on CPU, and the task) into one picklable object that scores
RAW feature rows — the columns of a training set or of an online lookup — so serving needs nothing else. Its
task is the use case's: a binary classifier's output is a logit (``predict`` gives the probability), a
regressor's is the standardised target (``predict`` gives it back in the label's units).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from loopline.config.use_case import TaskType

UNKNOWN_INDEX = 0  # every categorical's index 0: missing or unseen at fit time
# Raw rows to score: a DataFrame, or (serving's hot path, no pandas) a mapping of column → 1-d ndarray
# in the signature's types (categoricals as object arrays of str/None, numerics as float64).
Rows = pd.DataFrame | Mapping[str, np.ndarray]


def _row_count(frame: Rows) -> int:
    if isinstance(frame, pd.DataFrame):
        return len(frame)
    return len(next(iter(frame.values()))) if frame else 0


def _numeric(frame: Rows, column: str) -> np.ndarray:
    series = frame[column]
    if series.dtype == "float64":
        # Serving's hot path (inputs already float64): the general conversion below costs ~1 ms per call.
        array = np.array(series, dtype="float64", copy=True)
        array[~np.isfinite(array)] = np.nan
        return array
    series = series if isinstance(series, pd.Series) else pd.Series(series, dtype="object")
    values = pd.to_numeric(series.astype("object").where(series.notna(), np.nan), errors="coerce")
    array = values.to_numpy(dtype="float64", na_value=np.nan)
    array[~np.isfinite(array)] = np.nan
    return array


@dataclass
class Preprocessor:
    """Numeric: optional log1p, median imputation + a missing indicator per column, standardisation.
    Categorical: vocabulary of the training rows; missing and unseen values share the unknown bucket."""

    numeric: list[str]
    categorical: list[str]
    log1p: list[str] = field(default_factory=list)
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    vocab: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def input_columns(self) -> list[str]:
        """The raw columns scoring needs (categoricals first, then numerics)."""
        return [*self.categorical, *self.numeric]

    @property
    def numeric_width(self) -> int:
        return 2 * len(self.numeric)  # value + missing indicator

    def cardinalities(self) -> list[int]:
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    def _raw_numeric(self, frame: Rows, column: str) -> np.ndarray:
        values = _numeric(frame, column)
        if column in self.log1p:
            values = np.log1p(np.clip(values, 0.0, None))
        return values

    def fit(self, frame: pd.DataFrame) -> Preprocessor:
        self._check_columns(frame)
        for column in self.numeric:
            values = self._raw_numeric(frame, column)
            finite = values[~np.isnan(values)]
            median = float(np.median(finite)) if finite.size else 0.0
            filled = np.where(np.isnan(values), median, values)
            std = float(filled.std())
            self.medians[column] = median
            self.means[column] = float(filled.mean())
            self.stds[column] = std if std > 1e-12 else 1.0
        for column in self.categorical:
            seen = sorted({str(v) for v in frame[column].dropna().unique()})
            self.vocab[column] = {value: i + 1 for i, value in enumerate(seen)}
        return self

    def _check_columns(self, frame: Rows) -> None:
        missing = [c for c in self.input_columns if c not in frame]  # a DataFrame's `in` looks at columns
        if missing:
            raise ValueError(f"input rows lack the model's columns: {missing}")

    def transform(self, frame: Rows) -> tuple[np.ndarray, np.ndarray]:
        """(numeric float32 [n, 2 * len(numeric)], categorical int64 [n, len(categorical)])."""
        self._check_columns(frame)
        n = _row_count(frame)
        numeric = np.zeros((n, self.numeric_width), dtype="float32")
        for i, column in enumerate(self.numeric):
            values = self._raw_numeric(frame, column)
            missing = np.isnan(values)
            filled = np.where(missing, self.medians[column], values)
            numeric[:, 2 * i] = (filled - self.means[column]) / self.stds[column]
            numeric[:, 2 * i + 1] = missing
        categorical = np.zeros((n, len(self.categorical)), dtype="int64")
        for j, column in enumerate(self.categorical):
            vocab = self.vocab[column]
            categorical[:, j] = [
                UNKNOWN_INDEX
                if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA
                else vocab.get(str(v), UNKNOWN_INDEX)
                for v in frame[column].tolist()
            ]
        return numeric, categorical


class TabularMLP(nn.Module):
    """Embeddings for each categorical, concatenated with the numerics, through an MLP → one output per row
    (a classifier's logit, a regressor's standardised value)."""

    def __init__(
        self,
        cardinalities: list[int],
        embedding_dims: list[int],
        numeric_width: int,
        hidden_sizes: list[int],
        dropout: float,
    ) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(n, d) for n, d in zip(cardinalities, embedding_dims, strict=True)
        )
        layers: list[nn.Module] = []
        width = numeric_width + sum(embedding_dims)
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric] + [emb(categorical[:, j]) for j, emb in enumerate(self.embeddings)]
        scores: torch.Tensor = self.mlp(torch.cat(parts, dim=1)).squeeze(1)
        return scores


@dataclass
class TabularModel:
    """Everything needed to score raw rows: preprocessor, architecture, CPU weights, the task and (for a
    regressor) the target's training mean and standard deviation, which turn the network's standardised
    output back into the label's units."""

    preprocessor: Preprocessor
    architecture: dict[str, Any]
    state_dict: dict[str, torch.Tensor] | None = None
    # Defaults (and ``__setstate__``) make a bundle pickled before the task existed a classifier, as it was.
    task: TaskType = "binary_classification"
    target_mean: float = 0.0
    target_std: float = 1.0
    _module: TabularMLP | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        preprocessor: Preprocessor,
        embedding_dims: list[int],
        hidden_sizes: list[int],
        dropout: float,
        task: TaskType = "binary_classification",
    ) -> TabularModel:
        architecture = {
            "cardinalities": preprocessor.cardinalities(),
            "embedding_dims": list(embedding_dims),
            "numeric_width": preprocessor.numeric_width,
            "hidden_sizes": list(hidden_sizes),
            "dropout": dropout,
        }
        return cls(preprocessor=preprocessor, architecture=architecture, task=task)

    @property
    def is_regressor(self) -> bool:
        return self.task == "regression"

    def fit_target(self, labels: np.ndarray) -> None:
        """A regressor: store the training labels' mean and standard deviation (``target`` standardises with
        them, ``predict`` undoes it). Nothing for a classifier."""
        if not self.is_regressor:
            return
        values = np.asarray(labels, dtype="float64")
        if not np.isfinite(values).all():
            raise ValueError("regression labels must all be finite numbers")
        self.target_mean = float(values.mean()) if values.size else 0.0
        std = float(values.std()) if values.size else 0.0
        self.target_std = std if std > 1e-12 else 1.0

    def target(self, labels: np.ndarray) -> np.ndarray:
        """What the network learns (float32): a classifier's 0/1 labels as they are, a regressor's labels
        standardised with the stored training mean and standard deviation."""
        values = np.asarray(labels, dtype="float64")
        if self.is_regressor:
            values = (values - self.target_mean) / self.target_std
        return values.astype("float32")

    def outputs(self, raw: torch.Tensor) -> np.ndarray:
        """The network's raw outputs as predictions: a classifier's probabilities (float32, the sigmoid of its
        logits) or a regressor's values in the label's units (float64)."""
        if self.is_regressor:
            return raw.float().cpu().numpy().astype("float64") * self.target_std + self.target_mean
        probabilities: np.ndarray = torch.sigmoid(raw.float()).cpu().numpy()
        return probabilities

    def build_module(self) -> TabularMLP:
        return TabularMLP(**self.architecture)

    def set_weights(self, module: nn.Module) -> None:
        self.state_dict = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
        self._module = None

    def module(self) -> TabularMLP:
        if self._module is None:
            if self.state_dict is None:
                raise RuntimeError("the model has no trained weights yet")
            module = self.build_module()
            module.load_state_dict(self.state_dict)
            self._module = module.eval()
        return self._module

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_module"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A bundle pickled by an earlier version (a FraudModel) has no task: it is a classifier.
        self.__dict__.update(
            {"task": "binary_classification", "target_mean": 0.0, "target_std": 1.0, **state, "_module": None}
        )

    @torch.no_grad()
    def predict(self, frame: Rows, batch_size: int = 8192) -> np.ndarray:
        """One float64 per row, computed on CPU: a classifier's positive-class probability in [0, 1], a
        regressor's prediction in the label's units."""
        numeric, categorical = self.preprocessor.transform(frame)
        module = self.module()
        n = _row_count(frame)
        out = np.empty(n, dtype="float64")
        for start in range(0, n, batch_size):
            raw = module(
                torch.from_numpy(numeric[start : start + batch_size]),
                torch.from_numpy(categorical[start : start + batch_size]),
            )
            out[start : start + batch_size] = self.outputs(raw)
        return out

    def predict_proba(self, frame: Rows, batch_size: int = 8192) -> np.ndarray:
        """A classifier's positive-class probability per row, in [0, 1] (``predict`` for a classifier)."""
        if self.is_regressor:
            raise TypeError(
                "predict_proba: this model is a regressor (task 'regression'), it has no probabilities; "
                "call predict(frame), which returns its predictions in the label's units"
            )
        return self.predict(frame, batch_size)


# Models registered in MLflow by earlier versions are pickles that name loopline.training.model.FraudModel
# (and modules built as FraudMLP): these aliases keep them loading (as classifiers, see __setstate__).
FraudModel = TabularModel
FraudMLP = TabularMLP
