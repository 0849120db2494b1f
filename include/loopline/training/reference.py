"""The reference sample the trainer keeps with each model (read back by ``monitoring.reference``).

``reference/reference.parquet``: up to 40k rows of the whole training window — the model's raw inputs as
serving logs them, with the model's score, the label, the split and the time of each row — and
``reference/reference.json`` (the column kinds), logged to the version's MLflow run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopline.config.use_case import UseCase

REFERENCE_DIR = "reference"
REFERENCE_FILE = "reference.parquet"
REFERENCE_META = "reference.json"
REFERENCE_ROWS = 40_000
SCORE = "score"
SPLIT = "reference_split"


def build_reference(
    model: Any,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    use_case: UseCase,
    rows: int = REFERENCE_ROWS,
    seed: int = 0,
) -> pd.DataFrame:
    """Up to ``rows`` rows of the whole training window (training and validation rows alike): a systematic
    sample in time order (every n-th event from a random start), so every day, hour and weekday of the
    window keeps its share. The model inputs in the signature's types plus ``score``, the use case's label,
    ``reference_split`` and its event time column. ``model`` is the trained bundle (``predict`` on raw
    rows: a classifier's probability, a regressor's prediction — the ``score`` serving logs for it)."""
    from loopline.training.pyfunc import as_model_input

    label, time = use_case.label_column, use_case.time_column
    both = pd.concat(
        [train_rows.assign(**{SPLIT: "train"}), val_rows.assign(**{SPLIT: "validation"})], ignore_index=True
    )
    if time in both:
        both = both.sort_values(time, kind="stable", ignore_index=True)
    if len(both) > rows:
        start = np.random.default_rng(seed).random()
        both = both.iloc[np.floor((start + np.arange(rows)) * len(both) / rows).astype("int64")]
    frame = as_model_input(both[[*categorical, *numeric]], categorical, numeric).reset_index(drop=True)
    frame[SCORE] = np.asarray(model.predict(frame), dtype="float64") if len(frame) else np.empty(0)
    dtype = "int64" if use_case.task == "binary_classification" else "float64"
    frame[label] = both[label].to_numpy(dtype=dtype) if label in both else pd.NA
    frame[SPLIT] = both[SPLIT].to_numpy()
    if time in both:
        frame[time] = both[time].to_numpy()
    return frame


def log_reference(frame: pd.DataFrame, categorical: list[str], numeric: list[str], label: str) -> None:
    """Log the sample, its column kinds and its ``label`` column's name to the active MLflow run."""
    import mlflow

    meta = {
        "categorical": categorical,
        "numeric": numeric,
        "rows": len(frame),
        "score": SCORE,
        "label": label,
        "validation_rows": int((frame[SPLIT] == "validation").sum()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / REFERENCE_FILE
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), REFERENCE_DIR)
    mlflow.log_dict(meta, f"{REFERENCE_DIR}/{REFERENCE_META}")
