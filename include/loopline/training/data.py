"""The training set as the trainer reads it: the parquet and its manifest (a local path or object storage,
the content hash checked), the model's input columns, and the labelled rows split by event time.

Apart from the training loop and MLflow: the gate re-reads a training set to score its holdout, and the
benchmarks split one, without importing torch or MLflow. ``TrainingError`` lives here because most of
what cannot be trained on is found here.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from loopline.config.use_case import UseCase
from loopline.storage.file_helpers import sha256_file
from loopline.training.config import TrainingConfig


class TrainingError(RuntimeError):
    """The training set cannot be trained on (no labels, no positives, inconsistent manifest, ...)."""


def local_path(uri: str | Path) -> Path | None:
    """The local file a training-set reference names (a plain path or ``file://``); None for a remote URI."""
    if isinstance(uri, Path):
        return uri
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if "://" not in uri:
        return Path(uri)
    return None


def read_training_set(uri: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The parquet and its manifest (``<uri>.manifest.json``); the file must be the one the manifest describes.

    ``uri`` is a local path, ``file://`` or any fsspec URL the image can read (``s3://`` needs s3fs)."""
    from loopline.storage.files import StorageError, check_local_read

    path = local_path(uri)
    if path is None:
        return _read_remote(str(uri))
    try:
        check_local_read(path)
    except StorageError as exc:
        raise TrainingError(str(exc)) from None
    if not path.exists():
        raise TrainingError(f"training set not found: {path}")
    manifest_path = path.with_name(path.name + ".manifest.json")
    if not manifest_path.exists():
        raise TrainingError(
            f"training set manifest not found: {manifest_path} (build it with "
            "`loopline features training-set`)"
        )
    manifest = json.loads(manifest_path.read_text())
    _check_hash(path, manifest, sha256_file(path))
    return pd.read_parquet(path), manifest


def _check_hash(where: Any, manifest: dict[str, Any], actual: str) -> None:
    if manifest.get("content_hash") and manifest["content_hash"] != actual:
        raise TrainingError(
            f"{where} changed since its manifest was written: content hash {actual} "
            f"!= manifest {manifest['content_hash']}"
        )
    manifest["content_hash"] = actual


def _read_remote(uri: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    from loopline.storage.files import StorageError, fetch_bytes

    def fetch(url: str) -> bytes:
        try:
            return fetch_bytes(url)
        except StorageError as exc:
            raise TrainingError(f"training set unreadable: {exc}") from None
        except (ImportError, ValueError) as exc:  # unknown protocol, or its filesystem package missing
            raise TrainingError(
                f"cannot read {url}: {exc} (install the fsspec filesystem for this scheme "
                "in the trainer image, e.g. s3fs for s3://)"
            ) from None

    manifest = json.loads(fetch(uri + ".manifest.json"))
    # Download once, hash and parse the same bytes: the hash describes exactly what was trained on.
    data = fetch(uri)
    _check_hash(uri, manifest, hashlib.sha256(data).hexdigest())
    return pd.read_parquet(io.BytesIO(data)), manifest


def feature_columns(
    config: TrainingConfig, manifest: dict[str, Any], use_case: UseCase
) -> tuple[list[str], list[str]]:
    """(categorical, numeric) model inputs; the use case's fairness group columns, label and label time are
    never among them (a config that names a group column as an input is refused)."""
    groups = sorted(set(use_case.group_columns) & config.features.inputs())
    if groups:
        raise TrainingError(f"fairness group / excluded columns must not be model inputs: {groups}")
    categorical = list(config.features.categorical)
    numeric: list[str] = list(manifest.get("features", [])) if config.features.numeric_from_manifest else []
    numeric += [c for c in config.features.extra_numeric if c not in numeric]
    excluded = (
        set(config.features.excluded)
        | set(use_case.group_columns)
        | {use_case.label_column, use_case.label_time_column}
    )
    numeric = [c for c in numeric if c not in excluded and c not in categorical]
    leaked = sorted(excluded & set(categorical))
    if leaked:
        raise TrainingError(f"excluded columns configured as model inputs: {leaked}")
    return categorical, numeric


def labelled_split(
    frame: pd.DataFrame, fraction: float, use_case: UseCase
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labelled rows (a classifier's label as int64, a regressor's as float64), ordered by event time (then
    id); the last ``fraction`` of them is the validation set."""
    label, time, id_column = use_case.label_column, use_case.time_column, use_case.id_column
    if label not in frame.columns:
        raise TrainingError(f"the training set has no {label!r} column")
    labelled = frame[frame[label].notna()].copy()
    if labelled.empty:
        raise TrainingError(
            f"the training set has no labelled rows ({len(frame)} rows, all without a label): "
            "wait for labels to arrive or move labels_as_of later"
        )
    if use_case.task != "binary_classification":
        labelled[label] = labelled[label].astype("float64")
    else:
        labelled[label] = labelled[label].astype("int64")
    if use_case.task == "binary_classification" and int(labelled[label].sum()) == 0:
        raise TrainingError(
            f"the training set has no positive rows ({label!r} = 1) among its {len(labelled)} labelled rows: "
            "a classifier cannot learn from one class"
        )
    sort_cols = [time, id_column] if id_column in labelled else [time]
    labelled = labelled.sort_values(sort_cols, kind="stable").reset_index(drop=True)
    n_val = max(1, int(round(len(labelled) * fraction)))
    if n_val >= len(labelled):
        raise TrainingError(
            f"only {len(labelled)} labelled rows: too few to hold out {fraction:.0%} for validation"
        )
    return labelled.iloc[: len(labelled) - n_val], labelled.iloc[len(labelled) - n_val :]
