"""Make a training set reachable by the trainer, wherever the trainer runs.

The local backend trains on the parquet where ``build_training_set`` wrote it. A training pod runs on
another node: the parquet and its manifest are uploaded to the object-store prefix of
``include/config/kubernetes.yaml`` and the pod is given that URI instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loopline.config import Settings
from loopline.k8s.config import load_config, require_reachable_training_sets, training_set_uri


def manifest_file(parquet: Path) -> Path:
    """The manifest written beside a training set (``<name>.parquet.manifest.json``)."""
    return parquet.with_name(parquet.name + ".manifest.json")


def _upload_s3(local: Path, uri: str, endpoint_url: str | None) -> None:
    try:
        import boto3  # only the kubernetes backend needs it; credentials from the AWS_* env
    except ImportError:
        raise RuntimeError(
            f"publishing {local.name} to {uri} needs boto3 on the Airflow worker: "
            "add boto3 to the Airflow image (pip install boto3)"
        ) from None

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=endpoint_url)
    client.upload_file(str(local), bucket, key)


def storage_endpoint(settings: Settings) -> str | None:
    """The S3-compatible endpoint (MinIO, ...): ``LOOPLINE_STORAGE_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL``,
    else None (AWS S3 itself)."""
    return settings.storage_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


def publish_training_set(settings: Settings, manifest: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The manifest plus ``uri``: where the trainer of ``settings.training_backend`` reads the set.

    Local backend: the local path, nothing copied — unless tasks share no disk (``LOOPLINE_STORAGE_URL``):
    then the set is put under ``training/`` in object storage, for the training task on another worker.
    Kubernetes: parquet and manifest uploaded to ``<prefix><run id>/`` (the manifest last, so a reader
    never sees a manifest without its data).
    """
    local = Path(manifest["path"])
    if settings.training_backend != "kubernetes":
        if settings.storage_url:
            from loopline.storage.files import SharedFiles

            return {**manifest, "uri": SharedFiles.of(settings).put_dataset(local, "training", local.name)}
        return {**manifest, "uri": str(local)}
    prefix = require_reachable_training_sets(load_config(settings), settings.state.root)
    uri = training_set_uri(prefix, run_id, local.name)
    endpoint = storage_endpoint(settings)
    _upload_s3(local, uri, endpoint)
    _upload_s3(manifest_file(local), uri + ".manifest.json", endpoint)
    return {**manifest, "uri": uri}
