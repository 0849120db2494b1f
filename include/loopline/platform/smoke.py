"""Platform smoke checks: prove every service Loopline depends on works, end to end.

Each check writes something real and reads it back, so "green" means the platform can do its job —
not merely that a port answers. The ``platform_smoke`` DAG runs one task per check; run it first
after any upgrade.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopline.config import Settings


class SmokeCheckFailed(RuntimeError):
    """A service did not behave; the message names it and what to look at."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timed(name: str, fn: Callable[[], dict[str, Any]]) -> CheckResult:
    started = time.perf_counter()
    details = fn()
    return CheckResult(name=name, seconds=round(time.perf_counter() - started, 3), details=details)


def check_state_dir(settings: Settings) -> CheckResult:
    """Every zone of the state directory exists and is writable; where tasks share no disk
    (``LOOPLINE_STORAGE_URL`` set), the shared state services instead (``check_shared_state``)."""
    if settings.storage_url:
        return _timed("state_dir", lambda: check_shared_state(settings))

    def run() -> dict[str, Any]:
        state = settings.state
        token = uuid.uuid4().hex
        for directory in state.directories():
            probe = directory / f".smoke-{token}"
            try:
                directory.mkdir(parents=True, exist_ok=True)
                probe.write_text(token)
                readback = probe.read_text()
                probe.unlink()
            except OSError as exc:
                with contextlib.suppress(OSError):
                    probe.unlink(missing_ok=True)
                raise SmokeCheckFailed(
                    f"state directory {directory} is not a writable directory ({exc}); fix its permissions "
                    f"or point LOOPLINE_STATE_DIR elsewhere"
                ) from exc
            if readback != token:
                raise SmokeCheckFailed(f"state directory {directory} returned different bytes than written")
        return {"root": str(state.root), "directories": len(state.directories())}

    return _timed("state_dir", run)


def check_shared_state(settings: Settings) -> dict[str, Any]:
    """The task's own scratch dir is writable (and, in the distributed profile, private: mode 0700), an object
    written to shared storage reads back and is removed, and the state database answers."""
    import os
    import stat

    from loopline.storage.files import SharedFiles

    scratch = settings.state.root  # with LOOPLINE_TASK_SCRATCH=per-task: this task try's own folder
    try:
        scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SmokeCheckFailed(f"the task's scratch dir {scratch} cannot be created ({exc})") from exc
    token = uuid.uuid4().hex
    probe = scratch / f".smoke-{token}"
    try:
        probe.write_text(token)
        readback = probe.read_text()
        probe.unlink()
    except OSError as exc:
        raise SmokeCheckFailed(f"the task's scratch dir {scratch} is not writable ({exc})") from exc
    if readback != token:
        raise SmokeCheckFailed(f"the task's scratch dir {scratch} returned different bytes than written")
    mode = stat.S_IMODE(scratch.stat().st_mode)
    if settings.mode == "distributed" and mode != 0o700:
        raise SmokeCheckFailed(
            f"the worker's scratch dir {scratch} has mode {mode:o}: other workers could read "
            "it (the distributed profile makes it 0700)"
        )
    shared = SharedFiles.of(settings)
    try:
        uri = shared.write_bytes(token.encode(), "smoke", f"probe-{token}")
        stored = shared.read_bytes(uri)
        shared.remove(uri)
    except Exception as exc:  # s3fs/botocore raise many types for "store not reachable"
        raise SmokeCheckFailed(
            f"shared storage {settings.storage_url} is not usable ({exc}); check "
            "LOOPLINE_STORAGE_ENDPOINT_URL and the AWS_* credentials"
        ) from exc
    if stored != token.encode():
        raise SmokeCheckFailed(f"shared storage returned different bytes than written at {uri}")
    details: dict[str, Any] = {
        "scratch_dir": str(scratch),
        "scratch_mode": f"{mode:o}",
        "worker": os.environ.get("LOOPLINE_WORKER_NAME"),
        "storage_url": settings.storage_url,
        "task_scratch": settings.task_scratch,
    }
    if settings.state_db_url:
        from loopline.storage.state_db import connect_postgres, is_postgres_url

        if is_postgres_url(settings.state_db_url):
            try:
                with connect_postgres(settings.state_db_url, "loopline-smoke") as conn:
                    database = conn.execute("SELECT current_database()").fetchone()[0]
            except ConnectionError as exc:
                raise SmokeCheckFailed(str(exc)) from exc
            details["state_db"] = database
    return details


def check_mlflow(settings: Settings) -> CheckResult:
    """Log a run with a param, a metric and an artifact through the tracking server; read them back."""

    def run() -> dict[str, Any]:
        import mlflow

        from loopline.platform.mlflow_util import mlflow_client, use_experiment

        client = mlflow_client(settings.mlflow_uri)
        try:
            experiment = use_experiment("loopline-platform-smoke", settings.mlflow_uri)
        except Exception as exc:  # MLflow raises several types for "server not reachable"
            raise SmokeCheckFailed(
                f"MLflow at {settings.mlflow_uri} is not usable ({exc}); is the stack up (`loopline status`)?"
            ) from exc
        probe = uuid.uuid4().hex
        with mlflow.start_run(experiment_id=experiment.experiment_id, run_name="smoke") as active:
            mlflow.log_param("probe", probe)
            mlflow.log_metric("smoke_value", 1.0)
            mlflow.log_dict({"probe": probe}, "smoke/probe.json")
        run_id = active.info.run_id
        stored = client.get_run(run_id)
        if stored.data.params.get("probe") != probe or stored.data.metrics.get("smoke_value") != 1.0:
            raise SmokeCheckFailed(f"MLflow run {run_id} did not return what was logged")
        artifact = mlflow.artifacts.load_dict(f"runs:/{run_id}/smoke/probe.json")
        if artifact.get("probe") != probe:
            raise SmokeCheckFailed(f"MLflow artifact store returned a different file for run {run_id}")
        return {"tracking_uri": settings.mlflow_uri, "run_id": run_id, "experiment": experiment.name}

    return _timed("mlflow", run)


def check_feast(settings: Settings) -> CheckResult:
    """Apply the feature repo to the registry and read its entities back."""

    def run() -> dict[str, Any]:
        from loopline.platform.feast_store import apply_feature_repo

        store = apply_feature_repo(settings)
        entities = sorted(e.name for e in store.list_entities())
        # A SQL registry (feature_store.production.yaml) is named by its type: its URL holds a password.
        registry_config = store.config.registry
        registry = (
            str(settings.state.feast_registry)
            if registry_config.registry_type == "file"
            else f"{registry_config.registry_type} registry"
        )
        if not entities:
            raise SmokeCheckFailed(
                f"Feast registry {registry} has no entities after applying {settings.feature_repo_dir}"
            )
        return {"project": store.project, "entities": entities, "registry": registry}

    return _timed("feast_registry", run)


def check_great_expectations(settings: Settings) -> CheckResult:
    """Validate a known-good and a known-bad frame: GX must pass the first and fail the second."""

    def run() -> dict[str, Any]:
        import great_expectations as gx
        import pandas as pd
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)  # keep task logs readable
        batch = (
            context.data_sources.add_pandas("smoke")
            .add_dataframe_asset("frame")
            .add_batch_definition_whole_dataframe("whole")
        )
        expectations = [
            gx.expectations.ExpectColumnValuesToNotBeNull(column="probe_id"),
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="probe_value", min_value=0, max_value=50_000
            ),
        ]
        good = pd.DataFrame({"probe_id": ["p1", "p2"], "probe_value": [12.5, 80.0]})
        bad = pd.DataFrame({"probe_id": ["p1", None], "probe_value": [12.5, -3.0]})
        outcomes = {}
        for label, frame in (("good", good), ("bad", bad)):
            outcomes[label] = all(
                batch.get_batch(batch_parameters={"dataframe": frame}).validate(e).success
                for e in expectations
            )
        if outcomes != {"good": True, "bad": False}:
            raise SmokeCheckFailed(f"Great Expectations judged the probe frames wrongly: {outcomes}")
        return {"version": gx.__version__, "good_passed": True, "bad_failed": True}

    return _timed("great_expectations", run)


def write_report(settings: Settings, results: list[dict[str, Any]], run_id: str) -> Path | str:
    """Keep the smoke results in the reports zone (one JSON per run): the state dir's, or shared storage's
    ``reports/platform_smoke/`` where tasks share no disk (then the object's URI is returned)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    text = json.dumps({"run_id": run_id, "at": datetime.now(UTC).isoformat(), "checks": results}, indent=2)
    if settings.storage_url:
        from loopline.storage.files import SharedFiles

        return SharedFiles.of(settings).write_bytes(
            text.encode(), "reports", "platform_smoke", f"{safe}.json"
        )
    directory = settings.state.reports / "platform_smoke"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{safe}.json"
    path.write_text(text)
    return path


ALL_CHECKS = {
    "state_dir": check_state_dir,
    "mlflow": check_mlflow,
    "feast_registry": check_feast,
    "great_expectations": check_great_expectations,
}
