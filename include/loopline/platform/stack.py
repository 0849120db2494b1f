"""The local stack of the embedded mode: Airflow (api-server, scheduler, dag-processor, triggerer),
an MLflow tracking server and the prediction service, started and stopped as one.

``up`` is idempotent (a running stack is reported, not doubled) and cleans up after itself when a
service fails to come up; ``down`` stops exactly the recorded process trees, also after the CLI that
started them crashed. The prediction service runs under a ``Supervisor`` that restarts it when it dies
(not when ``down`` stops it); ``status`` reports its restarts and last exit code.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopline.config import Settings
from loopline.platform.airflow_api import AirflowApi, AirflowApiError
from loopline.platform.airflow_env import child_env, venv_bin
from loopline.platform.health import (
    airflow_health,
    airflow_health_report,
    airflow_healthy,
    first_dead,
    mlflow_healthy,
    serving_alive,
)
from loopline.platform.processes import (
    ProcessRecord,
    ProcessRegistry,
    SupervisorState,
    spawn,
    stop_trees,
    tail,
    wait_until,
)
from loopline.platform.secrets import StackSecrets, load_or_create_secrets, read_secrets
from loopline.platform.supervision import supervised, supervisor_state_path
from loopline.storage.file_helpers import exclusive_lock

AIRFLOW_COMPONENTS = ("scheduler", "dag-processor", "triggerer")
Log = Callable[[str], None]  # where progress lines go (print, or the demo's indented printer)
SUPERVISED = ("serving",)  # restarted when they die (a crash, the OOM killer, kill -9)


class StackError(RuntimeError):
    """The stack could not be started; the message says which service and shows its log."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]


@dataclass
class StackStatus:
    running: dict[str, bool] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    supervised: dict[str, SupervisorState] = field(default_factory=dict)  # name → its supervisor's record

    @property
    def any_running(self) -> bool:
        return any(self.running.values())

    @property
    def all_running(self) -> bool:
        return bool(self.running) and all(self.running.values())


def registry(settings: Settings) -> ProcessRegistry:
    return ProcessRegistry(settings.state.run_dir / "stack.json")


def service_specs(settings: Settings) -> list[ServiceSpec]:
    """What ``up`` starts, MLflow first (it boots while Airflow's DB migrates).

    Airflow's log servers stay off: they would bind to every interface.
    """
    airflow = str(venv_bin() / "airflow")
    mlflow = str(venv_bin() / "mlflow")
    state = settings.state
    specs = [
        ServiceSpec(
            "mlflow",
            [
                mlflow,
                "server",
                "--host",
                settings.host,
                "--port",
                str(settings.mlflow_port),
                "--backend-store-uri",
                f"sqlite:///{state.mlflow_db}",
                "--artifacts-destination",
                str(state.mlflow_artifacts),
                "--workers",
                "1",
            ],
        ),
        ServiceSpec(
            "api-server",
            [
                airflow,
                "api-server",
                "--host",
                settings.host,
                "--port",
                str(settings.airflow_port),
                "--workers",
                "1",
            ],
        ),
        ServiceSpec("scheduler", [airflow, "scheduler", "--skip-serve-logs"]),
        ServiceSpec("dag-processor", [airflow, "dag-processor"]),
        ServiceSpec("triggerer", [airflow, "triggerer", "--skip-serve-logs"]),
        # Follows the registry (aliases champion/challenger): ready once a champion exists, alive before.
        ServiceSpec(
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
        ),
    ]
    return specs


def status(settings: Settings) -> StackStatus:
    """What the record file lists, and whether each runs (a supervised service: its supervisor, which brings
    the service back after a crash; ``supervised`` says whether the service itself is up right now)."""
    result = StackStatus()
    for record in registry(settings).load():
        result.running[record.name] = record.is_running()
        result.pids[record.name] = record.pid
        if record.name in SUPERVISED:
            state = SupervisorState.read(supervisor_state_path(settings, record.name))
            if state is not None and state.supervisor_pid == record.pid:
                result.supervised[record.name] = state
    return result


def _crashed_while_starting(settings: Settings) -> tuple[str, SupervisorState] | None:
    """A supervised service that exited (and is being restarted) before the stack came up: a broken start."""
    for name in SUPERVISED:
        state = SupervisorState.read(supervisor_state_path(settings, name))
        if state is not None and state.last_exit_code is not None:
            return name, state
    return None


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _check_ports(settings: Settings) -> None:
    for what, port, var in (
        ("Airflow", settings.airflow_port, "LOOPLINE_AIRFLOW_PORT"),
        ("MLflow", settings.mlflow_port, "LOOPLINE_MLFLOW_PORT"),
        ("the prediction service", settings.serving_port, "LOOPLINE_SERVING_PORT"),
    ):
        if not _port_free(settings.host, port):
            raise StackError(
                f"port {port} on {settings.host} is taken by another program, so {what} cannot start; "
                f"stop that program or choose another port with {var}=..."
            )


def _migrate_airflow_db(settings: Settings, env: dict[str, str]) -> None:
    """Create or upgrade Airflow's metadata DB, skipped when this Airflow version already did it."""
    from importlib.metadata import version

    airflow_version = version("apache-airflow")  # the installed package's, without importing Airflow
    marker = settings.state.airflow_home / ".migrated"
    if marker.exists() and marker.read_text() == airflow_version and settings.state.airflow_db.exists():
        return
    log_path = settings.state.logs / "airflow-db-migrate.log"
    with open(log_path, "ab") as log:
        done = subprocess.run(
            [str(venv_bin() / "airflow"), "db", "migrate"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        raise StackError(
            f"`airflow db migrate` failed (exit {done.returncode}); log {log_path}:\n{tail(log_path)}"
        )
    marker.write_text(airflow_version)


def api_for(settings: Settings, stack_secrets: StackSecrets | None = None) -> AirflowApi:
    stack_secrets = stack_secrets or read_secrets(settings)
    if stack_secrets is None:
        raise AirflowApiError("no Airflow login yet: start the stack with `loopline up` first")
    return AirflowApi(
        settings.airflow_base_url, stack_secrets.airflow_username, stack_secrets.airflow_password
    )


def project_dag_ids(settings: Settings) -> list[str]:
    """Loopline's DAGs: one file per DAG in ``dags/``, file stem == dag_id."""
    return sorted(p.stem for p in settings.dags_dir.glob("*.py") if not p.name.startswith("_"))


def unpause_project_dags(settings: Settings, api: AirflowApi, timeout: float) -> list[str]:
    """Wait until every DAG file is parsed, then un-pause any that is paused. Returns the ids seen."""
    wanted = set(project_dag_ids(settings))
    seen: dict[str, bool] = {}

    def all_parsed() -> bool:
        nonlocal seen
        seen = api.list_dags()
        return wanted <= set(seen)

    wait_until(all_parsed, timeout=timeout, interval=0.5)
    for dag_id in sorted(wanted & set(seen)):
        if seen[dag_id]:
            api.set_paused(dag_id, paused=False)
    return sorted(wanted & set(seen))


def _exclusive(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """One ``up``/``down`` at a time per state dir; a second one waits for the first."""
    return exclusive_lock(settings.state.run_dir / "stack.lock")


PROFILES = ("embedded", "distributed")


def up(settings: Settings, log: Log = print, profile: str = "embedded") -> StackSecrets:
    """Start the stack (or report the running one) and wait until every service is healthy.

    ``profile``: ``embedded`` (the default: SQLite, LocalExecutor, one state dir) or ``distributed``
    (``loopline.platform.distributed``: Postgres, Redis, an object store, Celery workers without a shared disk).
    """
    if profile not in PROFILES:
        raise StackError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    with _exclusive(settings):
        if profile == "distributed":
            return _up_distributed(settings, log)
        return _up(settings, log)


def _refuse_other_profile(settings: Settings, current: StackStatus, wanted: str) -> None:
    running = running_profile(settings)
    if current.any_running and running != wanted:
        raise StackError(
            f"the {running} profile is running in {settings.state.root}: stop it with "
            f"`loopline down` before starting the {wanted} one"
        )


def running_profile(settings: Settings) -> str | None:
    """Which profile the recorded stack is (None when nothing was recorded)."""
    from loopline.platform import distributed

    records = registry(settings).load()
    if not records:
        return None
    return "distributed" if distributed.is_distributed(settings, records) else "embedded"


def use_running_profile(settings: Settings) -> Settings:
    """Make this process a client of the running stack: the distributed profile's settings, and its
    environment (object-store credentials, Feast's production store) set here, so code that reads the
    settings or the environment itself (Feast, boto, ``get_settings``) reaches the same services."""
    from loopline.platform import distributed

    active = active_settings(settings)
    if active is not settings:
        profile = distributed.read_profile(settings)
        assert profile is not None
        os.environ.update(
            {
                k: v
                for k, v in active.env().items()
                if k.startswith(
                    (
                        "LOOPLINE_STORAGE",
                        "LOOPLINE_STATE_DB",
                        "LOOPLINE_HISTORY",
                        "LOOPLINE_PREDICTION",
                        "LOOPLINE_MODE",
                    )
                )
            }
        )
        os.environ.update(distributed.client_env(profile))
    return active


def active_settings(settings: Settings) -> Settings:
    """``settings`` as the running stack's processes see them: the distributed profile's shared-state
    settings while that profile runs, else ``settings`` unchanged."""
    from loopline.platform import distributed

    if running_profile(settings) == "distributed" and settings.mode == "embedded":
        profile = distributed.read_profile(settings)
        if profile is not None:
            return distributed.profile_settings(settings, profile)
    return settings


def _already_up(settings: Settings, profile: str, log: Log) -> bool:
    """Whether the ``profile`` stack runs already (then nothing to start); a partly running one is stopped
    and the records of an earlier stack are cleared, so the caller starts afresh."""
    current = status(settings)
    _refuse_other_profile(settings, current, profile)
    if current.all_running:
        log(
            "Loopline stack is already running."
            if profile == "embedded"
            else f"Loopline stack ({profile} profile) is already running."
        )
        return True
    if current.any_running:
        log("A previous stack is partly running: stopping it before starting afresh.")
        _down(settings, log=lambda *_: None)
    registry(settings).clear()
    for name in SUPERVISED:  # restarts and exit codes of an earlier stack are not this one's
        supervisor_state_path(settings, name).unlink(missing_ok=True)
    return False


def _up(settings: Settings, log: Log) -> StackSecrets:
    state = settings.state.ensure()
    reg = registry(settings)
    if _already_up(settings, "embedded", log):
        return load_or_create_secrets(settings)
    _check_ports(settings)
    stack_secrets = load_or_create_secrets(settings)
    env = child_env(settings, stack_secrets)

    started = time.monotonic()
    specs = service_specs(settings)
    records: list[ProcessRecord] = []

    def start(spec: ServiceSpec) -> None:
        log_path = state.logs / f"{spec.name}.log"
        records.append(spawn(spec.name, spec.argv, env, log_path, reg, cwd=settings.project_dir))

    try:
        # MLflow needs no Airflow DB: let it boot while the migration runs.
        start(specs[0])
        _migrate_airflow_db(settings, env)
        for spec in specs[1:]:
            start(spec)
        ok = wait_until(
            lambda: (
                first_dead(records) is not None
                or _crashed_while_starting(settings) is not None
                or (mlflow_healthy(settings) and airflow_healthy(settings) and serving_alive(settings))
            ),
            timeout=settings.startup_timeout_s,
            interval=0.25,
        )
        dead = first_dead(records)
        if dead is not None:
            raise StackError(
                f"{dead.name} exited during start-up; last lines of {dead.log}:\n{tail(dead.log)}"
            )
        crashed = _crashed_while_starting(settings)
        if crashed is not None:
            name, crashed_state = crashed
            log_path = settings.state.logs / f"{name}.log"
            raise StackError(
                f"{name} exited during start-up (exit code {crashed_state.last_exit_code}); last lines of "
                f"{log_path}:\n{tail(log_path)}"
            )
        if not ok:
            raise StackError(
                f"the stack was not healthy after {settings.startup_timeout_s:.0f} s "
                f"(Airflow: {airflow_health(settings) or 'no answer'}, MLflow healthy: "
                f"{mlflow_healthy(settings)}, serving alive: {serving_alive(settings)}); logs are in {state.logs}"
            )
        healthy_after = time.monotonic() - started
        dags = unpause_project_dags(settings, api_for(settings, stack_secrets), timeout=30)
    except BaseException:
        # A half-started stack is worse than none: stop what this call started, then report.
        _down(settings, log=lambda *_: None)
        raise
    log(f"Stack healthy after {healthy_after:.1f} s.")
    log(f"Loopline DAGs active: {', '.join(dags) or 'none'}")
    return stack_secrets


def down(settings: Settings, log: Log = print) -> list[str]:
    """Stop every recorded process tree; returns the names of the services that were running."""
    with _exclusive(settings):
        return _down(settings, log)


def _up_distributed(settings: Settings, log: Log) -> StackSecrets:
    from loopline.platform import distributed

    reg = registry(settings)
    if _already_up(settings, "distributed", log):
        return load_or_create_secrets(settings)
    settings.state.ensure()
    for what, port, var in (
        ("Airflow", settings.airflow_port, "LOOPLINE_AIRFLOW_PORT"),
        ("MLflow", settings.mlflow_port, "LOOPLINE_MLFLOW_PORT"),
    ):
        if not _port_free(settings.host, port):
            raise StackError(
                f"port {port} on {settings.host} is taken by another program, so {what} cannot "
                f"start; stop that program or choose another port with {var}=..."
            )
    stack_secrets = load_or_create_secrets(settings)
    try:
        started = distributed.start(
            settings, stack_secrets, reg, log=log, timeout=max(settings.startup_timeout_s, 300.0)
        )
        dags = unpause_project_dags(settings, api_for(settings, stack_secrets), timeout=60)
    except distributed.DistributedError as exc:
        _down(settings, log=lambda *_: None)
        raise StackError(str(exc)) from None
    except BaseException:
        _down(settings, log=lambda *_: None)
        raise
    log(
        f"Stack healthy after {started.seconds:.1f} s (distributed profile: "
        f"{len(distributed.worker_names())} Celery workers)."
    )
    log(f"Loopline DAGs active: {', '.join(dags) or 'none'}")
    return stack_secrets


def _down(settings: Settings, log: Log) -> list[str]:
    from loopline.platform.distributed import DATA_SERVICES

    reg = registry(settings)
    records = reg.load()
    # What uses the databases stops first, so it does not outlive them (nothing of the kind is embedded).
    users = [r for r in records if r.name not in DATA_SERVICES]
    stopped = stop_trees(users)
    if len(users) < len(records):
        stopped += stop_trees([r for r in records if r.name in DATA_SERVICES])
    for record in stopped:
        log(f"stopped {record.name} (pid {record.pid})")
    reg.clear()
    if not stopped:
        log("Nothing was running.")
    return [record.name for record in stopped]


def describe(settings: Settings) -> dict[str, Any]:
    """The JSON of ``loopline status``: services, URLs and (embedded mode) the Airflow login."""
    current = status(settings)
    stack_secrets = read_secrets(settings)
    profile = running_profile(settings)
    mode = "distributed" if profile == "distributed" else settings.mode
    airflow: dict[str, Any] = {"url": settings.airflow_base_url}
    if mode in ("embedded", "distributed") and stack_secrets is not None:
        airflow.update(username=stack_secrets.airflow_username, password=stack_secrets.airflow_password)
    if current.any_running:
        if current.running.get("api-server"):
            airflow["health"], why_unknown = airflow_health_report(settings)
        else:  # nothing would answer: say so now rather than after the report's patience
            airflow["health"], why_unknown = {}, "the api-server is not running (`loopline up` starts it)"
        if why_unknown:
            airflow["health_unknown"] = why_unknown
    info = {
        "mode": mode,
        "state_dir": str(settings.state.root),
        "running": current.all_running,
        "services": {name: _service(current, name, running) for name, running in current.running.items()},
        "airflow": airflow,
        "mlflow": {"url": settings.mlflow_uri},
        "serving": {"url": settings.serving_base_url},
        "logs": str(settings.state.logs),
    }
    if profile == "distributed":  # its data services, ports and workers' scratch dirs too
        from loopline.platform import distributed

        stored = distributed.read_profile(settings)
        if stored is not None:
            info.update(distributed.describe(settings, stored))
    return info


def _service(current: StackStatus, name: str, running: bool) -> dict[str, Any]:
    """One service in ``describe``: a supervised one also says whether the service itself is up now (not in
    a restart's backoff), its PID, how often it was restarted and how it last exited."""
    service: dict[str, Any] = {"running": running, "pid": current.pids[name]}
    state = current.supervised.get(name)
    if state is not None:
        service.update(
            running=running and state.state == "running" and state.child_pid is not None,
            state=state.state if running else "stopped",
            child_pid=state.child_pid,
            restarts=state.restarts,
            last_exit_code=state.last_exit_code,
            last_exit_at=state.last_exit_at,
        )
    return service


def log_paths(settings: Settings) -> dict[str, Path]:
    return {r.name: Path(r.log) for r in registry(settings).load()}
