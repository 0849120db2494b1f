"""The reference sample kept with each model: what the monitor compares the serving window with.

The trainer logs (``training.reference``) ``reference/reference.parquet`` (up to 40k rows of the model's raw inputs — the
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

import pandas as pd

from loopline.training.reference import REFERENCE_DIR, REFERENCE_FILE, REFERENCE_META, SCORE, SPLIT

__all__ = ["SCORE", "SPLIT", "Reference", "ReferenceError", "load_reference"]


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


def load_reference(tracking_uri: str, model_name: str, alias: str = "champion") -> Reference:
    """The reference sample of the version holding ``alias`` (default the champion)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from loopline.platform.mlflow_util import mlflow_client

    client = mlflow_client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        raise ReferenceError(
            f"no version of {model_name!r} holds alias {alias!r} in {tracking_uri}: "
            "nothing is serving yet, so there is nothing to monitor"
        ) from exc
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=REFERENCE_DIR, dst_path=tmp, tracking_uri=tracking_uri
            )
            frame = pd.read_parquet(Path(local) / REFERENCE_FILE)
            meta = json.loads((Path(local) / REFERENCE_META).read_text())
    except (MlflowException, OSError) as exc:
        raise ReferenceError(
            f"{model_name} v{version.version} (run {version.run_id}) has no "
            f"{REFERENCE_DIR}/{REFERENCE_FILE}: it was trained before reference samples were "
            "kept; retrain it (loopline trigger train_model) to monitor it"
        ) from exc
    return Reference(
        frame, list(meta["categorical"]), list(meta["numeric"]), str(version.version), version.run_id
    )
