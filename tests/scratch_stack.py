"""A throwaway copy of the project for integration tests and benchmarks (``bench/`` puts tests/ on sys.path).

``dags/`` is copied (so a caller can add or remove DAG files without touching the checkout); the
other folders are linked. With free ports (``free_port``), a scratch stack never disturbs a running one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil

from loopline.config import Settings
from loopline.platform.processes import free_port

LINKED = ("plugins", "feature_repo", "include")


def scratch_project(root: Path, source: Path | None = None) -> Path:
    """Create ``root/project`` from the checkout at ``source`` (default: this one)."""
    source = source or Settings().project_dir
    project = root / "project"
    project.mkdir(parents=True)
    shutil.copytree(source / "dags", project / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    for name in LINKED:
        (project / name).symlink_to(source / name)
    return project


def scratch_env(root: Path, project: Path) -> dict[str, str]:
    """``LOOPLINE_*`` variables for a stack of its own: the scratch project, a state dir, free ports."""
    return {
        "LOOPLINE_PROJECT_DIR": str(project),
        "LOOPLINE_STATE_DIR": str(root / "state"),
        "LOOPLINE_AIRFLOW_PORT": str(free_port()),
        "LOOPLINE_MLFLOW_PORT": str(free_port()),
        "LOOPLINE_SERVING_PORT": str(free_port()),
    }


def processes_using(state_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line or environment points into ``state_dir`` (leak checks)."""
    needle = str(state_dir)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if (
                needle in " ".join(proc.info["cmdline"] or [])
                or proc.environ().get("LOOPLINE_STATE_DIR") == needle
            ):
                found.append(proc)
        except psutil.Error:
            continue
    return found
