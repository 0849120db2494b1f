"""The reference sample kept with each model: what the monitor compares the serving window with.

The trainer logs ``reference/reference.parquet`` (up to 40k rows of the model's raw inputs — the
transaction fields and the Feast features, as serving logs them — with the model's score, the label, the
split and the time of each row) and ``reference/reference.json`` (the column kinds) to the version's run.
The sample spans the whole training window, so it holds the window's daily, hourly and weekly variation:
the drift thresholds are calibrated on it (``monitoring.calibration``). The concept-drift baseline is not
here: it is the champion's quality on the gate's holdout (``monitoring.concept``).
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
REFERENCE_ROWS = 40_000
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
    """Up to ``rows`` rows of the whole training window (training and validation rows alike): a systematic
    sample in time order (every n-th transaction from a random start), so every day, hour and weekday of
    the window keeps its share. The model inputs in the signature's types plus ``score``, ``is_fraud``,
    ``reference_split`` and ``event_timestamp``. ``model`` is a ``FraudModel`` (``predict_proba`` on raw rows)."""
    from loopline.training.pyfunc import as_model_input

    both = pd.concat([train_rows.assign(**{SPLIT: "train"}), val_rows.assign(**{SPLIT: "validation"})],
                     ignore_index=True)
    if "event_timestamp" in both:
        both = both.sort_values("event_timestamp", kind="stable", ignore_index=True)
    if len(both) > rows:
        start = np.random.default_rng(seed).random()
        both = both.iloc[np.floor((start + np.arange(rows)) * len(both) / rows).astype("int64")]
    frame = as_model_input(both[[*categorical, *numeric]], categorical, numeric).reset_index(drop=True)
    frame[SCORE] = np.asarray(model.predict_proba(frame), dtype="float64") if len(frame) else np.empty(0)
    frame[LABEL] = both[LABEL].to_numpy(dtype="int64") if LABEL in both else pd.NA
    frame[SPLIT] = both[SPLIT].to_numpy()
    if "event_timestamp" in both:
        frame["event_timestamp"] = both["event_timestamp"].to_numpy()
    return frame


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
