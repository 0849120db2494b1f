"""Settings, StatePaths, get_settings and the telemetry switches."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from loopline.config import Settings, StatePaths, get_settings, telemetry_off_env

REPO_ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.usefixtures("clean_loopline_env")


def _file_paths(paths: StatePaths) -> list[Path]:
    return [
        paths.airflow_db,
        paths.mlflow_db,
        paths.feast_registry,
        paths.feast_online_store,
        paths.prediction_log,
    ]


# --- defaults -------------------------------------------------------------------------------------


def test_defaults_use_the_checkout_and_a_dot_loopline_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOPLINE_STATE_DIR")
    settings = Settings()

    assert settings.mode == "embedded"
    assert settings.project_dir == REPO_ROOT
    assert settings.state_dir is None
    assert settings.state.root == REPO_ROOT / ".loopline"
    assert settings.dags_dir == REPO_ROOT / "dags"
    assert settings.feature_repo_dir == REPO_ROOT / "feature_repo" / "fraud"
    assert settings.host == "127.0.0.1"
    assert settings.airflow_base_url == "http://127.0.0.1:8080"
    assert settings.mlflow_uri == "http://127.0.0.1:5000"
    assert settings.training_backend == "local"


def test_state_dir_env_moves_the_state_root(state_dir: Path) -> None:
    settings = Settings()
    assert settings.state_dir == state_dir.resolve()
    assert settings.state.root == state_dir.resolve()


def test_relative_state_dir_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOOPLINE_STATE_DIR", "rel/state")
    settings = Settings()
    assert settings.state.root.is_absolute()
    assert settings.state.root == (tmp_path / "rel" / "state").resolve()


def test_every_state_path_lies_under_the_root(state_dir: Path) -> None:
    paths = Settings().state
    root = paths.root
    everything = paths.directories() + _file_paths(paths) + [paths.feast_offline_dir, paths.run_dir]
    for path in everything:
        assert path.is_relative_to(root), path
        assert path != root
    # Each zone is its own directory.
    assert len(set(paths.directories())) == len(paths.directories())
    # Files live inside a directory that ensure() creates.
    for path in _file_paths(paths):
        assert path.parent in paths.directories(), path


def test_ensure_creates_every_directory(state_dir: Path) -> None:
    paths = Settings().state
    assert not state_dir.exists()

    returned = paths.ensure()

    assert returned == paths
    for directory in paths.directories():
        assert directory.is_dir(), directory
    # Idempotent: a second call on an existing tree is fine and changes nothing.
    marker = paths.reports / "keep.txt"
    marker.write_text("x")
    paths.ensure()
    assert marker.read_text() == "x"


# --- env overrides --------------------------------------------------------------------------------


def test_port_and_host_overrides_change_the_derived_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_AIRFLOW_PORT", "18080")
    monkeypatch.setenv("LOOPLINE_MLFLOW_PORT", "15000")
    monkeypatch.setenv("LOOPLINE_HOST", "127.0.0.2")
    settings = Settings()
    assert settings.airflow_port == 18080
    assert settings.mlflow_port == 15000
    assert settings.airflow_base_url == "http://127.0.0.2:18080"
    assert settings.mlflow_uri == "http://127.0.0.2:15000"


def test_explicit_urls_win_over_host_and_port_and_lose_trailing_slash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOOPLINE_AIRFLOW_PORT", "18080")
    monkeypatch.setenv("LOOPLINE_AIRFLOW_URL", "http://airflow.internal:8080/")
    monkeypatch.setenv("LOOPLINE_MLFLOW_TRACKING_URI", "http://mlflow.internal:5000/")
    settings = Settings()
    assert settings.airflow_base_url == "http://airflow.internal:8080"
    assert settings.mlflow_uri == "http://mlflow.internal:5000"


def test_mode_and_numbers_are_parsed_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_MODE", "compose")
    monkeypatch.setenv("LOOPLINE_AIRFLOW_PARALLELISM", "8")
    monkeypatch.setenv("LOOPLINE_STARTUP_TIMEOUT_S", "2.5")
    monkeypatch.setenv("LOOPLINE_TRAINING_BACKEND", "kubernetes")
    settings = Settings()
    assert settings.mode == "compose"
    assert settings.airflow_parallelism == 8
    assert settings.startup_timeout_s == 2.5
    assert settings.training_backend == "kubernetes"


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("LOOPLINE_AIRFLOW_PORT", "0", "airflow_port"),
        ("LOOPLINE_AIRFLOW_PORT", "70000", "airflow_port"),
        ("LOOPLINE_MLFLOW_PORT", "0", "mlflow_port"),
        ("LOOPLINE_MLFLOW_PORT", "70000", "mlflow_port"),
        ("LOOPLINE_AIRFLOW_PORT", "http", "airflow_port"),
        ("LOOPLINE_MODE", "bogus", "mode"),
        ("LOOPLINE_TRAINING_BACKEND", "gpu", "training_backend"),
        ("LOOPLINE_AIRFLOW_PARALLELISM", "0", "airflow_parallelism"),
        ("LOOPLINE_AIRFLOW_SCHEDULER_IDLE_SLEEP", "0", "airflow_scheduler_idle_sleep"),
        ("LOOPLINE_STARTUP_TIMEOUT_S", "-1", "startup_timeout_s"),
    ],
)
def test_invalid_values_raise_a_validation_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]
    assert field in str(caught.value)


def test_edge_ports_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_AIRFLOW_PORT", "1")
    monkeypatch.setenv("LOOPLINE_MLFLOW_PORT", "65535")
    settings = Settings()
    assert (settings.airflow_port, settings.mlflow_port) == (1, 65535)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.airflow_port = 9999  # type: ignore[misc]


# --- get_settings ---------------------------------------------------------------------------------


def test_get_settings_is_cached_while_the_environment_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = get_settings()
    assert get_settings() is first
    # Variables outside LOOPLINE_* do not matter to Loopline's settings.
    monkeypatch.setenv("SOME_OTHER_VARIABLE", "1")
    assert get_settings() is first


def test_get_settings_rereads_when_a_loopline_variable_changes(
    monkeypatch: pytest.MonkeyPatch, state_dir: Path
) -> None:
    assert get_settings().state.root == state_dir.resolve()

    monkeypatch.setenv("LOOPLINE_AIRFLOW_PORT", "18081")
    assert get_settings().airflow_port == 18081
    assert get_settings().airflow_base_url == "http://127.0.0.1:18081"

    monkeypatch.setenv("LOOPLINE_AIRFLOW_PORT", "18082")
    assert get_settings().airflow_port == 18082

    monkeypatch.delenv("LOOPLINE_AIRFLOW_PORT")
    assert get_settings().airflow_port == 8080

    other = state_dir.parent / "elsewhere"
    monkeypatch.setenv("LOOPLINE_STATE_DIR", str(other))
    assert get_settings().state.root == other.resolve()


# --- env() round trip -----------------------------------------------------------------------------


def _matters(settings: Settings) -> dict[str, object]:
    return {
        "mode": settings.mode,
        "project_dir": settings.project_dir,
        "state_root": settings.state.root,
        "host": settings.host,
        "airflow_port": settings.airflow_port,
        "mlflow_port": settings.mlflow_port,
        "airflow_base_url": settings.airflow_base_url,
        "mlflow_uri": settings.mlflow_uri,
        "training_backend": settings.training_backend,
        "feast_registry": settings.state.feast_registry,
    }


def _rebuild_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("LOOPLINE_STATE_DIR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_env_round_trips_the_default_settings(monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> None:
    original = Settings()
    env = original.env()

    assert all(key.startswith("LOOPLINE_") and isinstance(value, str) for key, value in env.items())
    assert env["LOOPLINE_STATE_DIR"] == str(state_dir.resolve())
    assert _matters(_rebuild_from(env, monkeypatch)) == _matters(original)


def test_env_round_trips_non_default_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    original = Settings(
        mode="compose",
        project_dir=tmp_path / "project",
        state_dir=tmp_path / "somewhere" / "state",
        host="127.0.0.3",
        airflow_port=18090,
        mlflow_port=15090,
        mlflow_tracking_uri="sqlite:///" + str(tmp_path / "mlflow.db"),
        training_backend="kubernetes",
    )
    rebuilt = _rebuild_from(original.env(), monkeypatch)

    assert _matters(rebuilt) == _matters(original)
    assert rebuilt.mlflow_uri == "sqlite:///" + str(tmp_path / "mlflow.db")


def test_env_without_state_dir_pins_the_default_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child started from a different working directory must still find the same state."""
    monkeypatch.delenv("LOOPLINE_STATE_DIR")
    env = Settings().env()
    assert env["LOOPLINE_STATE_DIR"] == str(REPO_ROOT / ".loopline")
    assert env["LOOPLINE_PROJECT_DIR"] == str(REPO_ROOT)


def test_env_feast_paths_point_into_the_state_dir(state_dir: Path) -> None:
    settings = Settings()
    env = settings.env()
    assert Path(env["LOOPLINE_FEAST_REGISTRY"]) == settings.state.feast_registry
    assert Path(env["LOOPLINE_FEAST_ONLINE_STORE"]) == settings.state.feast_online_store
    assert Path(env["LOOPLINE_FEAST_REGISTRY"]).is_relative_to(state_dir.resolve())


# --- telemetry ------------------------------------------------------------------------------------


def test_telemetry_is_switched_off_for_every_tool() -> None:
    env = telemetry_off_env()
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DO_NOT_TRACK"] == "true"
    assert env["SCARF_ANALYTICS"] == "false"
    assert env["FEAST_USAGE"] == "False"
    assert env["GX_ANALYTICS_ENABLED"] == "false"


def test_telemetry_env_is_a_copy() -> None:
    env = telemetry_off_env()
    env["MLFLOW_DISABLE_TELEMETRY"] = "false"
    assert telemetry_off_env()["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_per_task_scratch_gives_each_airflow_task_try_a_folder_of_its_own(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_TASK_SCRATCH", "per-task")
    with pytest.raises(ValidationError, match="set LOOPLINE_STORAGE_URL too"):
        Settings()  # tasks with folders of their own can only hand each other files in shared storage
    monkeypatch.setenv("LOOPLINE_STORAGE_URL", "s3://loopline")
    outside = Settings().state.root
    assert outside == state_dir, "outside a task (the CLI, serving) the state dir is as configured"
    monkeypatch.setenv("AIRFLOW_CTX_DAG_ID", "train_model")
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "manual__2026-01-01T00:00:00+00:00")
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "build_holdout")
    monkeypatch.setenv("AIRFLOW_CTX_TRY_NUMBER", "2")
    settings = Settings()
    holdout_task = settings.state.root
    assert holdout_task == (
        state_dir / "tasks" / "train_model" / "manual__2026-01-01T00_00_00_00_00" / "build_holdout.2"
    )
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "gate_candidate")
    assert Settings().state.root != holdout_task, "the next task never sees the last one's files"
    assert settings.env()["LOOPLINE_TASK_SCRATCH"] == "per-task"  # child processes inherit it
    monkeypatch.setenv("LOOPLINE_TASK_SCRATCH", "shared")
    assert Settings().state.root == state_dir
