"""Kubernetes settings (``include/config/kubernetes.yaml``): typed, validated, overridable from env.

The YAML is versioned with the code (GPU count, resources, tolerations, secret names change with the
model and are reviewed like code); what differs per cluster — namespace, image tags, the training-set
bucket — comes from ``LOOPLINE_*`` settings so one file serves every environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from loopline.config import Settings
from loopline.config.settings import DEFAULT_USE_CASE, USE_CASE_NAME
from loopline.config.use_case import load_use_case
from loopline.config.yaml_files import StrictModel, read_yaml_mapping

# A Kubernetes resource quantity ("500m", "16Gi", "4", "1e3"): the API rejects anything else.
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[mkMGTPE]|[eE][+-]?\d+)?$")
# RFC 1123 label: namespaces, service accounts, secret names.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Object stores the training pod can read a training set from (boto3 speaks S3, MinIO included).
OBJECT_STORE_SCHEMES = ("s3://",)
# Where the MLflow server keeps artifacts, under the storage URL unless mlflow.artifacts_destination says otherwise.
MLFLOW_ARTIFACTS_SUBDIR = "mlflow-artifacts"
# The run whose training pod `loopline k8s manifests` renders (a manual run of train_model).
SAMPLE_RUN_ID = "manual__2026-01-05T03:00:00+00:00"


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes name (RFC 1123 label: lowercase letters, digits "
            "and '-', at most 63 characters)"
        )
    return value


# Namespaces, ServiceAccounts, Secrets: the API rejects other names only when the pod is created.
DnsLabel = Annotated[str, AfterValidator(_dns_label)]


class KubernetesConfigError(ValueError):
    """kubernetes.yaml (or an override) is invalid; the message names the field and what to set."""


def _check_quantities(values: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in values.items():
        text = str(value)
        if not _QUANTITY.match(text):
            raise ValueError(f"{name}: {value!r} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)")
        out[name] = text
    return out


class Resources(StrictModel):
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)

    @field_validator("requests", "limits", mode="before")
    @classmethod
    def _quantities(cls, value: dict[str, Any] | None) -> dict[str, str]:
        return _check_quantities(value or {})

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in (("requests", self.requests), ("limits", self.limits)) if v}


class Toleration(StrictModel):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Security(StrictModel):
    """Numeric IDs (the "restricted" standard needs runAsNonRoot; a numeric UID lets the kubelet check it)."""

    run_as_user: int = Field(default=10001, ge=1)
    run_as_group: int = Field(default=10001, ge=1)
    fs_group: int = Field(default=10001, ge=1)


def _object_store_url(value: str, what: str) -> str:
    """An ``s3://bucket[/prefix]`` URL without a trailing slash, or a ValueError that says what to write."""
    if not value.startswith(OBJECT_STORE_SCHEMES) or not value.removeprefix("s3://").split("/", 1)[0]:
        raise ValueError(
            f"{value!r} is not an object-store URL: {what} must be s3://<bucket>[/prefix] (any "
            "S3-compatible store), never a path on a pod's disk"
        )
    return value.rstrip("/")


class Secrets(StrictModel):
    mlflow: DnsLabel
    object_store: DnsLabel


class ServiceAccountRef(StrictModel):
    name: DnsLabel
    namespace: DnsLabel | None = None  # None: the Loopline namespace


class XcomSidecar(StrictModel):
    resources: Resources = Field(default_factory=Resources)


class TrainerConfig(StrictModel):
    image: str = Field(min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # The training pod's own identity: bound to no Role (the pod needs no API access; no token mounted).
    service_account: DnsLabel = "loopline-trainer"
    # Who starts, watches, reads and deletes the training pods: KubernetesPodOperator runs in the Airflow
    # worker pod and, deferred, waits in the triggerer; each of these accounts is bound to the launcher Role.
    launcher_service_accounts: list[ServiceAccountRef] = Field(default_factory=list)
    # The training YAML inside the image; unset: the use case's training policy from the installed package.
    config_path: str | None = None
    gpus: int = Field(default=1, ge=0, le=16)
    gpu_resource: str = "nvidia.com/gpu"
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    startup_timeout_seconds: int = Field(default=900, ge=30)
    active_deadline_seconds: int | None = Field(default=None, ge=60)
    on_finish_action: Literal["delete_pod", "delete_succeeded_pod", "delete_active_pod", "keep_pod"] = (
        "delete_succeeded_pod"
    )
    secrets: Secrets
    training_set_uri_prefix: str = ""
    security: Security = Field(default_factory=Security)
    xcom_sidecar: XcomSidecar = Field(default_factory=XcomSidecar)

    @field_validator("launcher_service_accounts")
    @classmethod
    def _distinct_launchers(cls, value: list[ServiceAccountRef]) -> list[ServiceAccountRef]:
        if len({(ref.name, ref.namespace) for ref in value}) != len(value):
            raise ValueError("lists the same service account twice")
        if any(ref.name == "" for ref in value):
            raise ValueError("a service account needs a name")
        return value

    @field_validator("training_set_uri_prefix")
    @classmethod
    def _object_store(cls, value: str) -> str:
        if value and not value.startswith(OBJECT_STORE_SCHEMES):
            raise ValueError(
                f"{value!r} must start with one of {', '.join(OBJECT_STORE_SCHEMES)} "
                "(an object store the pod can reach), or be empty for the local backend"
            )
        return value.rstrip("/") + "/" if value else value

    def container_resources(self) -> dict[str, dict[str, str]]:
        """Requests/limits with the GPU count added: a GPU is an extended resource, limits only."""
        resources = self.resources.as_dict()
        if self.gpus:
            resources.setdefault("limits", {})[self.gpu_resource] = str(self.gpus)
        return resources


class ServingSecrets(StrictModel):
    """The serving pods' own credentials (never the trainer's or Airflow's: docs/security.md)."""

    # keys: LOOPLINE_MLFLOW_TRACKING_URI, MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME=serving,
    # MLFLOW_TRACKING_PASSWORD (MLflow READ on the model), LOOPLINE_PREDICTION_LOG_URL and the Feast
    # variables with the Postgres role serving (docker/postgres/10-loopline-roles.sh); for fresh features
    # also LOOPLINE_STATE_DB_URL (role serving: SELECT on the materialisation watermark only) and read-only
    # object-store credentials for <storage_url>/data/curated/: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    # AWS_DEFAULT_REGION and, for an S3-compatible store, LOOPLINE_STORAGE_ENDPOINT_URL
    credentials: DnsLabel = "loopline-serving"
    # keys: accepted-keys (what serving accepts, comma-separated while rotating), api-key (what clients and
    # Prometheus send); a Secret of its own so that a PodMonitor can read the key and nothing else
    api_key: DnsLabel = "loopline-serving-api-key"


class ServingConfig(StrictModel):
    image: str = Field(min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    port: int = Field(default=8000, ge=1, le=65535)
    replicas: int = Field(default=2, ge=1)
    min_replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=10, ge=1)
    target_cpu_utilization: int = Field(default=70, ge=1, le=100)
    min_available: int = Field(default=1, ge=0)
    resources: Resources = Field(default_factory=Resources)
    security: Security = Field(default_factory=Security)
    secrets: ServingSecrets = Field(default_factory=ServingSecrets)

    @model_validator(mode="after")
    def _replica_bounds(self) -> ServingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})"
            )
        if self.min_available >= self.min_replicas:
            raise ValueError(
                f"min_available ({self.min_available}) must be below min_replicas "
                f"({self.min_replicas}), or a node drain could never evict a serving pod"
            )
        return self


def _default_mlflow_resources() -> Resources:
    return Resources(requests={"cpu": "250m", "memory": "512Mi"}, limits={"cpu": "1", "memory": "1Gi"})


class MlflowSecrets(StrictModel):
    # keys: MLFLOW_BACKEND_STORE_URI, MLFLOW_AUTH_DATABASE_URI (Postgres role mlflow), MLFLOW_ARTIFACTS_DESTINATION
    # (s3://...), MLFLOW_FLASK_SERVER_SECRET_KEY, MLFLOW_AUTH_ADMIN_PASSWORD
    server: DnsLabel = "loopline-mlflow-server"


class MlflowConfig(StrictModel):
    """The MLflow server (docker/mlflow: basic-auth app always on) and its users (the init Job)."""

    enabled: bool = True  # False: an MLflow of your own (then create the users as docs/security.md says)
    image: str = Field(default="ghcr.io/loopline/mlflow:3.17.2", min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    port: int = Field(default=5000, ge=1, le=65535)
    replicas: int = Field(default=1, ge=1)
    workers: int = Field(default=2, ge=1)
    resources: Resources = Field(default_factory=_default_mlflow_resources)
    security: Security = Field(default_factory=Security)
    secrets: MlflowSecrets = Field(default_factory=MlflowSecrets)
    # Where the server stores artifacts (mlflow server --artifacts-destination): an s3:// URL. Unset: the
    # top-level storage_url + "/mlflow-artifacts". Runs, the registry and users live in Postgres (the Secret).
    artifacts_destination: str | None = None
    # Host headers MLflow accepts besides its Service's names and localhost (e.g. an Ingress host).
    extra_allowed_hosts: list[str] = Field(default_factory=list)
    # What the init Job grants (docker/mlflow/loopline_mlflow.py): the registered model, the experiments of
    # loopline.training.train and the drift monitor; serving reads the training one. Unset: the use case's
    # (KubernetesConfig.mlflow_grants).
    model: str | None = None
    experiments: list[str] | None = None
    serving_experiments: list[str] | None = None


class MlflowGrants(NamedTuple):
    model: str
    experiments: list[str]
    serving_experiments: list[str]


class KubernetesConfig(StrictModel):
    version: Literal[1] = 1
    namespace: DnsLabel = "loopline"
    # The use case the cluster runs (LOOPLINE_USE_CASE): the trainer's --use-case and MLflow's defaults.
    use_case: str = Field(default=DEFAULT_USE_CASE, pattern=USE_CASE_NAME)
    # The root of the files tasks share (LOOPLINE_STORAGE_URL of the Airflow pods; s3://bucket[/prefix]);
    # MLflow's artifacts live under it unless mlflow.artifacts_destination says otherwise. Serving reads the
    # curated store under it for fresh features (empty: they stay off).
    storage_url: str = ""
    trainer: TrainerConfig
    serving: ServingConfig
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)

    def mlflow_grants(self) -> MlflowGrants:
        """The model and experiments the MLflow init Job grants: as configured, else the use case's."""
        use_case = load_use_case(self.use_case)
        training = [use_case.training_experiment]
        return MlflowGrants(
            model=self.mlflow.model or use_case.model_name,
            experiments=self.mlflow.experiments or [*training, use_case.monitoring_experiment],
            serving_experiments=self.mlflow.serving_experiments or training,
        )

    @field_validator("storage_url")
    @classmethod
    def _storage(cls, value: str) -> str:
        return _object_store_url(value, "storage_url (LOOPLINE_STORAGE_URL)") if value else value

    @model_validator(mode="after")
    def _mlflow_artifacts_in_the_object_store(self) -> KubernetesConfig:
        if self.mlflow.artifacts_destination is not None:
            _object_store_url(self.mlflow.artifacts_destination, "mlflow.artifacts_destination")
        elif self.mlflow.enabled and not self.storage_url:
            raise ValueError(
                "the MLflow server needs an object store for its artifacts: set storage_url "
                "(LOOPLINE_STORAGE_URL, e.g. s3://loopline) or mlflow.artifacts_destination"
            )
        return self

    def mlflow_artifacts_destination(self) -> str:
        """The MLflow server's ``--artifacts-destination``: explicit, or under the storage URL."""
        explicit = self.mlflow.artifacts_destination
        return explicit.rstrip("/") if explicit else f"{self.storage_url}/{MLFLOW_ARTIFACTS_SUBDIR}"


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"{source} is invalid:"]
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


def _overrides(settings: Settings) -> dict[str, Any]:
    """Settings (env) that replace YAML values: the per-cluster bits."""
    trainer = {
        key: value
        for key, value in {
            "image": settings.trainer_image,
            "service_account": settings.k8s_service_account,
            "training_set_uri_prefix": settings.training_set_uri_prefix,
        }.items()
        if value is not None
    }
    serving = {"image": settings.serving_image} if settings.serving_image else {}
    top = {
        key: value
        for key, value in {
            "namespace": settings.k8s_namespace,
            "storage_url": settings.storage_url,
            "use_case": settings.use_case,
        }.items()
        if value is not None
    }
    return {**top, "trainer": trainer, "serving": serving}


def config_path(settings: Settings) -> Path:
    """``LOOPLINE_KUBERNETES_CONFIG`` (relative to the project) or ``include/config/kubernetes.yaml``."""
    path = settings.kubernetes_config or settings.config_dir / "kubernetes.yaml"
    return path if path.is_absolute() else settings.project_dir / path


def parse_config(
    raw: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "kubernetes.yaml"
) -> KubernetesConfig:
    """Validate a parsed kubernetes.yaml with per-environment overrides merged into its sections."""
    if not isinstance(raw, dict):
        raise KubernetesConfigError(f"{source} must be a mapping, got {type(raw).__name__}")
    merged = dict(raw)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict):
            merged[key] = {**(merged.get(key) or {}), **value}
        else:
            merged[key] = value
    try:
        return KubernetesConfig.model_validate(merged)
    except ValidationError as exc:
        raise KubernetesConfigError(_describe(exc, source)) from None


def load_config(settings: Settings) -> KubernetesConfig:
    """kubernetes.yaml with the ``LOOPLINE_*`` overrides of ``settings`` applied."""
    path = config_path(settings)
    raw = read_yaml_mapping(
        path,
        "kubernetes config",
        KubernetesConfigError,
        missing_hint="set LOOPLINE_KUBERNETES_CONFIG or restore include/config/kubernetes.yaml",
    )
    return parse_config(raw, _overrides(settings), source=str(path))


def require_reachable_training_sets(config: KubernetesConfig, state_root: Path) -> str:
    """The object-store prefix the training pod reads from; an error that says what to set if none.

    The local backend reads the parquet from the state directory; a pod on another node cannot (and
    an emptyDir or hostPath would not hold the same file), so the kubernetes backend needs one.
    """
    prefix = config.trainer.training_set_uri_prefix
    if not prefix:
        raise KubernetesConfigError(
            "LOOPLINE_TRAINING_BACKEND=kubernetes, but training sets are only written to the local state "
            f"directory {state_root}, which the training pod cannot read. Set LOOPLINE_TRAINING_SET_URI_PREFIX "
            "(or trainer.training_set_uri_prefix in include/config/kubernetes.yaml) to an object-store prefix "
            "such as s3://loopline/training-sets/, and put its credentials in the Secret named by "
            f"trainer.secrets.object_store ({config.trainer.secrets.object_store!r})."
        )
    return prefix


def training_set_uri(prefix: str, run_id: str, filename: str) -> str:
    """Where one run's training set lives in the object store: ``<prefix><safe run id>/<filename>``."""
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return f"{prefix.rstrip('/')}/{safe_run}/{filename}"
