"""Publishing training sets for the pod, and ``loopline k8s manifests`` without Airflow."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from loopline.cli import k8s as k8s_cli
from loopline.config import get_settings
from loopline.k8s import storage
from loopline.k8s.config import KubernetesConfigError


def _training_set(tmp_path: Path) -> dict:
    parquet = tmp_path / "run.parquet"
    parquet.write_bytes(b"PAR1")
    storage.manifest_file(parquet).write_text("{}")
    return {"path": str(parquet), "rows": 1}


def test_local_backend_trains_on_the_local_file(clean_loopline_env: None, tmp_path: Path) -> None:
    manifest = _training_set(tmp_path)
    published = storage.publish_training_set(get_settings(), manifest, "manual__1")
    assert published == {**manifest, "uri": manifest["path"]}


def test_local_backend_without_a_shared_disk_trains_on_the_set_in_object_storage(
    clean_loopline_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from local_servers import s3_server

    with s3_server("loopline") as endpoint:
        monkeypatch.setenv("LOOPLINE_STORAGE_URL", "s3://loopline/team")
        monkeypatch.setenv("LOOPLINE_STORAGE_ENDPOINT_URL", endpoint)
        published = storage.publish_training_set(get_settings(), _training_set(tmp_path), "manual__1")
        assert published["uri"] == "s3://loopline/team/training/run.parquet"
        keys = [
            o["Key"]
            for o in boto3.client("s3", endpoint_url=endpoint).list_objects_v2(
                Bucket="loopline", Prefix="team/training/"
            )["Contents"]
        ]
    assert sorted(keys) == ["team/training/run.parquet", "team/training/run.parquet.manifest.json"]


def test_kubernetes_backend_uploads_data_then_manifest(
    clean_loopline_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_TRAINING_BACKEND", "kubernetes")
    monkeypatch.setenv("LOOPLINE_TRAINING_SET_URI_PREFIX", "s3://bucket/sets/")
    monkeypatch.setenv("LOOPLINE_STORAGE_ENDPOINT_URL", "http://minio.example:9000")
    uploads: list[tuple[str, str, str | None]] = []
    monkeypatch.setattr(
        storage, "_upload_s3", lambda local, uri, endpoint: uploads.append((Path(local).name, uri, endpoint))
    )
    published = storage.publish_training_set(get_settings(), _training_set(tmp_path), "manual__1")
    assert published["uri"] == "s3://bucket/sets/manual__1/run.parquet"
    # The manifest goes last: a reader that finds it can trust the data is complete; both go to the store
    # Loopline's storage setting names.
    assert uploads == [
        ("run.parquet", published["uri"], "http://minio.example:9000"),
        ("run.parquet.manifest.json", published["uri"] + ".manifest.json", "http://minio.example:9000"),
    ]


@pytest.mark.parametrize(
    ("loopline", "aws", "expected"),
    [
        ("http://minio.example:9000", "http://other:9000", "http://minio.example:9000"),
        (None, "http://other:9000", "http://other:9000"),
        (None, None, None),
    ],
)
def test_the_upload_endpoint_is_loopline_s_storage_setting_first(
    clean_loopline_env: None,
    monkeypatch: pytest.MonkeyPatch,
    loopline: str | None,
    aws: str | None,
    expected: str | None,
) -> None:
    for name, value in (("LOOPLINE_STORAGE_ENDPOINT_URL", loopline), ("AWS_ENDPOINT_URL", aws)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert storage.storage_endpoint(get_settings()) == expected


def test_kubernetes_backend_without_prefix_refuses_to_publish(
    clean_loopline_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_TRAINING_BACKEND", "kubernetes")
    with pytest.raises(KubernetesConfigError, match="LOOPLINE_TRAINING_SET_URI_PREFIX"):
        storage.publish_training_set(get_settings(), _training_set(tmp_path), "manual__1")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="loopline")
    k8s_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_static_manifests_are_written_and_validate(
    clean_loopline_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parse(["k8s", "manifests", "--out", str(tmp_path / "out"), "--skip-training-pod", "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    docs = [d for f in report["files"] for d in yaml.safe_load_all(Path(f).read_text())]
    assert len(docs) == sum(len(v) for v in report["objects"].values())
    assert {d["kind"] for d in docs} >= {"Namespace", "Deployment", "NetworkPolicy", "PodDisruptionBudget"}
    for doc in docs:
        kubernetes_validate.validate(doc, k8s_cli.SCHEMA_VERSION, strict=True)


def test_an_invalid_object_stops_the_write(tmp_path: Path) -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "80x"}]},
    }
    with pytest.raises(k8s_cli.ManifestError, match="Service/x"):
        k8s_cli.write_manifests(tmp_path / "out", {"bad": [bad]})
    assert not (tmp_path / "out").exists()
