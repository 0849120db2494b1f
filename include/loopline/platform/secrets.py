"""Secrets the embedded stack generates once and keeps in the state directory.

Nothing here is a fixed default: the Airflow login and the keys shared by Airflow's components are
random per state directory, written with owner-only permissions, and stable across restarts so
tokens and encrypted connections stay valid.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from loopline.config import Settings


@dataclass(frozen=True)
class StackSecrets:
    airflow_username: str
    airflow_password: str
    jwt_secret: str
    api_secret_key: str
    fernet_key: str


def _write_private(path: Path, payload: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2)
    os.replace(tmp, path)


def secrets_file(settings: Settings) -> Path:
    return settings.state.run_dir / "secrets.json"


def passwords_file(settings: Settings) -> Path:
    """The SimpleAuthManager passwords file (``{"user": "password"}``) Airflow reads at login."""
    return settings.state.airflow_home / "simple_auth_manager_passwords.json"


def load_or_create_secrets(settings: Settings) -> StackSecrets:
    """Read the stack's secrets, generating any that are missing (first ``loopline up``)."""
    path = secrets_file(settings)
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    generated = {
        "airflow_username": settings.airflow_username,
        "airflow_password": secrets.token_urlsafe(18),
        "jwt_secret": secrets.token_urlsafe(48),
        "api_secret_key": secrets.token_urlsafe(32),
        "fernet_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
    merged = {**generated, **stored}
    if merged != stored:
        _write_private(path, merged)
    pw_path = passwords_file(settings)
    wanted = {merged["airflow_username"]: merged["airflow_password"]}
    if not pw_path.exists() or json.loads(pw_path.read_text()) != wanted:
        _write_private(pw_path, wanted)
    return StackSecrets(**merged)


def read_secrets(settings: Settings) -> StackSecrets | None:
    """The stored secrets, or None before the first ``loopline up``."""
    path = secrets_file(settings)
    if not path.exists():
        return None
    return StackSecrets(**json.loads(path.read_text()))
