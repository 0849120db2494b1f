"""kubernetes.yaml: typed, validated with errors that name the field, overridable per environment."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loopline.config import get_settings
from loopline.k8s.config import (
    KubernetesConfigError,
    load_config,
    parse_config,
    require_reachable_training_sets,
    training_set_uri,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
SHIPPED = yaml.safe_load((REPO_ROOT / "include" / "config" / "kubernetes.yaml").read_text())


def test_shipped_config_loads_with_gpu_limit_and_taint_toleration(clean_loopline_env: None) -> None:
    config = load_config(get_settings())
    resources = config.trainer.container_resources()
    assert resources["limits"][config.trainer.gpu_resource] == str(config.trainer.gpus)
    # A GPU is an extended resource: limits only (a request of it would be rejected if it differed).
    assert config.trainer.gpu_resource not in resources.get("requests", {})
    assert any(t.key == config.trainer.gpu_resource for t in config.trainer.tolerations)
    assert config.trainer.startup_timeout_seconds >= 600  # GPU node spin-up takes minutes


def test_env_overrides_namespace_image_and_prefix(
    clean_loopline_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_K8S_NAMESPACE", "ml-prod")
    monkeypatch.setenv("LOOPLINE_TRAINER_IMAGE", "registry.example/trainer@sha256:" + "a" * 64)
    monkeypatch.setenv("LOOPLINE_TRAINING_SET_URI_PREFIX", "s3://bucket/sets")
    config = load_config(get_settings())
    assert config.namespace == "ml-prod"
    assert config.trainer.image.endswith("a" * 64)
    assert config.trainer.training_set_uri_prefix == "s3://bucket/sets/"
    # What the env does not name keeps the YAML's value.
    assert config.trainer.service_account == SHIPPED["trainer"]["service_account"]


def test_empty_env_override_means_unset(clean_loopline_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_K8S_NAMESPACE", "")
    assert load_config(get_settings()).namespace == SHIPPED["namespace"]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"trainer": {"resources": {"limits": {"memory": "lots"}}}}, "trainer.resources.limits"),
        ({"trainer": {"gpus": -1}}, "trainer.gpus"),
        ({"namespace": "Loopline_Prod"}, "namespace"),
        ({"trainer": {"training_set_uri_prefix": "/srv/data"}}, "trainer.training_set_uri_prefix"),
        ({"trainer": {"on_finish_action": "delete_everything"}}, "trainer.on_finish_action"),
        ({"trainer": {"nvidia_gpus": 2}}, "trainer.nvidia_gpus"),
        ({"serving": {"min_replicas": 1, "min_available": 1}}, "serving"),
        ({"storage_url": "/var/lib/loopline"}, "storage_url"),
        ({"storage_url": "s3://"}, "storage_url"),
        (
            {
                "trainer": {
                    "launcher_service_accounts": [{"name": "airflow-worker", "namespace": "airflow"}] * 2
                }
            },
            "trainer.launcher_service_accounts",
        ),
        (
            {"trainer": {"launcher_service_account": {"name": "airflow-worker"}}},
            "trainer.launcher_service_account",
        ),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(patch: dict, field: str) -> None:
    with pytest.raises(KubernetesConfigError) as info:
        parse_config(SHIPPED, patch, source="kubernetes.yaml")
    assert field in str(info.value)


def test_mlflow_artifacts_must_be_in_an_object_store() -> None:
    no_storage = {key: value for key, value in SHIPPED.items() if key != "storage_url"}
    with pytest.raises(KubernetesConfigError, match="storage_url"):
        parse_config(no_storage, source="kubernetes.yaml")
    with pytest.raises(KubernetesConfigError, match="mlflow.artifacts_destination"):
        parse_config(SHIPPED, {"mlflow": {"artifacts_destination": "/var/lib/mlflow/artifacts"}})
    # An MLflow of your own needs none of it.
    assert parse_config(no_storage, {"mlflow": {"enabled": False}}).storage_url == ""


def test_the_storage_setting_moves_mlflow_artifacts_with_it(
    clean_loopline_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        load_config(get_settings()).mlflow_artifacts_destination()
        == SHIPPED["storage_url"] + "/mlflow-artifacts"
    )
    monkeypatch.setenv("LOOPLINE_STORAGE_URL", "s3://ml-prod/loopline/")
    config = load_config(get_settings())
    assert config.storage_url == "s3://ml-prod/loopline"
    assert config.mlflow_artifacts_destination() == "s3://ml-prod/loopline/mlflow-artifacts"


def test_missing_file_says_what_to_set(
    clean_loopline_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOOPLINE_KUBERNETES_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(KubernetesConfigError, match="LOOPLINE_KUBERNETES_CONFIG"):
        load_config(get_settings())


def test_kubernetes_backend_without_object_store_prefix_is_a_clear_error(tmp_path: Path) -> None:
    config = parse_config(SHIPPED, {"trainer": {"training_set_uri_prefix": ""}})
    with pytest.raises(KubernetesConfigError) as info:
        require_reachable_training_sets(config, tmp_path)
    message = str(info.value)
    assert "LOOPLINE_TRAINING_SET_URI_PREFIX" in message and str(tmp_path) in message
    configured = parse_config(SHIPPED, {"trainer": {"training_set_uri_prefix": "s3://b/p"}})
    assert require_reachable_training_sets(configured, tmp_path) == "s3://b/p/"


def test_training_set_uri_is_per_run_and_safe() -> None:
    uri = training_set_uri("s3://b/sets/", "manual__2026-01-05T03:00:00+00:00", "set.parquet")
    assert uri == "s3://b/sets/manual__2026-01-05T03_00_00_00_00/set.parquet"
