"""The distributed profile for real: `loopline up --profile distributed` starts Postgres, Redis, an S3 object
store (moto's server), MLflow on them and Airflow with the CeleryExecutor and two Celery workers; each service
answers, `platform_smoke` runs on the workers over REST, each worker has its own private scratch dir, and
`loopline down` leaves no process behind.

Runs the CLI as a user would (subprocesses), against a temporary project copy and state dir on free ports.
Skips with the apt line when Postgres or Redis is not installed (`.ci/run` installs both).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest
from local_servers import APT_LINE, postgres_bin
from scratch_stack import processes_using, scratch_env, scratch_project

from loopline.platform.health import AIRFLOW_COMPONENTS

pytestmark = pytest.mark.integration

LOOPLINE = str(Path(sys.executable).parent / "loopline")
SMOKE_TASKS = {
    "check_state_dir",
    "check_mlflow",
    "check_feast_registry",
    "check_great_expectations",
    "record_smoke_report",
}
SHARED_SETTINGS = (
    "LOOPLINE_STORAGE_URL",
    "LOOPLINE_STORAGE_ENDPOINT_URL",
    "LOOPLINE_STATE_DB_URL",
    "LOOPLINE_HISTORY_URL",
    "LOOPLINE_PREDICTION_LOG_URL",
    "LOOPLINE_MLFLOW_TRACKING_URI",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "FEAST_FS_YAML_FILE_PATH",
    "LOOPLINE_FEAST_REGISTRY_URL",
    "LOOPLINE_FEAST_REDIS",
    "LOOPLINE_FEAST_PG_HOST",
)


def _env(root: Path, project: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in [k for k in env if k.startswith(("AIRFLOW", "LOOPLINE_", "FEAST_", "MLFLOW_", "AWS_"))]:
        del env[key]  # the profile must configure every process itself
    env.update(scratch_env(root, project))
    return env


def _loopline(env: dict[str, str], *args: str, timeout: float = 360) -> subprocess.CompletedProcess:
    return subprocess.run([LOOPLINE, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _tree_pids(pids: list[int]) -> set[int]:
    found: set[int] = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            found |= {pid, *(child.pid for child in proc.children(recursive=True))}
        except psutil.Error:
            continue
    return found


def _environ(pid: int) -> dict[str, str]:
    """The environment of a service: its leader's, or (a leader that set its process title overwrote the
    memory /proc shows) the first process of its tree that shows one."""
    leader = psutil.Process(pid)
    for proc in [leader, *leader.children(recursive=True)]:
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        if "LOOPLINE_MODE" in env:
            return env
    return {}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def stack():
    if postgres_bin() is None or shutil.which("redis-server") is None:
        pytest.skip(f"the distributed profile needs Postgres and Redis: {APT_LINE}")
    # Not pytest's tmp_path: its parents are private to this user, and Postgres may run as `nobody`.
    root = Path(tempfile.mkdtemp(prefix="loopline-distributed-"))
    root.chmod(0o755)
    project = scratch_project(root)
    env = _env(root, project)
    state = root / "state"
    began = time.monotonic()
    up = _loopline(env, "up", "--profile", "distributed")
    startup_s = time.monotonic() - began
    try:
        assert up.returncode == 0, f"loopline up --profile distributed failed:\n{up.stdout}\n{up.stderr}"
        status = _loopline(env, "status", "--json", timeout=60)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        secrets = json.loads((state / "run" / "distributed.json").read_text())
        yield {
            "env": env,
            "state": state,
            "info": info,
            "profile": secrets,
            "startup_s": startup_s,
            "pids": _tree_pids([s["pid"] for s in info["services"].values()]),
        }
    finally:
        _loopline(env, "down")
        leftovers = processes_using(state)
        for proc in leftovers:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)
        assert not leftovers, f"processes left after loopline down: {leftovers}"


def test_status_reports_the_distributed_mode_and_every_service(stack):
    info = stack["info"]
    print(f"distributed profile healthy after {stack['startup_s']:.1f} s (loopline up, wall clock)")
    assert info["mode"] == "distributed"
    assert info["running"] is True
    assert set(info["services"]) == {
        "postgres",
        "redis",
        "object-store",
        "mlflow",
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "worker-1",
        "worker-2",
        "serving",
    }
    assert all(s["running"] for s in info["services"].values()), info["services"]
    assert info["object_store"]["bucket"] == "loopline"
    assert info["airflow"]["health"] == dict.fromkeys(AIRFLOW_COMPONENTS, "healthy"), info["airflow"]
    for name in ("postgres", "redis", "object-store", "mlflow", "api-server", "worker-1"):
        proc = psutil.Process(info["services"][name]["pid"])
        listening = [
            c.laddr.ip
            for p in [proc, *proc.children(recursive=True)]
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert all(ip == "127.0.0.1" for ip in listening), f"{name} listens beyond loopback: {listening}"
    if os.geteuid() == 0:
        assert psutil.Process(info["services"]["postgres"]["pid"]).username() == "nobody"


def test_each_service_answers(stack):
    import boto3
    import psycopg
    import redis
    from celery import Celery

    profile, info = stack["profile"], stack["info"]
    with psycopg.connect(
        host="127.0.0.1",
        port=profile["postgres_port"],
        user="loopline",
        password=profile["pg_password"],
        dbname="postgres",
    ) as conn:
        databases = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
    assert {"airflow", "mlflow", "loopline", "feast"} <= databases
    assert redis.Redis(
        host="127.0.0.1", port=profile["redis_port"], password=profile["redis_password"]
    ).ping()
    s3 = boto3.client(
        "s3",
        endpoint_url=info["object_store"]["endpoint"],
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
    )
    assert "loopline" in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert httpx.get(f"{info['mlflow']['url']}/health", timeout=5).status_code == 200
    assert httpx.get(f"{info['airflow']['url']}/api/v2/monitor/health", timeout=5).status_code == 200
    # The scheduler hands tasks to Celery over this broker, and both workers answer on it.
    scheduler_env = psutil.Process(info["services"]["scheduler"]["pid"]).environ()
    assert scheduler_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    app = Celery(broker=scheduler_env["AIRFLOW__CELERY__BROKER_URL"])
    try:
        workers = {name for reply in app.control.ping(timeout=2) for name in reply}
    finally:
        app.close()
    assert workers == {"worker-1@loopline", "worker-2@loopline"}


def test_every_airflow_process_gets_the_shared_state_settings(stack):
    info, state = stack["info"], stack["state"]
    # The api-server's processes set their title over the memory /proc shows as the environment; it is started
    # with the scheduler's environment (one dict for the control plane).
    for name in ("scheduler", "dag-processor", "triggerer", "worker-1", "worker-2"):
        env = _environ(info["services"][name]["pid"])
        missing = [key for key in SHARED_SETTINGS if not env.get(key)]
        assert not missing, f"{name} lacks {missing}"
        assert env["LOOPLINE_MODE"] == "distributed"
        assert env["LOOPLINE_STORAGE_URL"] == "s3://loopline"
        assert env["LOOPLINE_STATE_DB_URL"].startswith("postgresql://")
        assert env["FEAST_FS_YAML_FILE_PATH"] == "feature_store.production.yaml"
        if name.startswith("worker-"):
            assert env["LOOPLINE_STATE_DIR"] == str(state / "distributed" / "workers" / name)


def test_platform_smoke_runs_on_the_celery_workers_in_private_scratch_dirs(stack):
    import boto3

    from loopline.platform.airflow_api import AirflowApi

    info, state = stack["info"], stack["state"]
    airflow = info["airflow"]
    api = AirflowApi(airflow["url"], airflow["username"], airflow["password"])
    run_id = api.trigger("platform_smoke")
    result = api.wait("platform_smoke", run_id, timeout=200)
    worker_logs = {name: Path(state / "logs" / f"{name}.log") for name in ("worker-1", "worker-2")}
    assert result.succeeded, f"platform_smoke {result.state}: {result.task_states}\n" + "\n".join(
        p.read_text()[-2000:] for p in worker_logs.values()
    )
    assert set(result.task_states) == SMOKE_TASKS

    # Each task ran in a Celery worker: its own scratch dir is its LOOPLINE_STATE_DIR.
    headers = {"Authorization": f"Bearer {api.token()}"}
    base = f"{airflow['url']}/api/v2/dags/platform_smoke/dagRuns/{run_id}/taskInstances"
    tis = httpx.get(base, headers=headers, timeout=10).json()["task_instances"]
    assert {ti["queue"] for ti in tis} == {"default"}, tis
    xcom = httpx.get(f"{base}/check_state_dir/xcomEntries/return_value", headers=headers, timeout=10).json()
    details = (
        xcom["value"]["details"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])["details"]
    )
    scratch = {name: state / "distributed" / "workers" / name for name in ("worker-1", "worker-2")}
    assert details["worker"] in scratch
    # Every task try has a fresh folder of its own inside its worker's (LOOPLINE_TASK_SCRATCH=per-task).
    assert details["task_scratch"] == "per-task"
    run_folder = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    assert details["scratch_dir"].startswith(
        f"{scratch[details['worker']]}/tasks/platform_smoke/{run_folder}/check_state_dir.1"
    )
    assert details["scratch_mode"] == "700" and details["state_db"] == "loopline"
    received = sum(p.read_text().count("Task execute_workload[") for p in worker_logs.values())
    assert received >= 2 * len(SMOKE_TASKS)  # a "received" and a "succeeded" line per task

    # Two distinct, private scratch dirs.
    assert scratch["worker-1"] != scratch["worker-2"]
    for path in scratch.values():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o700, f"{path} has mode {mode:o}"
        assert path.stat().st_uid == os.geteuid()

    # Shared state went to the services: the report and MLflow's artifact are objects in the bucket.
    s3 = boto3.client(
        "s3",
        endpoint_url=info["object_store"]["endpoint"],
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="loopline").get("Contents", [])]
    assert any(k.startswith("reports/platform_smoke/") for k in keys), keys
    assert any(k.startswith("mlflow/") and k.endswith("smoke/probe.json") for k in keys), keys


def test_down_stops_every_process_it_started(stack):
    # Runs last in this module: the fixture's finalizer then finds nothing running.
    pids = stack["pids"]
    assert len(pids) >= 10
    down = _loopline(stack["env"], "down", timeout=120)
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 10
    alive = [pid for pid in pids if _alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _alive(pid)]
    assert not alive, f"still running after loopline down: {alive}"
    assert processes_using(stack["state"]) == []
    status = json.loads(_loopline(stack["env"], "status", "--json", timeout=60).stdout)
    assert status["running"] is False and status["services"] == {}
