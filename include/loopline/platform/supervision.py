"""A service under ``loopline.platform.processes``' Supervisor: its command line and its state record.

The prediction service runs supervised (restarted when it dies) in both profiles, and ``loopline status``
reads the record. Apart from ``platform.stack`` so the distributed profile (``platform.distributed``), which
the stack dispatches to, builds the same command line without importing the stack (no import cycle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loopline.platform.airflow_env import venv_bin

if TYPE_CHECKING:
    from pathlib import Path

    from loopline.config import Settings


def supervisor_state_path(settings: Settings, name: str) -> Path:
    return settings.state.run_dir / f"{name}.supervisor.json"


def supervised(settings: Settings, name: str, argv: list[str]) -> list[str]:
    """``argv`` under ``loopline.platform.processes``' Supervisor, its record at ``supervisor_state_path``."""
    return [
        str(venv_bin() / "python"),
        "-m",
        "loopline.platform.processes",
        "--name",
        name,
        "--state",
        str(supervisor_state_path(settings, name)),
        "--",
        *argv,
    ]
