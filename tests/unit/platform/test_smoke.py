"""Platform smoke checks against the real libraries (GX, Feast, MLflow without a server)."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from loopline.config import Settings
from loopline.platform.smoke import (
    ALL_CHECKS,
    CheckResult,
    SmokeCheckFailed,
    check_feast,
    check_great_expectations,
    check_mlflow,
    check_state_dir,
    write_report,
)


@pytest.fixture
def settings(state_dir: Path, clean_loopline_env: None) -> Settings:
    return Settings()


def _probes(settings: Settings) -> list[Path]:
    return [p for d in settings.state.directories() if d.is_dir() for p in d.glob(".smoke-*")]


# --- state dir ------------------------------------------------------------------------------------


def test_state_dir_check_passes_on_a_fresh_state_dir(settings: Settings, state_dir: Path) -> None:
    assert not state_dir.exists()

    result = check_state_dir(settings)

    assert isinstance(result, CheckResult)
    assert result.name == "state_dir"
    assert ALL_CHECKS[result.name] is check_state_dir
    assert result.seconds >= 0
    assert result.details == {
        "root": str(settings.state.root),
        "directories": len(settings.state.directories()),
    }
    assert all(d.is_dir() for d in settings.state.directories())
    assert _probes(settings) == []  # the probe files are cleaned up


def test_state_dir_check_names_a_zone_that_is_not_writable(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests run as root, where chmod does not stop writes: refuse writes into one zone instead."""
    zone = settings.state.reports
    real_write_text = Path.write_text

    def write_text(self: Path, *args, **kwargs):
        if self.parent == zone:
            raise PermissionError(13, "Permission denied", str(self))
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)

    with pytest.raises(SmokeCheckFailed) as caught:
        check_state_dir(settings)
    assert f"state directory {zone} is not a writable directory" in str(caught.value)
    assert isinstance(caught.value.__cause__, PermissionError)
    assert _probes(settings) == []


def test_state_dir_check_names_a_zone_that_is_a_file(settings: Settings) -> None:
    settings.state.ensure()
    zone = settings.state.reports
    zone.rmdir()
    zone.write_text("not a directory")

    with pytest.raises(SmokeCheckFailed) as caught:
        check_state_dir(settings)
    assert str(zone) in str(caught.value)


# --- Great Expectations ---------------------------------------------------------------------------


def test_great_expectations_check_passes(settings: Settings, tmp_path: Path, monkeypatch) -> None:
    import great_expectations as gx

    monkeypatch.chdir(tmp_path)  # GX must not leave a project behind in the working directory
    result = check_great_expectations(settings)

    assert ALL_CHECKS[result.name] is check_great_expectations
    assert result.details == {"version": gx.__version__, "good_passed": True, "bad_failed": True}
    assert list(tmp_path.iterdir()) == []


# --- Feast ----------------------------------------------------------------------------------------


def test_feast_check_applies_the_repo_and_lists_the_entities(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ in feature_repo/
    cwd, path = Path.cwd(), list(sys.path)

    result = check_feast(settings)

    assert ALL_CHECKS[result.name] is check_feast
    assert result.details["project"] == "loopline"
    assert result.details["entities"] == ["channel", "customer", "device", "merchant"]
    assert result.details["registry"] == str(settings.state.feast_registry)
    assert settings.state.feast_registry.is_file()
    # Parsing the repo happens inside it; the process's cwd and import path are restored.
    assert Path.cwd() == cwd
    assert sys.path == path


# --- MLflow ---------------------------------------------------------------------------------------


@pytest.fixture
def mlflow_globals(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """check_mlflow sets MLflow's process-wide tracking URI and experiment: put them back afterwards."""
    import mlflow
    import mlflow.tracking._tracking_service.utils as tracking_utils
    import mlflow.tracking.fluent as fluent

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to the working directory
    yield
    assert mlflow.active_run() is None


def test_mlflow_check_logs_and_reads_back_a_run(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_globals: None
) -> None:
    from loopline.platform.mlflow_util import mlflow_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", uri)
    settings = Settings()

    result = check_mlflow(settings)

    assert ALL_CHECKS[result.name] is check_mlflow
    assert result.details["tracking_uri"] == uri
    assert result.details["experiment"] == "loopline-platform-smoke"
    stored = mlflow_client(uri).get_run(result.details["run_id"])
    assert stored.info.status == "FINISHED"
    assert stored.data.metrics == {"smoke_value": 1.0}
    assert len(stored.data.params["probe"]) == 32
    assert (tmp_path / "mlflow.db").is_file()


def test_mlflow_check_against_no_server_says_so(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, mlflow_globals: None
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        monkeypatch.setenv("LOOPLINE_MLFLOW_PORT", str(sock.getsockname()[1]))
        settings = Settings()
        with pytest.raises(SmokeCheckFailed) as caught:
            check_mlflow(settings)
    assert settings.mlflow_uri in str(caught.value)
    assert "loopline status" in str(caught.value)


# --- report ---------------------------------------------------------------------------------------


def test_write_report_keeps_the_results_as_json(settings: Settings) -> None:
    results = [
        CheckResult("state_dir", 0.01, {"directories": 12}).to_dict(),
        {"name": "mlflow", "seconds": 1},
    ]

    path = write_report(settings, results, "manual__2026-01-01T00:00:00+00:00")

    assert path.parent == settings.state.reports / "platform_smoke"
    assert path.name == "manual__2026-01-01T00_00_00_00_00.json"
    report = json.loads(path.read_text())
    assert report["run_id"] == "manual__2026-01-01T00:00:00+00:00"
    assert report["checks"] == results
    assert report["checks"][0] == {"name": "state_dir", "seconds": 0.01, "details": {"directories": 12}}
    assert datetime.fromisoformat(report["at"]).tzinfo is not None


def test_write_report_cannot_escape_the_reports_dir(settings: Settings) -> None:
    path = write_report(settings, [], "../../etc/passwd")
    assert path.parent == settings.state.reports / "platform_smoke"
    assert path.is_file()


def test_every_check_is_registered() -> None:
    """The DAG runs ALL_CHECKS by name; each check's result carries the name it is registered under
    (asserted in the tests above)."""
    assert set(ALL_CHECKS.values()) == {check_state_dir, check_mlflow, check_feast, check_great_expectations}
    assert len(ALL_CHECKS) == 4
