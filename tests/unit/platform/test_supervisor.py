"""Issue 19, item 6: the local stack restarts a crashed prediction service. The real Supervisor
(``python -m loopline.platform.processes``) over a tiny dummy command: killed by PID, it comes back and the
restart count goes up; stopped the way ``loopline down`` stops the stack, it stays down; ``loopline status``
reports restarts and the last exit code.

Only processes these tests start are signalled (tracked psutil handles, which carry the start time)."""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from loopline.config import Settings
from loopline.platform import stack
from loopline.platform.processes import (
    ProcessRegistry,
    SupervisorState,
    spawn,
    stop_trees,
    tail,
    wait_until,
)
from loopline.platform.supervision import supervisor_state_path

SLEEPER = [sys.executable, "-c", "import sys, time; print('child up', flush=True); time.sleep(600)"]


@pytest.fixture
def started():
    """psutil handles of everything a test starts; whatever still lives is killed at teardown."""
    procs: list[psutil.Process] = []
    yield procs
    alive = []
    for proc in procs:
        try:
            if proc.is_running():
                alive.extend([proc, *proc.children(recursive=True)])
        except psutil.Error:
            pass
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def _supervise(
    tmp_path: Path,
    started: list,
    command: list[str],
    *extra: str,
    name: str = "dummy",
    state: Path | None = None,
    registry: ProcessRegistry | None = None,
):
    state = state or tmp_path / f"{name}.supervisor.json"
    registry = registry or ProcessRegistry(tmp_path / "stack.json")
    argv = [
        sys.executable,
        "-m",
        "loopline.platform.processes",
        "--name",
        name,
        "--state",
        str(state),
        "--backoff-s",
        "0.2",
        *extra,
        "--",
        *command,
        f"token-{uuid.uuid4().hex}",
    ]
    record = spawn(name, argv, dict(os.environ), tmp_path / f"{name}.log", registry, cwd=tmp_path)
    started.append(psutil.Process(record.pid))
    return record, state


def _state(path: Path) -> SupervisorState:
    state = SupervisorState.read(path)
    assert state is not None, f"no supervisor state at {path}"
    return state


def _child_running(path: Path, started: list, not_pid: int | None = None) -> SupervisorState:
    def up() -> bool:
        state = SupervisorState.read(path)
        return bool(state and state.state == "running" and state.child_pid and state.child_pid != not_pid)

    assert wait_until(up, timeout=20, interval=0.05), (
        f"the child did not (re)start: {SupervisorState.read(path)}"
    )
    state = _state(path)
    started.append(psutil.Process(state.child_pid))
    return state


def test_a_killed_child_comes_back_and_the_count_goes_up(tmp_path, started) -> None:
    record, path = _supervise(tmp_path, started, SLEEPER)
    first = _child_running(path, started)
    assert first.restarts == 0 and first.last_exit_code is None and first.supervisor_pid == record.pid
    assert psutil.Process(first.child_pid).ppid() == record.pid
    os.kill(first.child_pid, signal.SIGKILL)  # a crash, the OOM killer
    second = _child_running(path, started, not_pid=first.child_pid)
    assert (second.restarts, second.last_exit_code) == (1, -signal.SIGKILL)
    os.kill(second.child_pid, signal.SIGTERM)  # someone stopped the service alone: it comes back too
    third = _child_running(path, started, not_pid=second.child_pid)
    assert (third.restarts, third.last_exit_code) == (2, -signal.SIGTERM)
    assert "restart #2" in tail(record.log)
    assert (
        not psutil.pid_exists(first.child_pid)
        or psutil.Process(first.child_pid).status() == psutil.STATUS_ZOMBIE
    )

    # `loopline down`: SIGTERM to the whole tree at once. Nothing comes back.
    assert stop_trees([record], timeout=10) == [record]
    assert not record.is_running()
    assert not psutil.pid_exists(third.child_pid)
    final = _state(path)
    assert (final.state, final.restarts, final.child_pid) == ("stopped", 2, None)


def test_stopping_only_the_supervisor_stops_the_child_too(tmp_path, started) -> None:
    record, path = _supervise(tmp_path, started, SLEEPER)
    child = _child_running(path, started)
    os.kill(record.pid, signal.SIGTERM)
    assert wait_until(lambda: not record.is_running(), timeout=15)
    assert wait_until(
        lambda: (
            not psutil.pid_exists(child.child_pid)
            or psutil.Process(child.child_pid).status() == psutil.STATUS_ZOMBIE
        ),
        timeout=15,
    )
    assert _state(path).state == "stopped" and _state(path).restarts == 0


def test_a_command_that_keeps_failing_at_once_is_given_up(tmp_path, started) -> None:
    failing = [sys.executable, "-c", "import sys; print('bad config', flush=True); sys.exit(3)"]
    record, path = _supervise(
        tmp_path, started, failing, "--max-quick-failures", "3", "--healthy-after-s", "30"
    )
    assert wait_until(lambda: not record.is_running(), timeout=30)
    state = _state(path)
    assert (state.state, state.restarts, state.last_exit_code) == ("gave_up", 2, 3)
    assert "giving up" in tail(record.log) and tail(record.log).count("bad config") == 3


def test_the_stack_supervises_serving_and_status_reports_restarts(
    tmp_path, started, state_dir, monkeypatch, capsys
) -> None:
    from loopline.cli.main import main

    monkeypatch.setenv("LOOPLINE_AIRFLOW_PORT", "9")  # nothing listens: the health probe fails fast
    settings = Settings()
    spec = next(s for s in stack.service_specs(settings) if s.name == "serving")
    assert spec.argv[1:3] == ["-m", "loopline.platform.processes"]
    assert spec.argv[spec.argv.index("--") + 1 :][1:3] == ["-m", "loopline.serving"]
    # The stack's record and state file, with the dummy in place of the real (slow to start) service.
    record, path = _supervise(
        tmp_path,
        started,
        SLEEPER,
        name="serving",
        state=supervisor_state_path(settings, "serving"),
        registry=stack.registry(settings),
    )
    first = _child_running(path, started)
    os.kill(first.child_pid, signal.SIGKILL)
    _child_running(path, started, not_pid=first.child_pid)

    assert main(["status", "--json"]) == 0
    serving = json.loads(capsys.readouterr().out)["services"]["serving"]
    assert serving["running"] is True and serving["pid"] == record.pid and serving["state"] == "running"
    assert (serving["restarts"], serving["last_exit_code"]) == (1, -9)
    assert main(["status"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("serving"))
    assert "restarts 1" in line and "last exit -9" in line, line

    stack.down(settings, log=lambda *_: None)
    assert not record.is_running() and stack.status(settings).running == {}


def test_up_treats_a_serving_exit_during_start_up_as_a_failed_start(state_dir) -> None:
    settings = Settings()
    assert stack._crashed_while_starting(settings) is None
    SupervisorState(name="serving", supervisor_pid=1, state="running", child_pid=2).write(
        supervisor_state_path(settings, "serving")
    )
    assert stack._crashed_while_starting(settings) is None
    SupervisorState(name="serving", supervisor_pid=1, state="backoff", last_exit_code=2).write(
        supervisor_state_path(settings, "serving")
    )
    name, state = stack._crashed_while_starting(settings)
    assert (name, state.last_exit_code) == ("serving", 2)
