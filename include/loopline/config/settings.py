"""One typed settings object for every Loopline process.

Mode and endpoints are chosen here (env ``LOOPLINE_*``), never by editing code. In the embedded mode
everything Loopline writes lives under one state directory, so ``rm -rf .loopline`` is a full reset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopline.config.use_case import load_use_case

DEFAULT_USE_CASE = "fraud"  # the built-in example: the one place the platform names a use case
USE_CASE_NAME = r"^[a-z][a-z0-9_]*$"  # a package name under loopline.usecases, or a registered name


def _find_project_dir() -> Path:
    """The repository root (holds ``dags/`` and ``feature_repo/``).

    In a source checkout (editable install) that is three levels above this file; in an image where
    the package is installed into site-packages, the working directory is expected to be the project.
    """
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "dags").is_dir():
        return checkout
    return Path.cwd()


# Tools phone home unless told not to; every process Loopline starts inherits these.
_TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",  # MLflow wants exactly "true"
    "DO_NOT_TRACK": "true",  # Evidently, and the general convention
    "SCARF_ANALYTICS": "false",  # Airflow's usage data
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    "FEAST_USAGE": "False",
    "GX_ANALYTICS_ENABLED": "false",
}


def telemetry_off_env() -> dict[str, str]:
    """Environment variables that switch off telemetry in Airflow, MLflow, Feast, GX and Evidently."""
    return dict(_TELEMETRY_OFF)


@dataclass(frozen=True)
class StatePaths:
    """Where each kind of state lives: all under one local root in the embedded mode.

    ``shared`` is the root of the files other tasks read where tasks share no disk (a
    ``upath.UPath`` on object storage, from ``LOOPLINE_STORAGE_URL``): the landing zone, the curated,
    quarantined and archived batches and the reports then live under it, with the same layout, and
    the rest (Airflow's and MLflow's local files, scratch) stays under ``root``. Those folders are
    pathlib-like either way; ``loopline.storage.files`` has the few operations pathlib lacks.
    """

    root: Path
    shared: Any = None

    @property
    def shared_root(self) -> Path:
        return self.shared if self.shared is not None else self.root

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def airflow_db(self) -> Path:
        return self.airflow_home / "airflow.db"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        return self.mlflow_dir / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def feast_dir(self) -> Path:
        return self.root / "feast"

    @property
    def feast_registry(self) -> Path:
        return self.feast_dir / "registry.db"

    @property
    def feast_online_store(self) -> Path:
        return self.feast_dir / "online_store.db"

    @property
    def feast_offline_dir(self) -> Path:
        return self.feast_dir / "offline"

    @property
    def landing(self) -> Path:
        return self.shared_root / "data" / "landing"

    @property
    def curated(self) -> Path:
        return self.shared_root / "data" / "curated"

    @property
    def quarantine(self) -> Path:
        return self.shared_root / "data" / "quarantine"

    @property
    def archive(self) -> Path:
        """Landed files after publishing, kept byte for byte (the landing zone is a queue)."""
        return self.shared_root / "data" / "archive"

    @property
    def ingest_ledger(self) -> Path:
        """Which batch (by content hash) was published or quarantined, when, and why."""
        return self.root / "data" / "ingest_ledger.db"

    @property
    def prediction_log(self) -> Path:
        return self.root / "serving" / "predictions.db"

    @property
    def history_db(self) -> Path:
        """The model loop's decision history (gate verdicts, canary steps, retrain requests)."""
        return self.root / "history.db"

    @property
    def reports(self) -> Path:
        return self.shared_root / "reports"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        """PID records of the local stack and its generated secrets."""
        return self.root / "run"

    def directories(self) -> list[Path]:
        """Every directory the embedded mode writes into (created by ``ensure``)."""
        return [
            self.airflow_home,
            self.mlflow_dir,
            self.mlflow_artifacts,
            self.feast_dir,
            self.feast_offline_dir,
            self.landing,
            self.curated,
            self.quarantine,
            self.archive,
            self.prediction_log.parent,
            self.reports,
            self.logs,
            self.run_dir,
        ]

    def ensure(self) -> StatePaths:
        for directory in self.directories():
            if isinstance(directory, Path):  # object storage has no folders to create
                directory.mkdir(parents=True, exist_ok=True)
        return self


class Settings(BaseSettings):
    """Loopline's settings, read from ``LOOPLINE_*`` environment variables.

    Endpoints left empty are derived from host and ports, which is what the embedded mode wants;
    docker-compose and Kubernetes set them explicitly.
    """

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", frozen=True, extra="ignore")

    mode: Literal["embedded", "distributed", "compose", "kubernetes"] = "embedded"
    # The prediction problem the loop runs: loopline.usecases.<use_case> or a registered one (loopline.config.use_case).
    use_case: str = Field(default=DEFAULT_USE_CASE, pattern=USE_CASE_NAME)
    project_dir: Path = Field(default_factory=_find_project_dir)
    state_dir: Path | None = None

    # Local stack: every server binds here (loopback only, never 0.0.0.0).
    host: str = "127.0.0.1"
    airflow_port: int = Field(default=8080, ge=1, le=65535)
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    serving_port: int = Field(default=8000, ge=1, le=65535)
    serving_url: str | None = None
    airflow_url: str | None = None
    mlflow_tracking_uri: str | None = None
    airflow_username: str = "loopline"

    # Local Airflow tuned for one machine.
    airflow_parallelism: int = Field(default=4, ge=1)
    # Seconds the scheduler sleeps when idle: 0.1 gives a task-to-task hop of ~0.1-0.2 s.
    airflow_scheduler_idle_sleep: float = Field(default=0.1, gt=0)
    # How often the DAG processor lists the dags folder for new files.
    airflow_dag_refresh_interval: int = Field(default=10, ge=1)
    startup_timeout_s: float = Field(default=60.0, gt=0)

    # Where serving logs predictions: postgresql://user:password@host/db (compose, Kubernetes: every replica
    # writes one log) or sqlite:///path; empty: SQLite in the state dir (serving/predictions.db).
    prediction_log_url: str | None = None
    # The model loop's decision history (lineage/history.py): postgresql://... where Airflow tasks share no
    # disk (Kubernetes); empty: SQLite in the state dir (history.db).
    history_url: str | None = None

    # Shared state where tasks share no disk (loopline.storage). Files other tasks read (landing zone,
    # curated and quarantined batches, training sets, holdouts, reports): s3://bucket[/prefix] for object
    # storage; empty: the state dir on the local disk (embedded mode).
    storage_url: str | None = None
    # An S3-compatible endpoint (MinIO, moto) for storage_url; credentials from AWS_ACCESS_KEY_ID /
    # AWS_SECRET_ACCESS_KEY (and AWS_DEFAULT_REGION), as every S3 client reads them. Empty: AWS itself.
    storage_endpoint_url: str | None = None
    # The ingest ledger, the materialisation watermark and the locks: postgresql://... (locks become
    # Postgres advisory locks); empty: SQLite files and file locks in the state dir.
    state_db_url: str | None = None

    # "per-task": inside an Airflow task, the state dir is a fresh folder of that task try alone
    # (<state>/tasks/<dag>/<run>/<task>.<try>; its subprocesses inherit Airflow's context and share it), and
    # a task that opens a local path outside it fails (``storage.files.check_local_read``): what another task
    # left on a local disk is never read by luck because both ran on one worker. The distributed profile's
    # workers run so; "shared" (default): every task of a machine shares the state dir.
    task_scratch: Literal["shared", "per-task"] = "shared"

    training_backend: Literal["local", "kubernetes"] = "local"
    # Another canary policy than include/config/canary.yaml (`loopline demo` bakes in seconds, not minutes).
    canary_policy: Path | None = None
    # Prometheus scraping every serving replica: the canary counts failed predictions there, summed over
    # replicas, instead of one process's /metrics (include/loopline/deployment/windows.py). Empty: unset.
    prometheus_url: str | None = None

    # Kubernetes (include/config/kubernetes.yaml holds the rest); empty means "as in the YAML".
    kubernetes_config: Path | None = None  # another kubernetes.yaml (default: include/config/kubernetes.yaml)
    k8s_namespace: str | None = None
    k8s_service_account: str | None = None
    trainer_image: str | None = None
    serving_image: str | None = None
    # Object-store prefix (s3://bucket/path/) the training pod reads training sets from.
    training_set_uri_prefix: str | None = None

    @field_validator(
        "state_dir",
        "prediction_log_url",
        "history_url",
        "storage_url",
        "storage_endpoint_url",
        "state_db_url",
        "canary_policy",
        "kubernetes_config",
        "k8s_namespace",
        "k8s_service_account",
        "trainer_image",
        "serving_image",
        "training_set_uri_prefix",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose files often substitute ${VAR:-} to ""; that means "default", not the cwd.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("storage_url")
    @classmethod
    def _object_storage(cls, value: str | None) -> str | None:
        if value and not (value.startswith("s3://") and value[len("s3://") :].strip("/")):
            raise ValueError(
                f"LOOPLINE_STORAGE_URL={value!r}: use s3://<bucket>[/prefix] (AWS or any "
                "S3-compatible store, with LOOPLINE_STORAGE_ENDPOINT_URL), or leave it empty for "
                "the state directory on the local disk"
            )
        return value

    @model_validator(mode="after")
    def _per_task_scratch_needs_shared_storage(self) -> Settings:
        if self.task_scratch == "per-task" and not self.storage_url:
            raise ValueError(
                "LOOPLINE_TASK_SCRATCH=per-task gives every task a state folder of its own, so the "
                "files tasks hand each other must be in shared storage: set LOOPLINE_STORAGE_URL too"
            )
        return self

    @field_validator("project_dir", "state_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @property
    def state(self) -> StatePaths:
        root = self.state_dir or self.project_dir / ".loopline"
        task = os.environ.get("AIRFLOW_CTX_TASK_ID")  # Airflow exports the task's context while it runs
        if self.task_scratch == "per-task" and task:

            def safe(text: str) -> str:
                return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)

            root = (
                root
                / "tasks"
                / safe(os.environ.get("AIRFLOW_CTX_DAG_ID", "dag"))
                / safe(os.environ.get("AIRFLOW_CTX_DAG_RUN_ID", "run"))
                / f"{safe(task)}.{safe(os.environ.get('AIRFLOW_CTX_TRY_NUMBER', '0'))}"
            )
        return StatePaths(root, shared=self._shared_root())

    def _shared_root(self) -> Any:
        if not self.storage_url:
            return None
        from upath import UPath  # fsspec's pathlib: s3:// through s3fs

        # No listings cache: long-lived processes (the triggerer watching the landing zone, serving) must
        # see objects other processes wrote since their last listing.
        options: dict[str, Any] = {"use_listings_cache": False}
        if self.storage_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.storage_endpoint_url}
        return UPath(self.storage_url.rstrip("/"), **options)

    @property
    def dags_dir(self) -> Path:
        return self.project_dir / "dags"

    @property
    def plugins_dir(self) -> Path:
        return self.project_dir / "plugins"

    @property
    def feature_repo_dir(self) -> Path:
        """The Feast repository of the use case in use: its own (``UseCase.feature_repo``, shipped in its package),
        else the platform's ``feature_repo/<use case>/`` (the built-in use cases')."""
        return load_use_case(self.use_case).feature_repo or self.project_dir / "feature_repo" / self.use_case

    @property
    def config_dir(self) -> Path:
        """The platform's policies and settings: serving, kubernetes, and the defaults of the others."""
        return self.project_dir / "include" / "config"

    def policy_file(self, kind: str) -> Path:
        """The use case's ``<kind>.yaml`` policy (training, gate, canary, drift), or the platform's default."""
        return load_use_case(self.use_case).policy_file(kind, self.config_dir)

    @property
    def airflow_base_url(self) -> str:
        return (self.airflow_url or f"http://{self.host}:{self.airflow_port}").rstrip("/")

    @property
    def serving_base_url(self) -> str:
        """The prediction service (the local stack's, unless ``LOOPLINE_SERVING_URL`` points elsewhere)."""
        return (self.serving_url or f"http://{self.host}:{self.serving_port}").rstrip("/")

    @property
    def mlflow_uri(self) -> str:
        return (self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}").rstrip("/")

    def env(self) -> dict[str, str]:
        """The ``LOOPLINE_*`` variables that make a child process see these same settings."""
        values = {
            "LOOPLINE_MODE": self.mode,
            "LOOPLINE_PROJECT_DIR": str(self.project_dir),
            "LOOPLINE_STATE_DIR": str(self.state.root),
            "LOOPLINE_HOST": self.host,
            "LOOPLINE_AIRFLOW_PORT": str(self.airflow_port),
            "LOOPLINE_MLFLOW_PORT": str(self.mlflow_port),
            "LOOPLINE_AIRFLOW_URL": self.airflow_base_url,
            "LOOPLINE_MLFLOW_TRACKING_URI": self.mlflow_uri,
            "LOOPLINE_SERVING_URL": self.serving_base_url,
            "LOOPLINE_AIRFLOW_USERNAME": self.airflow_username,
            "LOOPLINE_AIRFLOW_PARALLELISM": str(self.airflow_parallelism),
            "LOOPLINE_AIRFLOW_SCHEDULER_IDLE_SLEEP": str(self.airflow_scheduler_idle_sleep),
            "LOOPLINE_AIRFLOW_DAG_REFRESH_INTERVAL": str(self.airflow_dag_refresh_interval),
            "LOOPLINE_STARTUP_TIMEOUT_S": str(self.startup_timeout_s),
            "LOOPLINE_TRAINING_BACKEND": self.training_backend,
            "LOOPLINE_USE_CASE": self.use_case,
            **({"LOOPLINE_CANARY_POLICY": str(self.canary_policy)} if self.canary_policy else {}),
            **({"LOOPLINE_PREDICTION_LOG_URL": self.prediction_log_url} if self.prediction_log_url else {}),
            **({"LOOPLINE_HISTORY_URL": self.history_url} if self.history_url else {}),
            **({"LOOPLINE_STORAGE_URL": self.storage_url} if self.storage_url else {}),
            **(
                {"LOOPLINE_STORAGE_ENDPOINT_URL": self.storage_endpoint_url}
                if self.storage_endpoint_url
                else {}
            ),
            **({"LOOPLINE_STATE_DB_URL": self.state_db_url} if self.state_db_url else {}),
            **({"LOOPLINE_TASK_SCRATCH": self.task_scratch} if self.task_scratch != "shared" else {}),
            # Read by feature_repo/<use case>/feature_store.yaml (Feast expands ${VAR}).
            "LOOPLINE_FEAST_REGISTRY": str(self.state.feast_registry),
            "LOOPLINE_FEAST_ONLINE_STORE": str(self.state.feast_online_store),
            "LOOPLINE_FEAST_OFFLINE_DIR": str(self.state.feast_offline_dir),
        }
        return values


@lru_cache(maxsize=1)
def _cached_settings(env_key: tuple[tuple[str, str], ...]) -> Settings:
    return Settings()


def get_settings() -> Settings:
    """Settings for the current environment (re-read when a ``LOOPLINE_*`` variable changes)."""
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("LOOPLINE_")))
    return _cached_settings(key)
