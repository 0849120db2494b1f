"""The environment variable names in compose, the Helm values and the settings object agree.

Every ``LOOPLINE_*`` name the deployments set must be read by something: a ``Settings`` field (env prefix
``LOOPLINE_``), a variable ``Settings.env()`` hands to children, or a ``${LOOPLINE_*}`` that a Feast
config in feature_repo/<use case>/ expands. And the other way round: what each mode needs is set.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging_files import REPO_ROOT, compose, env_example, helm_values, service_environment

from loopline.config import Settings

FEAST_PRODUCTION = REPO_ROOT / "feature_repo" / "fraud" / "feature_store.production.yaml"
# Services that run Loopline code (the others are Postgres, Redis, MLflow, Prometheus, ...).
LOOPLINE_SERVICES = (
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "serving-a",
    "serving-b",
)
# What every Loopline process outside the embedded mode must be told (the embedded defaults point at
# 127.0.0.1 and a state dir in the checkout, which is wrong in a container).
REQUIRED_EVERYWHERE = {"LOOPLINE_MODE", "LOOPLINE_STATE_DIR", "LOOPLINE_MLFLOW_TRACKING_URI"}
# In Kubernetes the tracking URI comes from the loopline-mlflow Secret (extraEnvFrom), not from `env`.
REQUIRED_IN_HELM_ENV = {
    "LOOPLINE_MODE",
    "LOOPLINE_STATE_DIR",
    "LOOPLINE_TRAINING_BACKEND",
    "LOOPLINE_STORAGE_URL",
    "LOOPLINE_TRAINING_SET_URI_PREFIX",
    "LOOPLINE_K8S_NAMESPACE",
    "LOOPLINE_TRAINER_IMAGE",
}
# Where Kubernetes tasks share state (no shared disk): each key is created in a Secret by the docs.
SHARED_STATE_SECRET_KEYS = {
    "loopline-database": {"LOOPLINE_STATE_DB_URL", "LOOPLINE_PREDICTION_LOG_URL", "LOOPLINE_HISTORY_URL"},
    "loopline-object-store": {
        "LOOPLINE_STORAGE_ENDPOINT_URL",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    },
}
# Every Secret the docs create that Loopline code reads as environment.
DOCUMENTED_SECRETS = (
    "loopline-mlflow",
    "loopline-object-store",
    "loopline-feast",
    "loopline-database",
    "loopline-serving",
)


def _feast_variables(path: Path) -> set[str]:
    return set(re.findall(r"\$\{(LOOPLINE_[A-Z0-9_]+)\}", path.read_text()))


def _known_names() -> set[str]:
    from loopline.serving.config import API_KEY_ENV  # read from the environment by the serving app itself

    fields = {f"LOOPLINE_{name.upper()}" for name in Settings.model_fields}
    children = set(Settings().env())
    feast = {
        name
        for path in (REPO_ROOT / "feature_repo" / "fraud").glob("feature_store*.yaml")
        for name in _feast_variables(path)
    }
    return fields | children | feast | {API_KEY_ENV}


def _helm_env() -> dict[str, str]:
    return {item["name"]: str(item.get("value", "")) for item in helm_values()["env"]}


def _compose_loopline_env(service: str) -> dict[str, str]:
    return {
        k: v
        for k, v in service_environment(compose()["services"][service]).items()
        if k.startswith("LOOPLINE_")
    }


@pytest.mark.parametrize("service", LOOPLINE_SERVICES)
def test_compose_sets_only_names_loopline_reads(service: str) -> None:
    unknown = set(_compose_loopline_env(service)) - _known_names()
    assert not unknown, f"{service} sets {sorted(unknown)}, which no Settings field or Feast config reads"


def test_helm_values_set_only_names_loopline_reads() -> None:
    unknown = {name for name in _helm_env() if name.startswith("LOOPLINE_")} - _known_names()
    assert not unknown, f"deploy/helm/airflow-values.yaml sets {sorted(unknown)}, which nothing reads"


@pytest.mark.parametrize("service", LOOPLINE_SERVICES)
def test_compose_sets_what_every_loopline_process_needs(service: str) -> None:
    env = _compose_loopline_env(service)
    missing = REQUIRED_EVERYWHERE - set(env)
    assert not missing, f"{service} lacks {sorted(missing)}"
    assert env["LOOPLINE_MODE"] == "compose"


@pytest.mark.parametrize("service", LOOPLINE_SERVICES)
def test_compose_gives_the_production_feast_config_all_its_variables(service: str) -> None:
    env = service_environment(compose()["services"][service])
    assert (REPO_ROOT / "feature_repo" / "fraud" / env["FEAST_FS_YAML_FILE_PATH"]) == FEAST_PRODUCTION
    missing = _feast_variables(FEAST_PRODUCTION) - set(env)
    assert not missing, f"{service} selects feature_store.production.yaml but does not set {sorted(missing)}"


@pytest.mark.parametrize("service", LOOPLINE_SERVICES)
def test_compose_values_validate_as_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The values themselves parse: a typo in LOOPLINE_MODE or a port that is not a number fails here."""
    example = env_example()
    for key, value in _compose_loopline_env(service).items():
        resolved = re.sub(r"\$\{(\w+)(?::?[-?][^}]*)?\}", lambda m: example.get(m.group(1), "x"), value)
        monkeypatch.setenv(key, resolved)
    settings = Settings()
    assert settings.mode == "compose"
    assert settings.mlflow_uri == "http://mlflow:5000"
    assert str(settings.state.root) == "/var/lib/loopline"


def test_helm_values_set_what_the_kubernetes_mode_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _helm_env()
    missing = REQUIRED_IN_HELM_ENV - set(env)
    assert not missing, f"deploy/helm/airflow-values.yaml lacks {sorted(missing)}"
    assert (REPO_ROOT / "feature_repo" / "fraud" / env["FEAST_FS_YAML_FILE_PATH"]) == FEAST_PRODUCTION
    for key, value in env.items():
        if key.startswith("LOOPLINE_"):
            monkeypatch.setenv(key, value)
    settings = Settings()
    assert (settings.mode, settings.training_backend) == ("kubernetes", "kubernetes")
    assert settings.training_set_uri_prefix and settings.training_set_uri_prefix.startswith("s3://")
    assert settings.storage_url and settings.storage_url.startswith("s3://")
    # Training sets are shared files too: under the same bucket as everything else.
    assert settings.training_set_uri_prefix.startswith(settings.storage_url.rstrip("/") + "/")
    # Secrets never sit in the values: the state database comes from a Secret, not from `env`.
    assert "LOOPLINE_STATE_DB_URL" not in env and "LOOPLINE_STORAGE_ENDPOINT_URL" not in env


def _secret_keys(doc: str, secret: str) -> set[str]:
    """The keys a `kubectl create secret generic NAME --from-literal=KEY=...` command in the docs sets."""
    match = re.search(rf"create secret generic {secret}\b(.*?)(?:\n\s*\n|```|kubectl)", doc, flags=re.DOTALL)
    assert match, f"the docs do not show how to create the {secret} Secret"
    return set(re.findall(r"--from-literal=([A-Z0-9_]+)=", match.group(1)))


def test_helm_secrets_and_docs_give_kubernetes_what_compose_sets() -> None:
    """In Kubernetes the Feast and MLflow variables come from Secrets: the docs must create every key."""
    doc = (REPO_ROOT / "docs" / "deploy-kubernetes.md").read_text()
    env_from = helm_values()["extraEnvFrom"]
    for secret in ("loopline-mlflow", "loopline-feast", "loopline-object-store", "loopline-database"):
        assert f"name: {secret}" in env_from, f"airflow-values.yaml does not load the {secret} Secret"
    assert _feast_variables(FEAST_PRODUCTION) <= _secret_keys(doc, "loopline-feast")
    assert "LOOPLINE_MLFLOW_TRACKING_URI" in _secret_keys(doc, "loopline-mlflow")
    for secret, keys in SHARED_STATE_SECRET_KEYS.items():
        assert keys <= _secret_keys(doc, secret), (
            f"the docs' {secret} lacks {sorted(keys - _secret_keys(doc, secret))}"
        )
    compose_names = set(_compose_loopline_env("airflow-scheduler"))
    in_kubernetes = set(_helm_env()).union(
        *(
            _secret_keys(doc, name)
            for name in ("loopline-feast", "loopline-mlflow", "loopline-database", "loopline-object-store")
        )
    )
    # Compose-only: the Airflow URL/login of the compose stack (Kubernetes has the chart's Service instead).
    compose_only = {"LOOPLINE_AIRFLOW_USERNAME"}
    assert compose_names - in_kubernetes <= compose_only, sorted(compose_names - in_kubernetes)


def test_the_docs_secrets_hold_only_names_loopline_reads() -> None:
    doc = (REPO_ROOT / "docs" / "deploy-kubernetes.md").read_text()
    for secret in DOCUMENTED_SECRETS:
        unknown = {k for k in _secret_keys(doc, secret) if k.startswith("LOOPLINE_")} - _known_names()
        assert not unknown, f"the docs put {sorted(unknown)} into {secret}, which nothing reads"


def test_helm_values_agree_with_kubernetes_yaml() -> None:
    """The chart's worker and triggerer accounts, namespace, images, storage and Secrets are the ones
    Loopline's objects expect."""
    import yaml

    from loopline.k8s import manifests
    from loopline.k8s.config import parse_config

    config = parse_config(yaml.safe_load((REPO_ROOT / "include" / "config" / "kubernetes.yaml").read_text()))
    values, env = helm_values(), _helm_env()
    assert values["executor"] == "KubernetesExecutor"
    # KubernetesPodOperator runs in the task pods (worker account) and, deferred, in the triggerer: both are
    # bound to the launcher Role, and both are the accounts the chart creates with these values.
    chart_accounts = {values[component]["serviceAccount"]["name"] for component in ("workers", "triggerer")}
    assert all(values[component]["serviceAccount"]["create"] for component in ("workers", "triggerer"))
    launchers = config.trainer.launcher_service_accounts
    assert {ref.name for ref in launchers} == chart_accounts
    assert {ref.namespace for ref in launchers} == {values["config"]["kubernetes_executor"]["namespace"]}
    assert env["LOOPLINE_STORAGE_URL"] == config.storage_url
    assert config.mlflow_artifacts_destination().startswith(config.storage_url + "/")
    assert env["LOOPLINE_K8S_NAMESPACE"] == config.namespace
    assert env["LOOPLINE_TRAINER_IMAGE"] == config.trainer.image
    assert env["LOOPLINE_SERVING_IMAGE"] == config.serving.image
    loaded = set(re.findall(r"name: ([\w-]+)", values["extraEnvFrom"]))
    assert loaded == {
        config.trainer.secrets.mlflow,
        config.trainer.secrets.object_store,
        manifests.FEAST_SECRET,
        manifests.DATABASE_SECRET,
    }
    assert values["airflowVersion"] in (REPO_ROOT / "docker" / "airflow" / "Dockerfile").read_text()


def test_the_docs_give_serving_its_own_identity_and_airflow_the_writer() -> None:
    """Issue 19: serving's Secret holds the Feast variables, the prediction log and MLflow, each as serving's
    own user/role (never the writer's); the writer's MLflow user is loopline."""
    import yaml

    from loopline.k8s.config import parse_config

    config = parse_config(yaml.safe_load((REPO_ROOT / "include" / "config" / "kubernetes.yaml").read_text()))
    doc = (REPO_ROOT / "docs" / "deploy-kubernetes.md").read_text()
    serving = _secret_keys(doc, config.serving.secrets.credentials)
    assert _feast_variables(FEAST_PRODUCTION) <= serving
    assert {
        "LOOPLINE_PREDICTION_LOG_URL",
        "LOOPLINE_MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    } <= serving
    assert "LOOPLINE_HISTORY_URL" not in serving
    block = doc[doc.index(f"create secret generic {config.serving.secrets.credentials} ") :]
    block = block[: block.index("\n\n")] if "\n\n" in block else block
    assert "MLFLOW_TRACKING_USERNAME=serving" in block and "postgresql://serving:" in block
    assert "LOOPLINE_FEAST_PG_USER=serving" in block and "postgresql+psycopg://serving:" in block
    writer = doc[doc.index(f"create secret generic {config.trainer.secrets.mlflow} ") :]
    assert "MLFLOW_TRACKING_USERNAME=loopline" in writer[: writer.index("loopline-object-store")]
    api_key = _secret_keys_loose(doc, config.serving.secrets.api_key)
    assert {"accepted-keys", "api-key"} <= api_key
    server = _secret_keys(doc, config.mlflow.secrets.server)
    assert {
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_AUTH_DATABASE_URI",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
    } <= server
    # The artifact store is rendered into the Deployment (--artifacts-destination, from storage_url): a
    # second value in the Secret would only be ignored.
    assert "MLFLOW_ARTIFACTS_DESTINATION" not in server


def _secret_keys_loose(doc: str, secret: str) -> set[str]:
    """Keys of a `create secret generic` whose keys are lower-case (the API-key Secret)."""
    match = re.search(rf"create secret generic {secret}\b(.*?)(?:\n\s*\n|```)", doc, flags=re.DOTALL)
    assert match, f"the docs do not show how to create the {secret} Secret"
    return set(re.findall(r"--from-literal=([a-z-]+)=", match.group(1)))
