"""The distributed profile (``loopline up --profile distributed``): the production topology on one machine,
with real parts and no shared disk.

It starts, as unprivileged processes bound to 127.0.0.1:

- Postgres (Debian's binaries): the databases ``airflow`` (metadata and Celery results), ``mlflow``,
  ``loopline`` (ingest ledger, watermark and locks, decision history, prediction log) and ``feast``
  (offline store and SQL registry);
- Redis: the Celery broker (db 0) and Feast's online store (db 1);
- an S3-compatible object store (moto's standalone server) with the bucket ``loopline``;
- an MLflow server on Postgres with its artifacts in the object store;
- Airflow with the CeleryExecutor: api-server, scheduler, dag-processor, triggerer and ``workers`` Celery
  workers, each with its own empty private scratch directory as ``LOOPLINE_STATE_DIR``.

Every Airflow process gets the settings that send shared state to those services (``LOOPLINE_STORAGE_URL``,
``LOOPLINE_STATE_DB_URL``, ``LOOPLINE_HISTORY_URL``, ``LOOPLINE_PREDICTION_LOG_URL``, the Feast production
store). The servers' data lives under ``<state>/distributed/``; the object store keeps its objects in memory,
for the life of the stack. ``stack.up``/``stack.down`` call in here; the process records are the embedded
stack's (``run/stack.json``), so ``loopline down`` stops either profile.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from loopline.config import Settings
from loopline.platform.airflow_env import child_env, venv_bin
from loopline.platform.health import airflow_healthy, first_dead, mlflow_healthy, serving_alive
from loopline.platform.processes import ProcessRecord, ProcessRegistry, spawn, tail, wait_until
from loopline.platform.secrets import StackSecrets
from loopline.platform.supervision import supervised

PROFILE = "distributed"
BUCKET = "loopline"
PG_USER = "loopline"
DATABASES = ("airflow", "mlflow", "loopline", "feast")
DATA_SERVICES = ("postgres", "redis", "object-store")  # stopped after everything that uses them
AIRFLOW_CONTROL = ("api-server", "scheduler", "dag-processor", "triggerer")
WORKERS = 2
WORKER_CONCURRENCY = 2
BROKER_DB, FEAST_DB = 0, 1  # Redis databases
# Postgres refuses to run as root: under root the server runs as this existing unprivileged account.
SERVER_USER = "nobody"
# moto accepts any credentials; these only have to be the same everywhere.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "loopline",
    "AWS_SECRET_ACCESS_KEY": "loopline-local",
    "AWS_DEFAULT_REGION": "us-east-1",
}
APT_LINE = "apt-get install -y postgresql redis-server"


class DistributedError(RuntimeError):
    """The distributed profile cannot start as configured; the message says what to install or fix."""


# --- where things live ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    root: Path  # <state>/distributed

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def pgdata(self) -> Path:
        return self.postgres / "data"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def airflow(self) -> Path:
        """AIRFLOW_HOME of each Airflow process: ``control`` (api-server, scheduler, dag-processor,
        triggerer) or a worker's name; the task logs of a worker stay in its own."""
        return self.root / "airflow"

    @property
    def control(self) -> Path:
        """LOOPLINE_STATE_DIR of the Airflow control plane and MLflow: nothing in it is shared state."""
        return self.root / "control"

    @property
    def workers(self) -> Path:
        return self.root / "workers"

    def worker(self, name: str) -> Path:
        return self.workers / name


def layout(settings: Settings) -> Layout:
    return Layout(settings.state.root / PROFILE)


def worker_names(count: int = WORKERS) -> list[str]:
    return [f"worker-{i}" for i in range(1, count + 1)]


# --- ports and secrets, kept in the run dir so the URLs stay the same across restarts -------------------


@dataclass(frozen=True)
class Profile:
    postgres_port: int
    redis_port: int
    s3_port: int
    pg_password: str
    redis_password: str

    def postgres_url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{PG_USER}:{self.pg_password}@127.0.0.1:{self.postgres_port}/{database}"

    def redis_url(self, db: int) -> str:
        return f"redis://:{self.redis_password}@127.0.0.1:{self.redis_port}/{db}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"


def profile_path(settings: Settings) -> Path:
    """Present while the distributed profile is the one started in this state dir (owner-only: it holds
    the generated database and Redis passwords)."""
    return settings.state.run_dir / "distributed.json"


def read_profile(settings: Settings) -> Profile | None:
    try:
        return Profile(**json.loads(profile_path(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _free_port() -> int:
    from loopline.platform.processes import free_port

    return free_port()


def load_or_create_profile(settings: Settings) -> Profile:
    """The stored profile, or a new one: free ports (``LOOPLINE_POSTGRES_PORT``, ``LOOPLINE_REDIS_PORT``,
    ``LOOPLINE_S3_PORT`` choose them) and generated passwords. Passwords are kept once made (the database
    holds them); ports given in the environment replace stored ones."""
    stored = read_profile(settings)
    values = (
        asdict(stored)
        if stored
        else {
            "postgres_port": _free_port(),
            "redis_port": _free_port(),
            "s3_port": _free_port(),
            "pg_password": secrets.token_urlsafe(18),
            "redis_password": secrets.token_urlsafe(18),
        }
    )
    for key, var in (
        ("postgres_port", "LOOPLINE_POSTGRES_PORT"),
        ("redis_port", "LOOPLINE_REDIS_PORT"),
        ("s3_port", "LOOPLINE_S3_PORT"),
    ):
        if os.environ.get(var, "").strip():
            values[key] = int(os.environ[var])
    profile = Profile(**values)
    if profile != stored:
        path = profile_path(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(profile), handle, indent=2)
        os.replace(tmp, path)
    return profile


def is_distributed(settings: Settings, records: list[ProcessRecord]) -> bool:
    """Whether the recorded stack is this profile's (its data services are in the records)."""
    return any(r.name in DATA_SERVICES for r in records)


# --- the settings and environments every process gets --------------------------------------------------


def profile_settings(settings: Settings, profile: Profile) -> Settings:
    """``settings`` as the distributed profile's processes see them: shared state in the services."""
    overrides = {
        "mode": PROFILE,
        "storage_url": f"s3://{BUCKET}",
        "storage_endpoint_url": profile.s3_endpoint,
        "state_db_url": profile.postgres_url("loopline"),
        "history_url": profile.postgres_url("loopline"),
        "prediction_log_url": profile.postgres_url("loopline"),
    }
    return settings.model_copy(update=overrides)


def feast_env(profile: Profile) -> dict[str, str]:
    """feature_repo/<use case>/feature_store.production.yaml's variables: Postgres offline store and SQL registry, Redis
    online store."""
    return {
        "FEAST_FS_YAML_FILE_PATH": "feature_store.production.yaml",
        "LOOPLINE_FEAST_REGISTRY_URL": profile.postgres_url("feast", driver="postgresql+psycopg"),
        "LOOPLINE_FEAST_PG_HOST": "127.0.0.1",
        "LOOPLINE_FEAST_PG_PORT": str(profile.postgres_port),
        "LOOPLINE_FEAST_PG_DATABASE": "feast",
        "LOOPLINE_FEAST_PG_USER": PG_USER,
        "LOOPLINE_FEAST_PG_PASSWORD": profile.pg_password,
        "LOOPLINE_FEAST_PG_SSLMODE": "disable",
        "LOOPLINE_FEAST_REDIS": f"127.0.0.1:{profile.redis_port},password={profile.redis_password},db={FEAST_DB}",
    }


def base_env(settings: Settings, profile: Profile, stack_secrets: StackSecrets) -> dict[str, str]:
    """The environment of every process of the profile (Airflow's control plane, workers, MLflow): Loopline's
    distributed settings, the object store's endpoint and credentials, Feast's production store and Airflow
    on Postgres with the CeleryExecutor. Per-process folders are set by ``process_env``."""
    dist = profile_settings(settings, profile)
    env = child_env(dist, stack_secrets)
    env.update(S3_CREDENTIALS)
    env.update(feast_env(profile))
    env.update(
        {
            "MLFLOW_S3_ENDPOINT_URL": profile.s3_endpoint,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": profile.postgres_url(
                "airflow", driver="postgresql+psycopg"
            ),
            # Airflow derives its async URL as postgresql+asyncpg (not installed); psycopg 3 does both.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": profile.postgres_url(
                "airflow", driver="postgresql+psycopg_async"
            ),
            "AIRFLOW__CELERY__BROKER_URL": profile.redis_url(BROKER_DB),
            "AIRFLOW__CELERY__RESULT_BACKEND": profile.postgres_url(
                "airflow", driver="db+postgresql+psycopg"
            ),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        }
    )
    return env


def process_env(base: dict[str, str], lay: Layout, name: str, state_dir: Path) -> dict[str, str]:
    """``base`` for one process: its LOOPLINE_STATE_DIR, AIRFLOW_HOME, task-log folder and temp dir."""
    home = lay.airflow / name
    env = dict(base)
    env.update(
        {
            "LOOPLINE_STATE_DIR": str(state_dir),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "TMPDIR": str(state_dir / "tmp"),
        }
    )
    return env


# --- starting the servers -------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):  # newest major first
        if all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "postgres")):
            return Path(folder)
    return None


def check_binaries() -> tuple[Path, str]:
    """Postgres' bin folder and redis-server, or an error with the apt line."""
    binaries, redis = postgres_bin(), shutil.which("redis-server")
    missing = [
        what
        for what, found in (("Postgres (/usr/lib/postgresql/*/bin)", binaries), ("redis-server", redis))
        if not found
    ]
    if missing:
        raise DistributedError(f"the distributed profile needs {' and '.join(missing)}: {APT_LINE}")
    return binaries, str(redis)  # type: ignore[return-value]


def _server_user() -> str | None:
    return SERVER_USER if os.geteuid() == 0 else None


def _reachable_by(user: str, path: Path) -> Path | None:
    """The first folder above ``path`` that ``user`` cannot enter, or None."""
    account = pwd.getpwnam(user)
    for folder in reversed(path.parents):
        st = folder.stat()
        if st.st_uid == account.pw_uid:
            mode_bits = 0o100
        elif st.st_gid == account.pw_gid:
            mode_bits = 0o010
        else:
            mode_bits = 0o001
        if not st.st_mode & mode_bits:
            return folder
    return None


def init_postgres(lay: Layout, binaries: Path, profile: Profile) -> None:
    """``initdb`` the cluster once (password auth over TCP, no Unix socket), owned by the server user."""
    user = _server_user()
    lay.postgres.mkdir(parents=True, exist_ok=True)
    if user is not None:
        blocked = _reachable_by(user, lay.postgres)
        if blocked is not None:
            raise DistributedError(
                f"Postgres runs as `{user}` (it refuses root), which cannot enter {blocked}: give it the "
                f"execute bit (chmod o+x {blocked}) or choose another LOOPLINE_STATE_DIR"
            )
        account = pwd.getpwnam(user)
        os.chown(lay.postgres, account.pw_uid, account.pw_gid)
    lay.postgres.chmod(0o700)
    if (lay.pgdata / "PG_VERSION").exists():
        return
    pwfile = lay.postgres / "initdb.pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(profile.pg_password + "\n")
    as_user: dict[str, Any] = {}
    if user is not None:
        account = pwd.getpwnam(user)
        os.chown(pwfile, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    try:
        done = subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(lay.pgdata),
                "-U",
                PG_USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=lay.postgres,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **as_user,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode:
        shutil.rmtree(lay.pgdata, ignore_errors=True)
        raise DistributedError(f"initdb failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def postgres_argv(lay: Layout, binaries: Path, profile: Profile) -> list[str]:
    return [
        str(binaries / "postgres"),
        "-D",
        str(lay.pgdata),
        "-p",
        str(profile.postgres_port),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
    ]


def write_redis_conf(lay: Layout, profile: Profile) -> Path:
    """redis.conf (owner-only: it holds the password, which would otherwise show in the process list)."""
    lay.redis.mkdir(parents=True, exist_ok=True)
    lay.redis.chmod(0o700)
    conf = lay.redis / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {profile.redis_port}",
                    "protected-mode yes",
                    "daemonize no",
                    f'dir "{lay.redis}"',
                    f'requirepass "{profile.redis_password}"',
                    "appendonly yes",
                    'save ""',
                    "",
                ]
            )
        )
    return conf


def postgres_ready(profile: Profile) -> bool:
    import psycopg

    try:
        with psycopg.connect(profile.postgres_url("postgres"), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def create_databases(profile: Profile) -> None:
    """The profile's databases (idempotent), and Feast's planner setting for point-in-time joins."""
    import psycopg

    with psycopg.connect(profile.postgres_url("postgres"), autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for database in DATABASES:
            if database not in existing:
                conn.execute(f'CREATE DATABASE "{database}"')
        # feature_store.production.yaml: nested loops make Feast's point-in-time join quadratic.
        conn.execute(f'ALTER ROLE "{PG_USER}" IN DATABASE feast SET enable_nestloop = off')


def redis_ready(profile: Profile) -> bool:
    import redis

    try:
        return bool(
            redis.Redis(
                host="127.0.0.1",
                port=profile.redis_port,
                password=profile.redis_password,
                socket_connect_timeout=1,
            ).ping()
        )
    except redis.RedisError:
        return False


def s3_ready(profile: Profile) -> bool:
    try:
        return httpx.get(f"{profile.s3_endpoint}/moto-api/", timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def s3_client(profile: Profile) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=profile.s3_endpoint,
        aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def create_bucket(profile: Profile) -> None:
    client = s3_client(profile)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        client.create_bucket(Bucket=BUCKET)


def celery_workers(profile: Profile, timeout: float = 1.0) -> list[str]:
    """The Celery workers answering a ping on the broker (``worker-1@loopline``, ...)."""
    from celery import Celery

    app = Celery(broker=profile.redis_url(BROKER_DB))
    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception:  # noqa: BLE001 - a broker that is not up yet answers with several error types
        return []
    finally:
        app.close()
    return sorted(name for reply in replies for name in reply)


def fresh_scratch(path: Path) -> Path:
    """An empty folder only its owner can enter (mode 0700), with a private temp dir inside."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    path.chmod(0o700)  # mkdir's mode is masked by the umask
    (path / "tmp").mkdir(mode=0o700)
    return path


def _migrate_airflow(lay: Layout, env: dict[str, str], log_path: Path) -> None:
    """``airflow db migrate`` on Postgres, skipped when this Airflow version already did it."""
    from importlib.metadata import version

    airflow_version = version("apache-airflow")
    marker = lay.airflow / ".migrated"
    if marker.exists() and marker.read_text() == airflow_version:
        return
    with open(log_path, "ab") as log:
        done = subprocess.run(
            [str(venv_bin() / "airflow"), "db", "migrate"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        raise DistributedError(
            f"`airflow db migrate` failed (exit {done.returncode}); log {log_path}:\n{tail(log_path)}"
        )
    marker.write_text(airflow_version)


# --- up -------------------------------------------------------------------------------------------------


@dataclass
class Started:
    records: list[ProcessRecord]
    profile: Profile
    seconds: float


def start(
    settings: Settings,
    stack_secrets: StackSecrets,
    reg: ProcessRegistry,
    log: Callable[[str], None] = print,
    timeout: float = 300.0,
) -> Started:
    """Start every service of the profile and wait until each answers (Celery workers included). The caller
    holds the stack lock and stops what was recorded if this raises."""
    binaries, redis_server = check_binaries()
    began = time.monotonic()
    lay = layout(settings)
    state = settings.state.ensure()
    profile = load_or_create_profile(settings)
    lay.root.mkdir(parents=True, exist_ok=True)
    lay.root.chmod(0o711)  # the Postgres server user passes through to its own folder, lists nothing
    for folder in (lay.airflow, lay.control, lay.control / "tmp", lay.workers):
        folder.mkdir(parents=True, exist_ok=True)
    lay.workers.chmod(0o711)  # each worker's own folder inside is 0700
    base = base_env(settings, profile, stack_secrets)
    records: list[ProcessRecord] = []

    def launch(name: str, argv: list[str], env: dict[str, str], cwd: Path, **kwargs: Any) -> None:
        records.append(spawn(name, argv, env, state.logs / f"{name}.log", reg, cwd=cwd, **kwargs))

    def waiting_for(what: str, ready: Callable[[], bool], seconds: float) -> None:
        ok = wait_until(lambda: first_dead(records) is not None or ready(), timeout=seconds, interval=0.2)
        dead = first_dead(records)
        if dead is not None:
            raise DistributedError(
                f"{dead.name} exited during start-up; last lines of {dead.log}:\n{tail(dead.log)}"
            )
        if not ok:
            raise DistributedError(f"{what} did not answer within {seconds:.0f} s; logs are in {state.logs}")

    # 1. The data services, side by side.
    init_postgres(lay, binaries, profile)
    plain = {k: v for k, v in base.items() if not k.startswith(("AIRFLOW", "LOOPLINE_"))}
    launch(
        "postgres",
        postgres_argv(lay, binaries, profile),
        plain,
        lay.postgres,
        user=_server_user(),
        stop_signal="SIGINT",
    )  # Postgres' "fast" shutdown: it ends its own backends
    launch("redis", [redis_server, str(write_redis_conf(lay, profile))], plain, lay.redis)
    launch(
        "object-store",
        [str(venv_bin() / "python"), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(profile.s3_port)],
        plain,
        lay.control,
    )
    waiting_for("Postgres", lambda: postgres_ready(profile), 60)
    create_databases(profile)
    waiting_for("Redis", lambda: redis_ready(profile), 30)
    waiting_for("the object store", lambda: s3_ready(profile), 60)
    create_bucket(profile)
    log(f"Postgres, Redis and the object store answer after {time.monotonic() - began:.1f} s.")

    # 2. MLflow boots while Airflow's metadata DB migrates.
    mlflow_env = process_env(base, lay, "mlflow", lay.control)
    mlflow_env["MLFLOW_BACKEND_STORE_URI"] = profile.postgres_url("mlflow", driver="postgresql+psycopg")
    launch(
        "mlflow",
        [
            str(venv_bin() / "mlflow"),
            "server",
            "--host",
            settings.host,
            "--port",
            str(settings.mlflow_port),
            "--artifacts-destination",
            f"s3://{BUCKET}/mlflow",
            "--workers",
            "1",
        ],
        mlflow_env,
        settings.project_dir,
    )
    control_env = process_env(base, lay, "control", lay.control)
    (lay.airflow / "control").mkdir(parents=True, exist_ok=True)
    _migrate_airflow(lay, control_env, state.logs / "airflow-db-migrate.log")

    # 3. Airflow: the control plane and the Celery workers, each worker in a fresh private scratch dir.
    airflow = str(venv_bin() / "airflow")
    argv = {
        "api-server": [
            airflow,
            "api-server",
            "--host",
            settings.host,
            "--port",
            str(settings.airflow_port),
            "--workers",
            "1",
        ],
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
        "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
    }
    for name in AIRFLOW_CONTROL:
        launch(name, argv[name], control_env, settings.project_dir)
    for name in worker_names():
        scratch = fresh_scratch(lay.worker(name))
        (lay.airflow / name).mkdir(parents=True, exist_ok=True)
        env = process_env(base, lay, name, scratch)
        env["LOOPLINE_WORKER_NAME"] = name
        # Every task try in a fresh folder of its own inside the worker's: a task that relies on a file
        # another task left on local disk fails here every time, not only when the two ran on two workers.
        env["LOOPLINE_TASK_SCRATCH"] = "per-task"
        # The log server Celery workers start would bind to every interface: off (task logs stay in the
        # worker's AIRFLOW_HOME).
        launch(
            name,
            [
                airflow,
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@loopline",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--skip-serve-logs",
                "--without-mingle",
                "--without-gossip",
            ],
            env,
            scratch,
        )
    # 4. The prediction service, supervised as in the embedded profile, in a private scratch dir of its
    # own: the registry in MLflow, the prediction log in Postgres, the online store in Redis, the curated
    # store (fresh features) in the bucket.
    serving_dir = fresh_scratch(lay.root / "serving")
    launch(
        "serving",
        supervised(
            settings,
            "serving",
            [
                str(venv_bin() / "python"),
                "-m",
                "loopline.serving",
                "--host",
                settings.host,
                "--port",
                str(settings.serving_port),
            ],
        ),
        process_env(base, lay, "serving", serving_dir),
        settings.project_dir,
    )
    wanted = {f"{name}@loopline" for name in worker_names()}
    remaining = max(30.0, timeout - (time.monotonic() - began))
    waiting_for(
        "Airflow, MLflow and the Celery workers",
        lambda: (
            mlflow_healthy(settings)
            and airflow_healthy(settings)
            and wanted <= set(celery_workers(profile))
            and serving_alive(settings)
        ),
        remaining,
    )
    return Started(records=records, profile=profile, seconds=time.monotonic() - began)


def client_env(profile: Profile) -> dict[str, str]:
    """What a client process (the CLI, the demo) needs besides ``profile_settings`` to use the profile's
    services in-process: the object store's credentials and Feast's production store."""
    return {**S3_CREDENTIALS, **feast_env(profile), "MLFLOW_S3_ENDPOINT_URL": profile.s3_endpoint}


# --- status ---------------------------------------------------------------------------------------------


def describe(settings: Settings, profile: Profile) -> dict[str, Any]:
    """What ``loopline status --json`` adds for this profile: where each service and each piece of state is
    (no passwords)."""
    lay = layout(settings)
    return {
        "postgres": {
            "host": "127.0.0.1",
            "port": profile.postgres_port,
            "databases": list(DATABASES),
            "data": str(lay.pgdata),
        },
        "redis": {
            "host": "127.0.0.1",
            "port": profile.redis_port,
            "celery_broker_db": BROKER_DB,
            "feast_online_db": FEAST_DB,
            "data": str(lay.redis),
        },
        "object_store": {
            "endpoint": profile.s3_endpoint,
            "bucket": BUCKET,
            "storage_url": f"s3://{BUCKET}",
            "mlflow_artifacts": f"s3://{BUCKET}/mlflow",
        },
        "workers": {
            name: {
                "scratch_dir": str(lay.worker(name)),
                "celery_hostname": f"{name}@loopline",
                "task_logs": str(lay.airflow / name / "logs"),
            }
            for name in worker_names()
        },
    }
