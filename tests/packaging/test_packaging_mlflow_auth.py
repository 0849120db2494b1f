"""docker/mlflow/loopline_mlflow.py: MLflow's basic-auth app with Loopline's users, against a real server.

The writer (`loopline`: Airflow and the trainer) registers models and moves @champion; `serving` loads the
champion and can change nothing. The server runs exactly as the image's entrypoint starts it (the wrapper
writes the auth config and execs `mlflow server --app-name basic-auth`), with SQLite stores in a temporary
folder. Needs MLflow's `auth` extra (Flask-WTF), which the image installs (docker/mlflow/requirements.txt).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging_files import REPO_ROOT

from loopline.platform.processes import free_port

WRAPPER = REPO_ROOT / "docker" / "mlflow" / "loopline_mlflow.py"
FLASK_WTF = "Flask-WTF==1.3.0"
PASSWORDS = {
    "admin": "admin-pw-0123456789",
    "loopline": "writer-pw-0123456789abcdef",
    "serving": "serving-pw-0123456789abcdef",
}
MODEL, TRAINING, MONITORING = "fraud_detector", "fraud_detector_training", "fraud_detector_monitoring"


def _wrapper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("loopline_mlflow", WRAPPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


lm = _wrapper()


# --- the wrapper's decisions, without a server ---------------------------------------------------------------


SERVE_ENV = {
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
    "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORDS["admin"],
    "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg://mlflow:p%40ss@postgres:5432/mlflow",
}


@pytest.mark.parametrize(
    ("drop", "override", "message"),
    [
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", {}, "MLFLOW_FLASK_SERVER_SECRET_KEY"),
        ("MLFLOW_AUTH_ADMIN_PASSWORD", {}, "MLFLOW_AUTH_ADMIN_PASSWORD"),
        (None, {"MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"}, "well-known default"),
    ],
)
def test_serve_refuses_to_start_without_its_secrets_or_with_mlflows_old_default(
    drop, override, message
) -> None:
    env = {k: v for k, v in {**SERVE_ENV, **override}.items() if k != drop}
    with pytest.raises(lm.SetupError, match=message):
        lm.auth_config(env)


def test_the_auth_config_denies_by_default_and_is_private(tmp_path: Path) -> None:
    path = lm.write_auth_config(
        {
            **SERVE_ENV,
            "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
            "MLFLOW_AUTH_DATABASE_URI": "postgresql+psycopg://mlflow:p%40ss@postgres/mlflow_auth",
        }
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    import configparser

    read = configparser.ConfigParser()  # as MLflow reads it (with interpolation: '%' must come back intact)
    read.read(path)
    assert read["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    assert read["mlflow"]["database_uri"] == "postgresql+psycopg://mlflow:p%40ss@postgres/mlflow_auth"
    assert "admin_password" not in read["mlflow"]  # from the environment only
    fallback = lm.auth_config({**SERVE_ENV})
    assert fallback["mlflow"]["database_uri"] == SERVE_ENV["MLFLOW_BACKEND_STORE_URI"]


def test_the_plan_gives_the_writer_the_model_and_serving_only_reads() -> None:
    env = {
        "MLFLOW_AUTH_ADMIN_PASSWORD": "a" * 16,
        "MLFLOW_LOOPLINE_PASSWORD": "b" * 24,
        "MLFLOW_SERVING_PASSWORD": "c" * 24,
    }
    plan = lm.plan_from_env(env)
    grants = plan.grants({TRAINING: "1", MONITORING: "2"})
    assert grants == [
        ("loopline", "registered_model", MODEL, "MANAGE"),
        ("loopline", "experiment", "1", "EDIT"),
        ("loopline", "experiment", "2", "EDIT"),
        ("serving", "registered_model", MODEL, "READ"),
        ("serving", "experiment", "1", "READ"),
    ]
    with pytest.raises(lm.SetupError, match="must differ"):
        lm.plan_from_env({**env, "MLFLOW_SERVING_PASSWORD": env["MLFLOW_LOOPLINE_PASSWORD"]})
    with pytest.raises(lm.SetupError, match="MLFLOW_SERVING_PASSWORD"):
        lm.plan_from_env({**env, "MLFLOW_SERVING_PASSWORD": ""})


class _Exists(Exception):
    error_code = "RESOURCE_ALREADY_EXISTS"


class _Grants:
    """A stand-in for MLflow's AuthServiceClient's grant calls."""

    def __init__(self, existing: dict[tuple[str, str, str], str]) -> None:
        self.grants = dict(existing)
        self.calls: list[str] = []

    def grant_user_permission(self, user: str, kind: str, resource: str, permission: str) -> None:
        self.calls.append(f"grant {permission}")
        if (user, kind, resource) in self.grants:
            raise _Exists("exists")
        self.grants[(user, kind, resource)] = permission

    def get_user_permission(self, user: str, kind: str, resource: str) -> Any:
        return type("Result", (), {"permission": self.grants[(user, kind, resource)]})()

    def revoke_user_permission(self, user: str, kind: str, resource: str) -> None:
        self.calls.append("revoke")
        del self.grants[(user, kind, resource)]


def test_ensure_grant_sets_exactly_the_permission() -> None:
    key = ("serving", "experiment", "1")
    squatted = _Grants({key: "MANAGE"})  # e.g. serving created the experiment before init ran
    lm.ensure_grant(squatted, *key, "READ")
    assert squatted.grants[key] == "READ" and "revoke" in squatted.calls
    same = _Grants({key: "READ"})
    lm.ensure_grant(same, *key, "READ")
    assert same.calls == ["grant READ"]


# --- against a real server -----------------------------------------------------------------------------------


integration = pytest.mark.integration


def _http(uri: str, path: str, user: str | None = None, password: str | None = None) -> int:
    return lm._status(uri, path, user, password)


def _needs_flask_wtf() -> None:
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.skip(f"MLflow's basic-auth app needs Flask-WTF (pip install {FLASK_WTF}; the image has it)")


@contextlib.contextmanager
def running_server(root: Path, admin_password: str) -> Iterator[str]:
    """An MLflow server with the basic-auth app on a free port, started through the image's wrapper."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{root}/mlflow.db",
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{root}/auth.db",
        "MLFLOW_AUTH_CONFIG_PATH": str(root / "auth.ini"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "s" * 32,
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    options = [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--serve-artifacts",
    ]
    argv = [sys.executable, str(WRAPPER), "serve", *options]
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError):
                if _http(uri, "/health") == 200:
                    break
            assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (
                "MLflow did not come up: " + (root / "server.log").read_text()[-3000:]
            )
            time.sleep(0.5)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _needs_flask_wtf()
    with running_server(tmp_path_factory.mktemp("mlflow-auth"), PASSWORDS["admin"]) as uri:
        yield uri


def _init(uri: str, **override: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORDS["admin"],
        "MLFLOW_LOOPLINE_PASSWORD": PASSWORDS["loopline"],
        "MLFLOW_SERVING_PASSWORD": PASSWORDS["serving"],
        "LOOPLINE_MLFLOW_INIT_TIMEOUT_S": "30",
        **override,
    }
    return subprocess.run(
        [sys.executable, str(WRAPPER), "init"], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def initialised(server: str) -> str:
    for _ in range(2):  # idempotent: every `up` runs it
        done = _init(server)
        assert done.returncode == 0, done.stdout + done.stderr
    return server


@contextlib.contextmanager
def as_user(user: str, password: str | None = None) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", user)
        patch.setenv("MLFLOW_TRACKING_PASSWORD", password or PASSWORDS[user])
        yield


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@integration
def test_every_request_needs_a_login_and_there_is_no_default_admin(server: str) -> None:
    assert _http(server, "/health") == 200  # healthchecks stay open
    assert _http(server, "/api/2.0/mlflow/experiments/search?max_results=1") == 401
    assert _http(server, "/api/2.0/mlflow/users/current", "admin", lm.LEGACY_DEFAULT_ADMIN_PASSWORD) == 401
    assert _http(server, "/api/2.0/mlflow/users/current", "admin", PASSWORDS["admin"]) == 200


@integration
def test_init_creates_the_users_model_and_experiments(initialised: str) -> None:
    from mlflow.server.auth.client import AuthServiceClient

    with as_user("admin"):
        auth = AuthServiceClient(initialised)
        assert not auth.get_user("loopline").is_admin and not auth.get_user("serving").is_admin
        client = _client(initialised)
        assert client.get_registered_model(MODEL).name == MODEL
        assert client.get_experiment_by_name(TRAINING) and client.get_experiment_by_name(MONITORING)
    for user in ("loopline", "serving"):
        assert _http(initialised, "/api/2.0/mlflow/users/current", user, PASSWORDS[user]) == 200


class _Half:
    """A stand-in model: its score is always one half."""

    def predict(self, context: Any, model_input: Any, params: Any = None) -> list[float]:
        return [0.5] * len(model_input)


def _denied(call: Any) -> str:
    with pytest.raises(Exception) as caught:  # noqa: B017 - MLflow raises RestException or MlflowException
        call()
    text = str(caught.value)
    assert "403" in text or "PERMISSION_DENIED" in text or "Permission denied" in text, text
    return text


@integration
def test_the_writer_moves_champion_and_serving_loads_it_but_changes_nothing(initialised: str) -> None:
    import mlflow
    import mlflow.pyfunc
    import pandas as pd

    model_class = type("HalfModel", (_Half, mlflow.pyfunc.PythonModel), {})
    with as_user("loopline"):
        mlflow.set_tracking_uri(initialised)
        mlflow.set_registry_uri(initialised)
        mlflow.set_experiment(TRAINING)
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model", python_model=model_class(), registered_model_name=MODEL
            )
        writer = _client(initialised)
        champion = str(info.registered_model_version)
        challenger = str(mlflow.register_model(info.model_uri, MODEL).version)  # a second version, same files
        writer.set_registered_model_alias(MODEL, "champion", champion)
        writer.set_registered_model_alias(MODEL, "challenger", challenger)
        writer.set_model_version_tag(MODEL, challenger, "loopline.gate", "passed")
        writer.delete_model_version_tag(MODEL, challenger, "loopline.gate")
        writer.delete_registered_model_alias(MODEL, "challenger")  # MANAGE: EDIT would not do
    with as_user("serving"):
        loaded = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
        assert list(loaded.predict(pd.DataFrame({"amount": [1.0, 2.0]}))) == [0.5, 0.5]
        reader = _client(initialised)
        assert reader.get_model_version_by_alias(MODEL, "champion").version == champion
        training = reader.get_experiment_by_name(TRAINING).experiment_id
        _denied(lambda: reader.set_registered_model_alias(MODEL, "champion", challenger))
        _denied(lambda: reader.delete_registered_model_alias(MODEL, "champion"))
        _denied(lambda: reader.create_model_version(MODEL, "mlflow-artifacts:/elsewhere", None))
        _denied(lambda: reader.set_registered_model_tag(MODEL, "loopline.challenger_traffic", "1"))
        _denied(lambda: reader.create_run(training))
        _denied(lambda: reader.get_experiment_by_name(MONITORING))
    with as_user("loopline"):
        assert _client(initialised).get_model_version_by_alias(MODEL, "champion").version == champion


@integration
def test_a_changed_password_in_env_reaches_the_user_on_the_next_init(initialised: str) -> None:
    rotated = "serving-rotated-0123456789abcdef"
    try:
        done = _init(initialised, MLFLOW_SERVING_PASSWORD=rotated)
        assert done.returncode == 0, done.stderr
        assert _http(initialised, "/api/2.0/mlflow/users/current", "serving", rotated) == 200
        assert _http(initialised, "/api/2.0/mlflow/users/current", "serving", PASSWORDS["serving"]) == 401
    finally:
        assert _init(initialised).returncode == 0


@integration
def test_init_refuses_a_wrong_admin_password_and_says_how_to_rotate(initialised: str) -> None:
    done = _init(initialised, MLFLOW_AUTH_ADMIN_PASSWORD="not-the-admin-password-0000")
    assert done.returncode == 1
    assert "cannot log in to MLflow as admin" in done.stderr and "update-password" in done.stderr


def test_init_waits_for_the_server_and_gives_up_with_a_message() -> None:
    done = _init(f"http://127.0.0.1:{free_port()}", LOOPLINE_MLFLOW_INIT_TIMEOUT_S="1")
    assert done.returncode == 1 and "did not answer /health" in done.stderr


@integration
def test_an_admin_left_on_mlflows_old_default_password_cannot_log_in_with_it_any_more(tmp_path: Path) -> None:
    """A user database from an older MLflow whose admin still has `password1234` (what it once created by
    itself): started through the wrapper with MLFLOW_AUTH_ADMIN_PASSWORD, the admin gets that password
    (MLflow 3.17 replaces the old default at start; init would do it for an MLflow that does not), and the
    old one no longer logs in."""
    _needs_flask_wtf()
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    root = tmp_path / "upgraded"
    root.mkdir()
    old = SqlAlchemyStore()
    old.init_db(f"sqlite:///{root}/auth.db")
    old.create_user("admin", lm.LEGACY_DEFAULT_ADMIN_PASSWORD, is_admin=True)
    with running_server(root, PASSWORDS["admin"]) as uri:
        done = _init(uri)
        assert done.returncode == 0, done.stdout + done.stderr
        assert _http(uri, "/api/2.0/mlflow/users/current", "admin", lm.LEGACY_DEFAULT_ADMIN_PASSWORD) == 401
        assert _http(uri, "/api/2.0/mlflow/users/current", "admin", PASSWORDS["admin"]) == 200
