"""The environment of the local Airflow components."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml

from loopline.config import Settings, telemetry_off_env
from loopline.platform.airflow_env import SIMPLE_AUTH_MANAGER, airflow_env, child_env, venv_bin
from loopline.platform.secrets import StackSecrets, load_or_create_secrets, passwords_file


@pytest.fixture
def settings(state_dir: Path, clean_loopline_env: None) -> Settings:
    return Settings()


@pytest.fixture
def stack_secrets(settings: Settings) -> StackSecrets:
    return load_or_create_secrets(settings)


@pytest.fixture
def env(settings: Settings, stack_secrets: StackSecrets) -> dict[str, str]:
    return airflow_env(settings, stack_secrets)


def test_api_server_binds_to_loopback_only(env: dict[str, str]) -> None:
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "8080"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    assert "0.0.0.0" not in " ".join(env.values())


def test_ports_follow_the_settings(
    state_dir: Path, clean_loopline_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_AIRFLOW_PORT", "18080")
    settings = Settings()
    env = airflow_env(settings, load_or_create_secrets(settings))
    assert env["AIRFLOW__API__PORT"] == "18080"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18080"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"


def test_local_executor_with_parallelism_from_settings(
    state_dir: Path, clean_loopline_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_AIRFLOW_PARALLELISM", "7")
    monkeypatch.setenv("LOOPLINE_AIRFLOW_SCHEDULER_IDLE_SLEEP", "0.5")
    monkeypatch.setenv("LOOPLINE_AIRFLOW_DAG_REFRESH_INTERVAL", "3")
    settings = Settings()
    env = airflow_env(settings, load_or_create_secrets(settings))
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "7"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] == "0.5"
    assert env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] == "3"


def test_examples_off_and_project_folders(env: dict[str, str], settings: Settings) -> None:
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(settings.dags_dir)
    assert Path(env["AIRFLOW__CORE__DAGS_FOLDER"]).is_dir()
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(settings.plugins_dir)


def test_database_home_and_logs_live_in_the_state_dir(env: dict[str, str], settings: Settings) -> None:
    root = settings.state.root
    conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert conn.startswith("sqlite:////")  # sqlite:/// + an absolute path
    db = Path(conn.removeprefix("sqlite:///"))
    assert db == settings.state.airflow_db
    assert db.is_relative_to(root)
    assert Path(env["AIRFLOW_HOME"]) == settings.state.airflow_home
    assert Path(env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]).is_relative_to(root)


def test_login_comes_from_generated_secrets_not_a_fixed_password(
    env: dict[str, str], settings: Settings, stack_secrets: StackSecrets
) -> None:
    assert env["AIRFLOW__CORE__AUTH_MANAGER"] == SIMPLE_AUTH_MANAGER
    # SimpleAuthManager's format is "user:role": the Loopline user gets the admin *role*.
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == f"{stack_secrets.airflow_username}:admin"
    assert stack_secrets.airflow_username != "admin"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(passwords_file(settings))
    for key, value in env.items():
        assert "admin:admin" not in value, key
        assert value not in ("admin", "airflow"), key
        # The password itself is only in the owner-only passwords file, not in any process environment.
        assert stack_secrets.airflow_password not in value, key


def test_shared_keys_come_from_the_secrets(env: dict[str, str], stack_secrets: StackSecrets) -> None:
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == stack_secrets.jwt_secret
    assert env["AIRFLOW__API__SECRET_KEY"] == stack_secrets.api_secret_key
    assert env["AIRFLOW__CORE__FERNET_KEY"] == stack_secrets.fernet_key


def test_every_airflow_option_exists_in_this_airflow(env: dict[str, str]) -> None:
    """A typo (or an option Airflow 3 renamed) would be silently ignored by Airflow."""
    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.submodule_search_locations
    config_yml = Path(next(iter(spec.submodule_search_locations))) / "config_templates" / "config.yml"
    known = yaml.safe_load(config_yml.read_text())
    for key in env:
        if not key.startswith("AIRFLOW__"):
            continue
        section, option = (part.lower() for part in key.removeprefix("AIRFLOW__").split("__", 1))
        assert option in known.get(section, {}).get("options", {}), key


def test_all_values_are_strings(env: dict[str, str]) -> None:
    assert all(isinstance(value, str) for value in env.values())


# --- child_env ------------------------------------------------------------------------------------


def test_child_env_switches_telemetry_off(settings: Settings, stack_secrets: StackSecrets) -> None:
    env = child_env(settings, stack_secrets)
    for key, value in telemetry_off_env().items():
        assert env[key] == value, key
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"


def test_child_env_overrides_the_parent_environment(
    settings: Settings, stack_secrets: StackSecrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "SequentialExecutor")
    monkeypatch.setenv("LOOPLINE_AIRFLOW_PORT_UNRELATED", "keep-me")
    env = child_env(settings, stack_secrets)

    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # conftest points AIRFLOW_HOME elsewhere; the stack uses the state dir's.
    assert os.environ["AIRFLOW_HOME"] != env["AIRFLOW_HOME"]
    assert env["AIRFLOW_HOME"] == str(settings.state.airflow_home)
    assert env["LOOPLINE_AIRFLOW_PORT_UNRELATED"] == "keep-me"


def test_child_env_carries_settings_and_mlflow_and_the_venv(
    settings: Settings, stack_secrets: StackSecrets
) -> None:
    env = child_env(settings, stack_secrets)
    for key, value in settings.env().items():
        assert env[key] == value, key
    assert env["MLFLOW_TRACKING_URI"] == settings.mlflow_uri
    assert env["PATH"].split(os.pathsep)[0] == str(venv_bin())
    assert (venv_bin() / "airflow").exists()
    assert env["PYTHONUNBUFFERED"] == "1"
