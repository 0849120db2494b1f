"""Start and stop whole process trees, remembered by PID in a file so ``down`` works after a crash.

Each service runs in its own session (process group). Its PID and start time are written to the
record file the moment it is spawned, so a CLI that dies half-way still leaves enough behind for
``loopline down`` to stop exactly what was started — and never a stranger that reused a PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    create_time: float
    argv: list[str]
    log: str

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
    name: str, argv: list[str], env: dict[str, str], log_path: Path, registry: ProcessRegistry, cwd: Path
) -> ProcessRecord:
    """Start ``argv`` in a new session with output to ``log_path`` and record it at once."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C on the CLI does not reach it
        )
    record = ProcessRecord(
        name=name,
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        argv=argv,
        log=str(log_path),
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
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
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


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
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
