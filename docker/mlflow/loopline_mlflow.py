"""MLflow with authentication, for compose and Kubernetes (runs in the docker/mlflow image).

    python loopline_mlflow.py serve [mlflow server options]   the server, MLflow's basic-auth app switched on
    python loopline_mlflow.py init                            its users and permissions (idempotent)

``serve`` writes the auth app's config (``default_permission = NO_PERMISSIONS``: a user sees only what it
was granted; users kept in ``MLFLOW_AUTH_DATABASE_URI``) and execs ``mlflow server --app-name basic-auth``.
It refuses to start without ``MLFLOW_FLASK_SERVER_SECRET_KEY`` (CSRF) and ``MLFLOW_AUTH_ADMIN_PASSWORD``,
or with MLflow's old built-in admin password. ``/health`` stays open (healthchecks); everything else
needs a login.

``init`` (compose's mlflow-init, the Kubernetes Job loopline-mlflow-init), as the admin:

- makes sure the admin's password is ``MLFLOW_AUTH_ADMIN_PASSWORD`` (an admin still on MLflow's old
  default ``password1234`` is switched to it);
- creates or updates the users ``loopline`` (``MLFLOW_LOOPLINE_PASSWORD``: Airflow tasks and the trainer)
  and ``serving`` (``MLFLOW_SERVING_PASSWORD``), neither an admin; a changed password is applied;
- creates the registered model and the experiments Loopline uses if missing (so no other user can create
  them first and own them), then grants ``loopline`` MANAGE on the model (registering versions, moving
  and deleting the @champion/@challenger aliases and tags needs it) and EDIT on the experiments, and
  ``serving`` READ on the model and on the experiments its versions are logged in (MLflow checks READ on
  the experiment when a model's files are downloaded). Nothing else: serving cannot move an alias,
  register a version, log a run or upload a file.

Configuration (environment): MLFLOW_TRACKING_URI, MLFLOW_AUTH_ADMIN_USERNAME (admin),
MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_LOOPLINE_PASSWORD, MLFLOW_SERVING_PASSWORD, LOOPLINE_MLFLOW_MODEL
(fraud_detector), LOOPLINE_MLFLOW_EXPERIMENTS (fraud_detector_training,fraud_detector_monitoring),
LOOPLINE_MLFLOW_SERVING_EXPERIMENTS (fraud_detector_training), LOOPLINE_MLFLOW_INIT_TIMEOUT_S (300).
"""

from __future__ import annotations

import base64
import configparser
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What MLflow's basic-auth app created its admin with before it required a password (MLflow < 3.x docs).
LEGACY_DEFAULT_ADMIN_PASSWORD = "password1234"
DEFAULT_CONFIG_PATH = "/tmp/loopline-mlflow-auth.ini"
WRITER, SERVING = "loopline", "serving"
DEFAULT_MODEL = "fraud_detector"
DEFAULT_EXPERIMENTS = ("fraud_detector_training", "fraud_detector_monitoring")
DEFAULT_SERVING_EXPERIMENTS = ("fraud_detector_training",)


class SetupError(RuntimeError):
    """Something the operator must fix; the message says what."""


def _required(env: Mapping[str, str], name: str, why: str) -> str:
    value = env.get(name, "")
    if not value:
        raise SetupError(f"{name} is not set: {why}")
    return value


# --- serve ---------------------------------------------------------------------------------------------------


def auth_config(env: Mapping[str, str]) -> configparser.ConfigParser:
    """The basic-auth app's config from the environment (secrets stay in the environment, except the auth
    database URL, which MLflow reads only from this file: it is written owner-only)."""
    _required(env, "MLFLOW_FLASK_SERVER_SECRET_KEY", "the auth app's CSRF secret (openssl rand -hex 32)")
    admin_password = _required(
        env,
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLflow's admin password; the auth app must not create a default admin",
    )
    if admin_password == LEGACY_DEFAULT_ADMIN_PASSWORD:
        raise SetupError(
            "MLFLOW_AUTH_ADMIN_PASSWORD is MLflow's well-known default: generate one (openssl rand -hex 16)"
        )
    database = env.get("MLFLOW_AUTH_DATABASE_URI") or _required(
        env,
        "MLFLOW_BACKEND_STORE_URI",
        "where MLflow keeps runs (and, without MLFLOW_AUTH_DATABASE_URI, users)",
    )
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        # A user sees and changes only what it was granted (MLflow's default would be READ on everything).
        "default_permission": "NO_PERMISSIONS",
        "database_uri": database,
        "admin_username": env.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin",
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
    }
    return config


def write_auth_config(env: Mapping[str, str]) -> Path:
    path = Path(env.get("MLFLOW_AUTH_CONFIG_PATH") or DEFAULT_CONFIG_PATH)
    config = auth_config(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        # MLflow reads the file with a plain ConfigParser: escape '%' (e.g. of a URL-encoded password).
        for section in config.sections():
            handle.write(f"[{section}]\n")
            for key, value in config[section].items():
                handle.write(f"{key} = {value.replace('%', '%%')}\n")
    return path


def serve(argv: list[str], env: dict[str, str]) -> None:
    path = write_auth_config(env)
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(path)
    os.execvpe("mlflow", ["mlflow", "server", "--app-name", "basic-auth", *argv], env)


# --- init ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The users and grants ``init`` makes sure of."""

    admin: str
    admin_password: str
    users: dict[str, str]  # username -> password
    model: str
    experiments: tuple[str, ...]  # the writer's (EDIT)
    serving_experiments: tuple[str, ...]  # serving's (READ)

    def grants(self, experiment_ids: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
        """(username, resource_type, resource_id, permission) for every grant, in order."""
        out = [(WRITER, "registered_model", self.model, "MANAGE")]
        out += [(WRITER, "experiment", experiment_ids[name], "EDIT") for name in self.experiments]
        out.append((SERVING, "registered_model", self.model, "READ"))
        out += [(SERVING, "experiment", experiment_ids[name], "READ") for name in self.serving_experiments]
        return out


def _names(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(part.strip() for part in (value or "").split(",") if part.strip())
    return names or default


def plan_from_env(env: Mapping[str, str]) -> Plan:
    admin_password = _required(env, "MLFLOW_AUTH_ADMIN_PASSWORD", "the MLflow admin's password")
    users = {
        WRITER: _required(
            env, "MLFLOW_LOOPLINE_PASSWORD", "the password of MLflow user loopline (Airflow, trainer)"
        ),
        SERVING: _required(env, "MLFLOW_SERVING_PASSWORD", "the password of MLflow user serving"),
    }
    if len({admin_password, *users.values()}) != 3:
        raise SetupError(
            "MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_LOOPLINE_PASSWORD and MLFLOW_SERVING_PASSWORD must differ"
        )
    experiments = _names(env.get("LOOPLINE_MLFLOW_EXPERIMENTS"), DEFAULT_EXPERIMENTS)
    serving_experiments = _names(env.get("LOOPLINE_MLFLOW_SERVING_EXPERIMENTS"), DEFAULT_SERVING_EXPERIMENTS)
    return Plan(
        admin=env.get("MLFLOW_AUTH_ADMIN_USERNAME") or "admin",
        admin_password=admin_password,
        users=users,
        model=env.get("LOOPLINE_MLFLOW_MODEL") or DEFAULT_MODEL,
        experiments=tuple(dict.fromkeys((*experiments, *serving_experiments))),
        serving_experiments=serving_experiments,
    )


def _status(uri: str, path: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(uri.rstrip("/") + path)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_until_up(uri: str, timeout_s: float, sleep: Callable[[float], None] = time.sleep) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if _status(uri, "/health") == 200:
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise SetupError(f"MLflow at {uri} did not answer /health within {timeout_s:.0f} s")
        sleep(2)


def _can_log_in(uri: str, user: str, password: str) -> bool:
    return _status(uri, "/api/2.0/mlflow/users/current", user, password) == 200


def _exists_error(exc: Exception, code: str) -> bool:
    return getattr(exc, "error_code", "") == code or code in str(exc)


def ensure_admin_password(uri: str, plan: Plan, auth_client: Callable[[str, str], Any]) -> str:
    """'ok', or 'rotated' when the admin still had MLflow's old default password."""
    if _can_log_in(uri, plan.admin, plan.admin_password):
        return "ok"
    if _can_log_in(uri, plan.admin, LEGACY_DEFAULT_ADMIN_PASSWORD):
        auth_client(plan.admin, LEGACY_DEFAULT_ADMIN_PASSWORD).update_user_password(
            plan.admin, plan.admin_password, current_password=LEGACY_DEFAULT_ADMIN_PASSWORD
        )  # self-service needs it
        return "rotated"
    raise SetupError(
        f"cannot log in to MLflow as {plan.admin} with MLFLOW_AUTH_ADMIN_PASSWORD. MLflow sets the admin's password "
        "only when it creates its user database; to change it later use the update-password API with the old one "
        "(docs/security.md, 'Rotate')"
    )


def run_init(plan: Plan, uri: str, auth: Any, tracking: Any, log: Callable[[str], None] = print) -> None:
    """Users, resources and grants, given MLflow clients logged in as the admin."""
    for username, password in plan.users.items():
        try:
            user = auth.get_user(username)
        except Exception as exc:
            if not _exists_error(exc, "RESOURCE_DOES_NOT_EXIST"):
                raise
            auth.create_user(username, password)
            log(f"created MLflow user {username}")
        else:
            auth.update_user_password(username, password)
            if user.is_admin:
                auth.update_user_admin(username, False)
                log(f"MLflow user {username} was an admin: not any more")
    experiment_ids = {}
    for name in plan.experiments:
        experiment = tracking.get_experiment_by_name(name)
        experiment_ids[name] = experiment.experiment_id if experiment else tracking.create_experiment(name)
    try:
        tracking.get_registered_model(plan.model)
    except Exception as exc:
        if not _exists_error(exc, "RESOURCE_DOES_NOT_EXIST"):
            raise
        tracking.create_registered_model(plan.model)
        log(f"created registered model {plan.model}")
    for username, kind, resource, permission in plan.grants(experiment_ids):
        ensure_grant(auth, username, kind, resource, permission)
        log(f"{username}: {permission} on {kind} {resource}")


def ensure_grant(auth: Any, username: str, kind: str, resource: str, permission: str) -> None:
    """Exactly ``permission`` for ``username`` on the resource (a different existing grant is replaced)."""
    try:
        auth.grant_user_permission(username, kind, resource, permission)
        return
    except Exception as exc:
        if not _exists_error(exc, "RESOURCE_ALREADY_EXISTS"):
            raise
    if auth.get_user_permission(username, kind, resource).permission == permission:
        return
    auth.revoke_user_permission(username, kind, resource)
    auth.grant_user_permission(username, kind, resource, permission)


def init(env: Mapping[str, str]) -> None:
    plan = plan_from_env(env)
    uri = _required(env, "MLFLOW_TRACKING_URI", "the MLflow server to set up, e.g. http://mlflow:5000")
    wait_until_up(uri, float(env.get("LOOPLINE_MLFLOW_INIT_TIMEOUT_S") or 300))
    os.environ["MLFLOW_TRACKING_URI"] = uri

    def auth_client(user: str, password: str) -> Any:
        from mlflow.server.auth.client import AuthServiceClient

        # MLflow's clients read the login from these on every request.
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
        return AuthServiceClient(uri)

    if ensure_admin_password(uri, plan, auth_client) == "rotated":
        print(f"MLflow admin {plan.admin} had MLflow's default password: set to MLFLOW_AUTH_ADMIN_PASSWORD")
    from mlflow import MlflowClient

    auth = auth_client(plan.admin, plan.admin_password)
    run_init(plan, uri, auth, MlflowClient(tracking_uri=uri, registry_uri=uri))
    for username, password in plan.users.items():
        if not _can_log_in(uri, username, password):
            raise SetupError(f"MLflow user {username} cannot log in after its password was set")
    print(f"MLflow at {uri}: users {', '.join(plan.users)} and their permissions are in place")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    try:
        if command == "serve":
            serve(rest[1:] if rest[:1] == ["--"] else rest, dict(os.environ))
        elif command == "init":
            init(os.environ)
        else:
            print("usage: python loopline_mlflow.py serve [mlflow server options] | init", file=sys.stderr)
            return 2
    except SetupError as exc:
        print(f"loopline_mlflow {command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
