"""The embedded stack's generated secrets."""

from __future__ import annotations

import base64
import json
import stat
from dataclasses import asdict
from pathlib import Path

import pytest

from loopline.config import Settings
from loopline.platform.secrets import (
    StackSecrets,
    load_or_create_secrets,
    passwords_file,
    read_secrets,
    secrets_file,
)


@pytest.fixture
def settings(state_dir: Path) -> Settings:
    return Settings()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_live_in_the_state_dir(settings: Settings, state_dir: Path) -> None:
    assert secrets_file(settings) == settings.state.run_dir / "secrets.json"
    assert passwords_file(settings) == settings.state.airflow_home / "simple_auth_manager_passwords.json"
    assert secrets_file(settings).is_relative_to(state_dir.resolve())
    assert passwords_file(settings).is_relative_to(state_dir.resolve())


def test_read_secrets_is_none_before_creation(settings: Settings) -> None:
    assert read_secrets(settings) is None
    assert not secrets_file(settings).exists()


def test_secrets_are_generated_once_and_stable(settings: Settings) -> None:
    first = load_or_create_secrets(settings)
    second = load_or_create_secrets(settings)

    assert first == second
    assert read_secrets(settings) == first
    assert json.loads(secrets_file(settings).read_text()) == asdict(first)


def test_generated_values_are_strong_and_distinct(settings: Settings) -> None:
    created = load_or_create_secrets(settings)

    assert created.airflow_username == settings.airflow_username == "loopline"
    assert created.airflow_password != "admin"
    assert created.airflow_password != created.airflow_username
    assert len(created.airflow_password) >= 16
    assert len(created.jwt_secret) >= 32
    assert len(created.api_secret_key) >= 32
    assert (
        len({created.airflow_password, created.jwt_secret, created.api_secret_key, created.fernet_key}) == 4
    )
    # A Fernet key is 32 url-safe-base64-encoded bytes.
    assert len(base64.urlsafe_b64decode(created.fernet_key)) == 32


def test_each_state_dir_gets_its_own_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_STATE_DIR", str(tmp_path / "a"))
    first = load_or_create_secrets(Settings())
    monkeypatch.setenv("LOOPLINE_STATE_DIR", str(tmp_path / "b"))
    second = load_or_create_secrets(Settings())
    assert first.airflow_password != second.airflow_password
    assert first.jwt_secret != second.jwt_secret
    assert first.fernet_key != second.fernet_key


def test_files_are_private(settings: Settings) -> None:
    load_or_create_secrets(settings)
    assert _mode(secrets_file(settings)) == 0o600
    assert _mode(passwords_file(settings)) == 0o600
    # No temporary files are left next to them.
    assert sorted(p.name for p in secrets_file(settings).parent.iterdir()) == ["secrets.json"]
    assert [p.name for p in passwords_file(settings).parent.iterdir()] == [passwords_file(settings).name]


def test_passwords_file_maps_username_to_password(settings: Settings) -> None:
    created = load_or_create_secrets(settings)
    assert json.loads(passwords_file(settings).read_text()) == {
        created.airflow_username: created.airflow_password
    }


def test_deleted_passwords_file_is_regenerated_with_the_same_password(settings: Settings) -> None:
    created = load_or_create_secrets(settings)
    passwords_file(settings).unlink()

    again = load_or_create_secrets(settings)

    assert again == created
    assert json.loads(passwords_file(settings).read_text()) == {
        created.airflow_username: created.airflow_password
    }
    assert _mode(passwords_file(settings)) == 0o600


def test_a_changed_passwords_file_is_put_back(settings: Settings) -> None:
    created = load_or_create_secrets(settings)
    passwords_file(settings).write_text(json.dumps({"admin": "admin"}))

    load_or_create_secrets(settings)

    assert json.loads(passwords_file(settings).read_text()) == {
        created.airflow_username: created.airflow_password
    }


def test_missing_keys_are_added_without_touching_stored_ones(settings: Settings) -> None:
    """A secrets file from an older version (fewer keys) keeps its values and gains the new ones."""
    path = secrets_file(settings)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"airflow_username": "loopline", "airflow_password": "kept-password-123456"}))

    created = load_or_create_secrets(settings)

    assert created.airflow_password == "kept-password-123456"
    assert created.jwt_secret and created.api_secret_key and created.fernet_key
    assert read_secrets(settings) == created
    assert _mode(path) == 0o600


def test_read_secrets_returns_the_stored_values(settings: Settings) -> None:
    created = load_or_create_secrets(settings)
    assert isinstance(read_secrets(settings), StackSecrets)
    assert read_secrets(settings) == created
