"""The embedded stack for real: `loopline up`, trigger over REST, `loopline down`, nothing left.

Runs the CLI as a user would (subprocesses), against a temporary project copy and state dir on free
ports, so it never disturbs a developer's running stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from scratch_stack import processes_using, scratch_env, scratch_project

from loopline.platform.health import AIRFLOW_COMPONENTS

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPLINE = str(Path(sys.executable).parent / "loopline")


def _env(root: Path, project: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in [k for k in env if k.startswith(("AIRFLOW", "LOOPLINE_"))]:
        del env[key]  # the stack must configure Airflow itself, from Loopline's settings alone
    env.update(scratch_env(root, project))
    return env


def _loopline(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([LOOPLINE, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _recorded(state_dir: Path) -> list[dict]:
    path = state_dir / "run" / "stack.json"
    return json.loads(path.read_text()) if path.exists() else []


def test_down_stops_everything_after_the_cli_was_killed(tmp_path):
    project = scratch_project(tmp_path)
    env = _env(tmp_path, project)
    state = tmp_path / "state"
    cli = subprocess.Popen([LOOPLINE, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(_recorded(state)) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(_recorded(state)) == 6, "loopline up did not record its six services"
        time.sleep(2)  # let the services fork their workers
        cli.send_signal(signal.SIGKILL)  # the CLI dies mid-start-up; its services keep running
        cli.wait(timeout=10)
        assert processes_using(state), "expected orphaned stack processes after killing the CLI"
    finally:
        if cli.poll() is None:
            cli.kill()
    down = _loopline(env, "down")
    assert down.returncode == 0, down.stderr
    assert processes_using(state) == []
    assert _recorded(state) == []


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    project = scratch_project(root)
    env = _env(root, project)
    up = _loopline(env, "up")
    try:
        assert up.returncode == 0, f"loopline up failed:\n{up.stdout}\n{up.stderr}"
        yield {"env": env, "project": project, "state": root / "state", "up": up}
    finally:
        _loopline(env, "down")
        leftovers = processes_using(root / "state")
        for proc in leftovers:  # do not leak into the rest of the suite, but do fail
            proc.kill()
        assert leftovers == [], f"loopline down left processes running: {leftovers}"


def _status(stack) -> dict:
    out = _loopline(stack["env"], "status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_up_prints_urls_and_a_generated_login(stack):
    info = _status(stack)
    env = stack["env"]
    assert info["running"] is True
    assert set(info["services"]) == {
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
        "mlflow",
        "serving",
    }
    assert info["airflow"]["url"] == f"http://127.0.0.1:{env['LOOPLINE_AIRFLOW_PORT']}"
    assert info["mlflow"]["url"] == f"http://127.0.0.1:{env['LOOPLINE_MLFLOW_PORT']}"
    assert info["serving"]["url"] == f"http://127.0.0.1:{env['LOOPLINE_SERVING_PORT']}"
    # No model registered yet: the prediction service is alive but says why it is not ready.
    import httpx

    assert httpx.get(info["serving"]["url"] + "/healthz", timeout=5).status_code == 200
    assert httpx.get(info["serving"]["url"] + "/readyz", timeout=5).status_code == 503
    assert info["champion"] is None and info["versions"] == []
    # Only the weekly schedule's first run may have happened, skipping (recorded) for want of data.
    assert all(
        e["kind"] == "training_failed" and e["reason"].startswith("nothing to train on")
        for e in info["history"]
    ), info["history"]
    password = info["airflow"]["password"]
    assert info["airflow"]["username"] and password and password != "admin" and len(password) >= 16
    assert password in stack["up"].stdout and info["airflow"]["url"] in stack["up"].stdout
    assert info["airflow"]["health"] == dict.fromkeys(AIRFLOW_COMPONENTS, "healthy"), info["airflow"]


def test_servers_listen_on_loopback_only(stack):
    pids = set()
    for record in _recorded(stack["state"]):
        proc = psutil.Process(record["pid"])
        pids |= {proc.pid, *(c.pid for c in proc.children(recursive=True))}
    listening = [
        c.laddr
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    assert listening, "the stack listens on no port at all?"
    assert {addr.ip for addr in listening} == {"127.0.0.1"}, listening
    ports = {addr.port for addr in listening}
    assert int(stack["env"]["LOOPLINE_AIRFLOW_PORT"]) in ports
    assert int(stack["env"]["LOOPLINE_MLFLOW_PORT"]) in ports


def test_up_again_reports_the_running_stack(stack):
    before = {r["name"]: r["pid"] for r in _recorded(stack["state"])}
    again = _loopline(stack["env"], "up")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert {r["name"]: r["pid"] for r in _recorded(stack["state"])} == before


def test_platform_smoke_runs_over_rest_and_succeeds(stack):
    out = _loopline(stack["env"], "trigger", "platform_smoke", "--wait", "--timeout", "240")
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("platform_smoke ") and last.endswith(": success"), last
    reports = list((stack["state"] / "reports" / "platform_smoke").glob("*.json"))
    assert len(reports) == 1
    checks = {c["name"] for c in json.loads(reports[0].read_text())["checks"]}
    assert checks == {"state_dir", "mlflow", "feast_registry", "great_expectations"}


def test_trigger_errors_are_plain_words(stack):
    unknown = _loopline(stack["env"], "trigger", "no_such_dag")
    assert unknown.returncode != 0
    assert "no DAG 'no_such_dag'" in unknown.stderr and "platform_smoke" in unknown.stderr
    bad_conf = _loopline(stack["env"], "trigger", "platform_smoke", "--conf", "{not json")
    assert bad_conf.returncode != 0 and "--conf is not valid JSON" in bad_conf.stderr


def test_a_bad_training_conf_is_refused_at_trigger_time_naming_the_field(stack):
    bad = _loopline(stack["env"], "trigger", "train_model", "--conf", '{"epochs": 0}')
    assert bad.returncode != 0
    assert "param epochs" in bad.stderr and "minimum of 1" in bad.stderr
    assert "Failed validating" not in bad.stderr, "the message is one plain sentence, not a schema dump"


def test_new_dag_file_is_picked_up_and_active(stack):
    probe = stack["project"] / "dags" / "pickup_probe.py"
    probe.write_text(
        (stack["project"] / "dags" / "platform_smoke.py")
        .read_text()
        .replace("def platform_smoke()", "def pickup_probe()")
        .replace("platform_smoke()\n", "pickup_probe()\n")
    )
    api = _api(stack)
    started = time.monotonic()
    dags: dict[str, bool] = {}
    while time.monotonic() - started < 45:
        dags = api.list_dags()
        if "pickup_probe" in dags:
            break
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    probe.unlink()
    # Airflow's default is 300 s; Loopline's settings make it ~10-15 s (measured in bench/stack.py).
    assert "pickup_probe" in dags, f"a new DAG file was not picked up within {elapsed:.0f} s"
    assert dags["pickup_probe"] is False, "new Loopline DAGs must start un-paused"


def _api(stack):
    from loopline.config import Settings
    from loopline.platform.stack import api_for

    return api_for(
        Settings(
            project_dir=stack["project"],
            state_dir=stack["state"],
            airflow_port=int(stack["env"]["LOOPLINE_AIRFLOW_PORT"]),
            mlflow_port=int(stack["env"]["LOOPLINE_MLFLOW_PORT"]),
        )
    )


def test_a_landed_batch_starts_ingestion_within_60_s_and_is_announced(stack):
    api = _api(stack)
    landing = stack["state"] / "data" / "landing"
    out = _loopline(
        stack["env"],
        "simulate",
        "--days",
        "1",
        "--customers",
        "200",
        "--seed",
        "11",
        "--out",
        str(landing),
        "--json",
        "--quiet",
    )
    assert out.returncode == 0, out.stderr
    landed_at = datetime.now(UTC)
    simulated = json.loads(out.stdout.strip().splitlines()[-1])
    events: list[dict] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        events = [
            e for e in api.asset_events("loopline.validated_batch") if "2026-01-01" in e["extra"]["batch_id"]
        ]
        if events:
            break
        time.sleep(1)
    assert events, "no loopline.validated_batch event for the landed batch"
    extra = events[0]["extra"]
    assert extra["kind"] == "transactions" and extra["rows"] == simulated["transactions"]
    assert extra["partitions"] and Path(extra["report"]).exists()
    run = next(r for r in api.dag_runs("ingest_landing") if r["run_id"] == events[0]["source_run_id"])
    assert run["state"] in ("running", "success")
    # The promise: no human, and ingestion starts within a minute of the file landing.
    started_after = (run["start_date"] - landed_at).total_seconds()
    assert started_after <= 60, f"ingestion started {started_after:.0f} s after the file landed"
    assert not list((landing / "transactions").glob("*.parquet")), (
        "the landed file must leave the landing zone"
    )


def test_published_transactions_are_materialised_into_features(stack):
    """Follows the previous test's batch: validated_batch schedules materialize_features."""
    api = _api(stack)
    started = time.monotonic()
    events: list[dict] = []
    while time.monotonic() - started < 120 and not events:
        events = api.asset_events("loopline.features")
        time.sleep(1)
    assert events, "no loopline.features event after a transactions batch was published"
    extra = events[0]["extra"]
    assert extra["start"].startswith("2026-01-01") and extra["end"].startswith("2026-01-02")
    assert extra["offline_rows"]["customer_velocity"] > 0
    assert (stack["state"] / "feast" / "online_store.db").exists()
