"""Start and stop whole process trees, remembered by PID in a file so ``down`` works after a crash.

Each service runs in its own session (process group). Its PID and start time are written to the
record file the moment it is spawned, so a CLI that dies half-way still leaves enough behind for
``loopline down`` to stop exactly what was started — and never a stranger that reused a PID.

``Supervisor`` (``python -m loopline.platform.processes --state FILE -- argv...``) keeps one command
running: it restarts it with backoff when it dies, unless the supervisor itself is being stopped (``loopline
down`` signals the whole tree), and records restarts and the last exit code in ``FILE`` for ``loopline status``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    create_time: float
    argv: list[str]
    log: str
    # A server that shuts its own children down (Postgres: SIGINT is its "fast" shutdown) gets this signal
    # alone, to its leader; None: SIGTERM to every process of the tree at once.
    stop_signal: str | None = None

    def process(self) -> psutil.Process | None:
        """The live process, or None if it ended (or its PID now belongs to someone else)."""
        try:
            proc = psutil.Process(self.pid)
            # create_time identifies the process; a reused PID has a different one.
            if abs(proc.create_time() - self.create_time) > 0.5:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    def is_running(self) -> bool:
        return self.process() is not None


class ProcessRegistry:
    """The JSON file that lists the processes a stack started."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[ProcessRecord]:
        if not self.path.exists():
            return []
        data = json.loads(self.path.read_text() or "[]")
        return [ProcessRecord(**item) for item in data]

    def _save(self, records: list[ProcessRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in records], indent=2))
        os.replace(tmp, self.path)

    def add(self, record: ProcessRecord) -> None:
        self._save([r for r in self.load() if r.name != record.name] + [record])

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def spawn(
    name: str,
    argv: list[str],
    env: dict[str, str],
    log_path: Path,
    registry: ProcessRegistry,
    cwd: Path,
    *,
    user: str | None = None,
    stop_signal: str | None = None,
) -> ProcessRecord:
    """Start ``argv`` in a new session with output to ``log_path`` and record it at once.

    ``user``: run as that (unprivileged) account instead, without this process's supplementary groups;
    the recorded PID is still the command's own (no ``su``/``runuser`` parent in between)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    as_user: dict[str, Any] = {}
    if user is not None:
        import pwd

        account = pwd.getpwnam(user)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C on the CLI does not reach it
            **as_user,
        )
    record = ProcessRecord(
        name=name,
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        argv=argv,
        log=str(log_path),
        stop_signal=stop_signal,
    )
    registry.add(record)
    return record


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def _group_members(record: ProcessRecord) -> list[psutil.Process]:
    """Live processes still in the record's process group that were born after it.

    A service runs in its own session, so its PID is its process-group id; Linux does not reuse a PID
    that is still a group id. This finds workers orphaned by a leader that crashed.
    """
    try:
        holder = psutil.Process(record.pid)
        if holder.status() != psutil.STATUS_ZOMBIE and abs(holder.create_time() - record.create_time) > 0.5:
            return []  # the PID now belongs to another process, so our group cannot exist any more
    except psutil.Error:
        pass
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if (
                os.getpgid(proc.pid) == record.pid
                and proc.create_time() >= record.create_time - 0.5
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                members.append(proc)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return members


def stop_trees(records: list[ProcessRecord], timeout: float = 10.0) -> list[ProcessRecord]:
    """SIGTERM every recorded process with its whole tree at once; SIGKILL what outlives ``timeout``.

    Signalling all trees together lets them shut down in parallel. A record whose leader died but
    whose workers live on in its process group counts as running: the orphans are stopped too.
    Returns the records that had something running (and so were stopped).
    """
    stopped: list[ProcessRecord] = []
    procs: list[psutil.Process] = []
    for record in records:
        leader = record.process()
        tree = _tree(leader) if leader is not None else []
        seen = {p.pid for p in tree}
        tree += [p for p in _group_members(record) if p.pid not in seen]
        if tree:
            stopped.append(record)
            procs.extend(tree)
            # The leader stops its own children (and must see them go first); the rest get SIGTERM below.
            targets = [leader] if record.stop_signal and leader is not None else tree
            signum = (
                signal.Signals[record.stop_signal]
                if record.stop_signal and leader is not None
                else signal.SIGTERM
            )
            for proc in targets:
                try:
                    proc.send_signal(signum)
                except psutil.Error:
                    pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    # Workers forked after we listed the trees, or that ignore SIGTERM, go the hard way.
    late = [child for p in procs for child in _safe_children(p)]
    late += [p for record in stopped for p in _group_members(record)]
    for proc in [*alive, *late]:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs([*alive, *late], timeout=5)
    return stopped


def _safe_children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def tail(path: str | Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# --- supervision -----------------------------------------------------------------------------------------


@dataclass
class SupervisorState:
    """What ``FILE`` says about a supervised command (``loopline status`` reads it)."""

    name: str
    supervisor_pid: int
    state: str = "starting"  # running | backoff | stopped | gave_up
    child_pid: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None  # negative: killed by that signal (-9: SIGKILL)
    last_exit_at: str | None = None
    started_at: str | None = None  # of the current child
    argv: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> SupervisorState | None:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Supervisor:
    """Run ``argv`` and restart it whenever it exits, until told to stop (SIGTERM/SIGINT, passed on to the
    command). Backoff: ``backoff_s``, doubling per quick failure up to ``max_backoff_s``; a run that lasted
    ``healthy_after_s`` resets it. ``max_quick_failures`` quick failures in a row: give up with the
    command's exit code (a command that cannot start at all, e.g. a bad config, is not retried forever)."""

    def __init__(
        self,
        argv: list[str],
        state_path: Path,
        *,
        name: str = "service",
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        healthy_after_s: float = 60.0,
        max_quick_failures: int = 10,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.argv = argv
        self.state_path = Path(state_path)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.healthy_after_s = healthy_after_s
        self.max_quick_failures = max_quick_failures
        self.state = SupervisorState(name=name, supervisor_pid=os.getpid(), argv=list(argv))
        self._log = log or (
            lambda text: print(f"{_now()} supervisor[{name}]: {text}", file=sys.stderr, flush=True)
        )
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None

    def _stop(self, signum: int, _frame: object) -> None:
        self._stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            try:
                child.send_signal(signal.SIGTERM)  # uvicorn: a second SIGTERM changes nothing
            except ProcessLookupError:
                pass

    def _save(self, **changes: object) -> None:
        for key, value in changes.items():
            setattr(self.state, key, value)
        self.state.write(self.state_path)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        quick_failures = 0
        while not self._stopping.is_set():
            began = time.monotonic()
            self._child = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
            if self._stopping.is_set():  # the stop came while it was being started: it ends with us
                self._child.terminate()
            self._save(state="running", child_pid=self._child.pid, started_at=_now())
            code = self._child.wait()
            lasted = time.monotonic() - began
            self._save(last_exit_code=code, last_exit_at=_now(), child_pid=None)
            if self._stopping.is_set():
                break
            quick_failures = 0 if lasted >= self.healthy_after_s else quick_failures + 1
            if quick_failures >= self.max_quick_failures:
                self._save(state="gave_up")
                self._log(
                    f"exited with {code} after {lasted:.1f} s, {quick_failures} quick failures in a row: "
                    "giving up"
                )
                return code if code > 0 else 1
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** max(0, quick_failures - 1))
            self._save(state="backoff")
            self._log(
                f"exited with {code} after {lasted:.1f} s; restart #{self.state.restarts + 1} in {delay:g} s"
            )
            # Stopped meanwhile (``loopline down`` signals the whole tree: the command may die first): no restart.
            if self._stopping.wait(delay):
                break
            self.state.restarts += 1
        self._save(state="stopped")
        return 0


def supervise_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loopline.platform.processes",
        description="Run a command and restart it with backoff when it dies.",
    )
    parser.add_argument("--state", type=Path, required=True, help="JSON file: restarts, last exit code, PIDs")
    parser.add_argument("--name", default="service")
    parser.add_argument("--backoff-s", type=float, default=1.0)
    parser.add_argument("--max-backoff-s", type=float, default=30.0)
    parser.add_argument("--healthy-after-s", type=float, default=60.0)
    parser.add_argument("--max-quick-failures", type=int, default=10)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to supervise (put it after --)")
    return Supervisor(
        command,
        args.state,
        name=args.name,
        backoff_s=args.backoff_s,
        max_backoff_s=args.max_backoff_s,
        healthy_after_s=args.healthy_after_s,
        max_quick_failures=args.max_quick_failures,
    ).run()


if __name__ == "__main__":
    raise SystemExit(supervise_main())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it), for a server started next."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
