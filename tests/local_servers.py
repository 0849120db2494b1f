"""Throwaway database servers for integration tests: Postgres (Debian's packages) on a free 127.0.0.1 port.

Started from the test process, stopped by PID; nothing system-wide is touched. Skips with the apt line
when the binaries are missing (`.ci/run` installs them).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopline.platform.processes import free_port

APT_LINE = "apt-get install -y -qq postgresql redis-server"
PG_USER = "loopline"
# Postgres refuses to run as root: under root the server runs as this existing unprivileged user.
SERVER_USER = "nobody"


def postgres_bin() -> Path | None:
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):  # newest major first
        if all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser") is None:
        pytest.skip("running as root and `runuser` is missing: Postgres will not start as root")
    return ["runuser", "-u", SERVER_USER, "--", *argv]


def wait_gone(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def postgres_server(root: Path | None = None) -> Iterator[int]:
    """A Postgres cluster in ``root`` (default: a temporary folder, removed afterwards) on a free port of
    127.0.0.1 (trust auth: a throwaway for tests), stopped by its postmaster PID afterwards."""
    if root is None:
        # Not pytest's tmp_path: its parents are private to this user, and the server may run as another.
        scratch = Path(tempfile.mkdtemp(prefix="loopline-pg-"))
        scratch.chmod(0o755)
        (scratch / "pg").mkdir()
        try:
            with postgres_server(scratch / "pg") as port:
                yield port
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip(f"Postgres server binaries not found under /usr/lib/postgresql/*/bin: {APT_LINE}")
    if os.geteuid() == 0:
        server = pwd.getpwnam(SERVER_USER)
        os.chown(root, server.pw_uid, server.pw_gid)
    data, port = root / "data", free_port()
    init = subprocess.run(
        as_server_user(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if init.returncode:
        pytest.skip(f"initdb failed here (exit {init.returncode}): {init.stderr.strip()[-300:]}")
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c jit=off"
    )
    started = subprocess.run(
        as_server_user(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "30",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, f"pg_ctl start failed: {started.stderr}\n{(root / 'log').read_text()}"
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # Postgres' "fast" shutdown
        wait_gone(pid)


@contextlib.contextmanager
def s3_server(bucket: str = "loopline") -> Iterator[str]:
    """moto's standalone S3 API server on a free 127.0.0.1 port, with ``bucket`` created; yields its
    endpoint URL. A real HTTP S3 API (signatures, multipart, listings), stopped by PID afterwards. Sets
    throwaway AWS credentials in the environment for the block (moto accepts any)."""
    import sys

    import boto3
    import httpx

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(prefix="loopline-moto-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{endpoint}/moto-api/", timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, f"moto server exited: {Path(log.name).read_text()[-500:]}"
            assert time.monotonic() < deadline, "moto server did not answer within 30 s"
            time.sleep(0.1)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        Path(log.name).unlink(missing_ok=True)
