"""The environment every local Airflow component (and every task it runs) gets.

All components must agree on the database, the JWT secret and the execution API URL, so they are
derived here from one Settings object and handed over as ``AIRFLOW__*`` variables — no airflow.cfg
editing, and ``loopline airflow ...`` gives the same view from a shell.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loopline.config import Settings, telemetry_off_env
from loopline.platform.secrets import StackSecrets, passwords_file

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def venv_bin() -> Path:
    """The directory of the running interpreter's scripts (``airflow``, ``mlflow``, ``loopline``)."""
    return Path(sys.executable).parent


def airflow_env(settings: Settings, stack_secrets: StackSecrets) -> dict[str, str]:
    state = settings.state
    base_url = settings.airflow_base_url
    values = {
        "AIRFLOW_HOME": str(state.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_dir),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.plugins_dir),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow_parallelism),
        "AIRFLOW__CORE__FERNET_KEY": stack_secrets.fernet_key,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        # Loopline's DAGs are the product: they run as soon as they are parsed.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{stack_secrets.airflow_username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{state.airflow_db}",
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": stack_secrets.api_secret_key,
        "AIRFLOW__API_AUTH__JWT_SECRET": stack_secrets.jwt_secret,
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": str(settings.airflow_scheduler_idle_sleep),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(settings.airflow_dag_refresh_interval),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(state.logs / "airflow"),
        # FileSensor and friends need a filesystem connection; Airflow 3 ships no defaults.
        "AIRFLOW_CONN_FS_DEFAULT": '{"conn_type": "fs", "extra": {"path": "/"}}',
    }
    return values


def child_env(settings: Settings, stack_secrets: StackSecrets) -> dict[str, str]:
    """The full environment for a stack process: ours, Loopline's settings, Airflow's, telemetry off."""
    env = dict(os.environ)
    env.update(telemetry_off_env())
    env.update(settings.env())
    env.update(airflow_env(settings, stack_secrets))
    env["MLFLOW_TRACKING_URI"] = settings.mlflow_uri
    # MLflow's job runner (GenAI jobs) adds a dozen processes and ~3 GB that Loopline does not use.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env
