"""The reference sample kept with each model: what the monitor compares the serving window with.

The trainer logs ``reference/reference.parquet`` (a few thousand rows of the model's raw inputs — the
transaction fields and the Feast features, as serving logs them — with the model's score, the label and
which split the row came from) and ``reference/reference.json`` (the column kinds) to the version's run.
Every validation row is kept (up to the cap): they are the newest labelled rows and the only ones whose
scores say how good the model is on data it did not train on, which the concept-drift check needs.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REFERENCE_DIR = "reference"
REFERENCE_FILE = "reference.parquet"
REFERENCE_META = "reference.json"
REFERENCE_ROWS = 5000
SCORE = "score"
LABEL = "is_fraud"
SPLIT = "reference_split"


class ReferenceError(RuntimeError):
    """The champion has no usable reference sample; the message says how to get one."""


@dataclass(frozen=True)
class Reference:
    """The sample and the column kinds the model was trained with."""

    frame: pd.DataFrame
    categorical: list[str]
    numeric: list[str]
    version: str = ""
    run_id: str = ""

    @property
    def inputs(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    @property
    def validation(self) -> pd.DataFrame:
        return self.frame[self.frame[SPLIT] == "validation"]


def build_reference(model: Any, train_rows: pd.DataFrame, val_rows: pd.DataFrame, categorical: list[str],
                    numeric: list[str], rows: int = REFERENCE_ROWS, seed: int = 0) -> pd.DataFrame:
    """Up to ``rows`` rows: every validation row first (cap permitting), then a random share of training
    rows; the model inputs in the signature's types plus ``score``, ``is_fraud``, ``reference_split`` and
    ``event_timestamp``. ``model`` is a ``FraudModel`` (``predict_proba`` on raw rows)."""
    from loopline.training.pyfunc import as_model_input

    rng = np.random.default_rng(seed)
    val = val_rows.iloc[np.sort(rng.permutation(len(val_rows))[:rows])] if len(val_rows) > rows else val_rows
    room = max(rows - len(val), 0)
    train = train_rows.iloc[np.sort(rng.permutation(len(train_rows))[:room])] if room else train_rows.iloc[:0]
    parts = []
    for split, part in (("train", train), ("validation", val)):
        frame = as_model_input(part[[*categorical, *numeric]], categorical, numeric).reset_index(drop=True)
        frame[SCORE] = np.asarray(model.predict_proba(frame), dtype="float64") if len(frame) else np.empty(0)
        frame[LABEL] = part[LABEL].to_numpy(dtype="int64") if LABEL in part else pd.NA
        frame[SPLIT] = split
        if "event_timestamp" in part:
            frame["event_timestamp"] = part["event_timestamp"].to_numpy()
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def log_reference(frame: pd.DataFrame, categorical: list[str], numeric: list[str]) -> None:
    """Log the sample and its column kinds to the active MLflow run."""
    import mlflow

    meta = {"categorical": categorical, "numeric": numeric, "rows": len(frame), "score": SCORE, "label": LABEL,
            "validation_rows": int((frame[SPLIT] == "validation").sum())}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / REFERENCE_FILE
        frame.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), REFERENCE_DIR)
    mlflow.log_dict(meta, f"{REFERENCE_DIR}/{REFERENCE_META}")


def load_reference(tracking_uri: str, model_name: str, alias: str = "champion") -> Reference:
    """The reference sample of the version holding ``alias`` (default the champion)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from loopline.platform.mlflow_util import mlflow_client

    client = mlflow_client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        raise ReferenceError(f"no version of {model_name!r} holds alias {alias!r} in {tracking_uri}: "
                             "nothing is serving yet, so there is nothing to monitor") from exc
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=REFERENCE_DIR,
                                                        dst_path=tmp, tracking_uri=tracking_uri)
            frame = pd.read_parquet(Path(local) / REFERENCE_FILE)
            meta = json.loads((Path(local) / REFERENCE_META).read_text())
    except (MlflowException, OSError) as exc:
        raise ReferenceError(f"{model_name} v{version.version} (run {version.run_id}) has no "
                             f"{REFERENCE_DIR}/{REFERENCE_FILE}: it was trained before reference samples were "
                             "kept; retrain it (loopline trigger train_model) to monitor it") from exc
    return Reference(frame, list(meta["categorical"]), list(meta["numeric"]), str(version.version), version.run_id)
