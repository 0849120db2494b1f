"""Test-wide isolation: nothing a test does touches the developer's .loopline/ or ~/airflow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Set before any test module imports Airflow or Loopline (both read the environment once).
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="loopline-tests-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_SESSION_DIR / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "LOOPLINE_STATE_DIR": str(_SESSION_DIR / "state"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "SCARF_ANALYTICS": "false",
        "FEAST_USAGE": "False",
        "GX_ANALYTICS_ENABLED": "false",
    }
)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LOOPLINE_STATE_DIR for one test."""
    directory = tmp_path / "state"
    monkeypatch.setenv("LOOPLINE_STATE_DIR", str(directory))
    return directory
