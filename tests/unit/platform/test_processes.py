"""spawn / ProcessRegistry / stop_trees against real process trees.

Every process a test starts is tracked by the ``reaper`` fixture, which kills whatever is still alive at
teardown (also when the test failed). Only processes the test started are ever signalled: the reaper
keeps psutil handles (which carry the start time, so a reused PID is not mistaken for ours) and also
finds stragglers by a token unique to the test in their command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from loopline.platform.processes import (
    ProcessRecord,
    ProcessRegistry,
    spawn,
    stop_trees,
    tail,
    wait_until,
)


class Reaper:
    def __init__(self) -> None:
        self.token = f"loopline-test-{uuid.uuid4().hex}"
        self.procs: list[psutil.Process] = []

    def track(self, *procs: psutil.Process) -> None:
        self.procs.extend(procs)

    def track_tree(self, pid: int, descendants: int, timeout: float = 10.0) -> list[psutil.Process]:
        """Wait until ``pid`` has ``descendants`` descendants; track and return the whole tree."""
        leader = psutil.Process(pid)
        self.track(leader)

        def grown() -> bool:
            children = leader.children(recursive=True)
            self.track(*children)
            return len(children) >= descendants

        assert wait_until(grown, timeout=timeout, interval=0.05), "process tree did not start in time"
        tree = [leader, *leader.children(recursive=True)]
        self.track(*tree)
        return tree

    def _ours(self) -> list[psutil.Process]:
        found = list(self.procs)
        for proc in psutil.process_iter(["cmdline"]):
            if self.token in (proc.info["cmdline"] or []):
                found.append(proc)
        for proc in list(found):
            try:
                if proc.is_running():
                    found.extend(proc.children(recursive=True))
            except psutil.Error:
                pass
        return found

    def cleanup(self) -> None:
        alive = []
        for proc in self._ours():
            try:
                # is_running() compares the start time too: never signal a stranger with a reused PID.
                if proc.is_running() and proc.pid != os.getpid():
                    proc.kill()
                    alive.append(proc)
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    r = Reaper()
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture
def registry(tmp_path: Path) -> ProcessRegistry:
    return ProcessRegistry(tmp_path / "run" / "stack.json")


def gone(proc: psutil.Process) -> bool:
    """Dead: no such process any more, or a zombie waiting for its parent (PID 1 may not reap here)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def python(code: str, reaper: Reaper) -> list[str]:
    """argv for a Python one-off, tagged with the test's token (sys.argv[1])."""
    return [sys.executable, "-c", textwrap.dedent(code), reaper.token]


def start(name: str, argv: list[str], registry: ProcessRegistry, tmp_path: Path) -> ProcessRecord:
    return spawn(name, argv, dict(os.environ), tmp_path / "logs" / f"{name}.log", registry, cwd=tmp_path)


# A leader Python that starts a child Python, which itself starts two grandchildren (no setsid
# anywhere): four processes in one process group.
THREE_LEVELS = """
import subprocess, sys, time
child = '''
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", sys.argv[1]])
        for _ in range(2)]
time.sleep(300)
'''
subprocess.Popen([sys.executable, "-c", child, sys.argv[1]])
time.sleep(300)
"""


# --- ProcessRegistry ------------------------------------------------------------------------------


def _record(name: str, pid: int = 1234, create_time: float = 1.0) -> ProcessRecord:
    return ProcessRecord(name=name, pid=pid, create_time=create_time, argv=["x", name], log=f"/l/{name}")


def test_registry_is_empty_before_anything_is_added(registry: ProcessRegistry) -> None:
    assert registry.load() == []
    registry.path.parent.mkdir(parents=True)
    registry.path.write_text("")
    assert registry.load() == []


def test_registry_round_trips_and_replaces_by_name(registry: ProcessRegistry) -> None:
    registry.add(_record("a", pid=1))
    registry.add(_record("b", pid=2))
    registry.add(_record("a", pid=3))

    loaded = registry.load()
    assert sorted((r.name, r.pid) for r in loaded) == [("a", 3), ("b", 2)]
    assert _record("b", pid=2) in loaded
    # Written atomically: no temporary file stays behind, and the file is plain JSON.
    assert [p.name for p in registry.path.parent.iterdir()] == ["stack.json"]
    assert {item["name"] for item in json.loads(registry.path.read_text())} == {"a", "b"}


def test_registry_clear_removes_the_file(registry: ProcessRegistry) -> None:
    registry.add(_record("a"))
    registry.clear()
    assert not registry.path.exists()
    assert registry.load() == []
    registry.clear()  # clearing twice is fine


# --- spawn ----------------------------------------------------------------------------------------


def test_spawn_records_the_process_at_once_in_its_own_session(
    reaper: Reaper, registry: ProcessRegistry, tmp_path: Path
) -> None:
    argv = python("import time; time.sleep(300)", reaper)
    record = start("svc", argv, registry, tmp_path)
    reaper.track(psutil.Process(record.pid))

    # The record is on disk before spawn returns, with the identity of the live process.
    assert registry.load() == [record]
    assert record.name == "svc"
    assert record.argv == argv
    assert record.log == str(tmp_path / "logs" / "svc.log")
    assert Path(record.log).exists()
    proc = psutil.Process(record.pid)
    assert abs(proc.create_time() - record.create_time) < 0.01
    assert record.is_running()
    assert record.process() is not None and record.process().pid == record.pid
    # Own session and process group: a Ctrl-C aimed at the CLI does not reach the service.
    assert os.getpgid(record.pid) == record.pid
    assert os.getsid(record.pid) == record.pid
    assert os.getsid(record.pid) != os.getsid(0)


def test_spawn_uses_env_cwd_and_appends_output_to_the_log(
    reaper: Reaper, registry: ProcessRegistry, tmp_path: Path
) -> None:
    code = (
        "import os, sys; print(os.getcwd(), os.environ['LOOPLINE_TEST_MARK']); print('err', file=sys.stderr)"
    )
    env = {**os.environ, "LOOPLINE_TEST_MARK": "mark-42"}
    log = tmp_path / "deep" / "dir" / "svc.log"
    log.parent.mkdir(parents=True)
    log.write_text("earlier line\n")

    record = spawn("svc", python(code, reaper), env, log, registry, cwd=tmp_path)
    proc = psutil.Process(record.pid)
    reaper.track(proc)
    proc.wait(timeout=30)

    lines = log.read_text().splitlines()
    assert lines[0] == "earlier line"
    assert f"{tmp_path} mark-42" in lines
    assert "err" in lines
    assert not record.is_running()


# --- stop_trees -----------------------------------------------------------------------------------


def test_stop_trees_stops_a_bash_tree(reaper: Reaper, registry: ProcessRegistry, tmp_path: Path) -> None:
    record = start("bash", ["bash", "-c", "sleep 300 & sleep 300 & wait", reaper.token], registry, tmp_path)
    tree = reaper.track_tree(record.pid, descendants=2)
    assert len(tree) == 3

    stopped = stop_trees(registry.load(), timeout=5)

    assert stopped == [record]
    assert [p.pid for p in tree if not gone(p)] == []
    assert not record.is_running()


def test_stop_trees_stops_children_and_grandchildren(
    reaper: Reaper, registry: ProcessRegistry, tmp_path: Path
) -> None:
    record = start("tree", python(THREE_LEVELS, reaper), registry, tmp_path)
    tree = reaper.track_tree(record.pid, descendants=3)
    assert len(tree) == 4
    assert all(os.getpgid(p.pid) == record.pid for p in tree)

    stopped = stop_trees(registry.load(), timeout=5)

    assert stopped == [record]
    assert [p.pid for p in tree if not gone(p)] == []


def test_stop_trees_stops_several_trees_at_once(
    reaper: Reaper, registry: ProcessRegistry, tmp_path: Path
) -> None:
    first = start("one", python(THREE_LEVELS, reaper), registry, tmp_path)
    second = start("two", ["bash", "-c", "sleep 300 & wait", reaper.token], registry, tmp_path)
    trees = reaper.track_tree(first.pid, descendants=3) + reaper.track_tree(second.pid, descendants=1)

    stopped = stop_trees(registry.load(), timeout=5)

    assert sorted(r.name for r in stopped) == ["one", "two"]
    assert [p.pid for p in trees if not gone(p)] == []


IGNORES_SIGTERM = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
# The child inherits SIG_IGN too: the whole tree ignores SIGTERM.
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", sys.argv[1]])
open(sys.argv[2], "w").write("ready")
time.sleep(300)
"""


def test_stop_trees_kills_a_tree_that_ignores_sigterm_after_the_timeout(
    reaper: Reaper, registry: ProcessRegistry, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    record = start("stubborn", [*python(IGNORES_SIGTERM, reaper), str(ready)], registry, tmp_path)
    tree = reaper.track_tree(record.pid, descendants=1)
    assert wait_until(ready.exists, timeout=10, interval=0.05)

    started = time.monotonic()
    stopped = stop_trees(registry.load(), timeout=1)
    elapsed = time.monotonic() - started

    assert stopped == [record]
    assert [p.pid for p in tree if not gone(p)] == []
    # It waited the grace period for SIGTERM (which was ignored), then killed.
    assert 1.0 <= elapsed < 6.0


LATE_CHILD = """
import signal, subprocess, sys, time

def on_term(signum, frame):
    # A worker forked after `stop_trees` listed the tree, in a session of its own (so it is outside the
    # service's process group too); the leader then carries on as if nothing happened.
    late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", sys.argv[1]],
                            start_new_session=True)
    open(sys.argv[2], "w").write(str(late.pid))

signal.signal(signal.SIGTERM, on_term)
open(sys.argv[3], "w").write("ready")
while True:
    time.sleep(0.05)
"""


def test_stop_trees_kills_children_forked_after_the_tree_was_listed(
    reaper: Reaper, registry: ProcessRegistry, tmp_path: Path
) -> None:
    late_pid_file, ready = tmp_path / "late.pid", tmp_path / "ready"
    argv = [*python(LATE_CHILD, reaper), str(late_pid_file), str(ready)]
    record = start("forker", argv, registry, tmp_path)
    leader = psutil.Process(record.pid)
    reaper.track(leader)
    assert wait_until(ready.exists, timeout=10, interval=0.05)

    stop_trees(registry.load(), timeout=1)

    assert late_pid_file.exists(), "the leader never saw SIGTERM"
    try:
        late = psutil.Process(int(late_pid_file.read_text()))
    except psutil.NoSuchProcess:
        pass  # killed and already reaped
    else:
        reaper.track(late)
        assert gone(late)
    assert gone(leader)
    assert not record.is_running()


def test_a_record_with_a_different_create_time_is_not_running_and_not_signalled(
    reaper: Reaper, tmp_path: Path
) -> None:
    """PID reuse: the recorded PID now belongs to another process (one this test started)."""
    stranger = subprocess.Popen(
        python("import time; time.sleep(300)", reaper), start_new_session=True, stdin=subprocess.DEVNULL
    )
    try:
        proc = psutil.Process(stranger.pid)
        reaper.track(proc)
        record = ProcessRecord(
            name="old", pid=stranger.pid, create_time=proc.create_time() - 3600, argv=["old"], log="x"
        )

        assert record.process() is None
        assert not record.is_running()
        assert stop_trees([record], timeout=1) == []

        time.sleep(0.2)  # a signal, had one been sent, has been delivered by now
        assert stranger.poll() is None
        assert proc.status() != psutil.STATUS_ZOMBIE
    finally:
        stranger.kill()
        stranger.wait(timeout=10)


def test_records_of_ended_processes_are_not_running(reaper: Reaper, tmp_path: Path) -> None:
    ended = subprocess.Popen(python("pass", reaper))
    proc = psutil.Process(ended.pid)
    reaper.track(proc)
    record = ProcessRecord("ended", ended.pid, proc.create_time(), ["x"], "x")
    try:
        # Exited but not yet reaped by its parent (us): a zombie is not running.
        assert wait_until(lambda: proc.status() == psutil.STATUS_ZOMBIE, timeout=10, interval=0.05)
        assert not record.is_running()
    finally:
        ended.wait(timeout=10)
    # Reaped: the PID is gone entirely.
    assert not record.is_running()
    assert stop_trees([record], timeout=1) == []


def test_stop_trees_with_nothing_to_stop_returns_quickly() -> None:
    started = time.monotonic()
    assert stop_trees([], timeout=10) == []
    assert time.monotonic() - started < 1


def test_stop_trees_stops_an_orphaned_group_whose_leader_died(
    reaper: Reaper, registry: ProcessRegistry, tmp_path: Path
) -> None:
    record = start(
        "orphans", ["bash", "-c", "sleep 300 & sleep 300 & wait", reaper.token], registry, tmp_path
    )
    leader, *workers = reaper.track_tree(record.pid, descendants=2)
    # The service's main process crashes; its workers live on in its process group.
    leader.kill()
    leader.wait(timeout=10)
    assert all(not gone(w) and os.getpgid(w.pid) == record.pid for w in workers)

    stop_trees(registry.load(), timeout=1)

    assert [w.pid for w in workers if not gone(w)] == []


# --- helpers --------------------------------------------------------------------------------------


def test_wait_until_returns_true_as_soon_as_the_predicate_holds() -> None:
    calls = []

    def third_time() -> bool:
        calls.append(1)
        return len(calls) >= 3

    assert wait_until(third_time, timeout=5, interval=0.01)
    assert len(calls) == 3


def test_wait_until_returns_false_after_the_timeout() -> None:
    started = time.monotonic()
    assert not wait_until(lambda: False, timeout=0.2, interval=0.05)
    assert 0.2 <= time.monotonic() - started < 2


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert tail(log, lines=3) == "line 47\nline 48\nline 49"
    assert tail(str(log)).splitlines()[0] == "line 30"
    assert tail(tmp_path / "missing.log") == ""
