"""The ``loopline`` CLI without a running stack."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopline.cli.main import _parse_conf, build_parser, main
from loopline.config import Settings
from loopline.platform.secrets import load_or_create_secrets

pytestmark = pytest.mark.usefixtures("clean_loopline_env")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_airflow_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """Point Airflow at a loopback port that is bound but not listening (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        monkeypatch.setenv("LOOPLINE_AIRFLOW_PORT", str(port))
        yield port


# --- _parse_conf ----------------------------------------------------------------------------------


def test_parse_conf_accepts_a_json_object() -> None:
    assert _parse_conf('{"epochs": 5, "model": {"depth": 3}}') == {"epochs": 5, "model": {"depth": 3}}


@pytest.mark.parametrize("text", [None, ""])
def test_parse_conf_without_conf_is_empty(text: str | None) -> None:
    assert _parse_conf(text) == {}


@pytest.mark.parametrize("text", ["{epochs: 5}", "{'epochs': 5}", '{"epochs": 5', "epochs=5"])
def test_parse_conf_rejects_non_json(text: str) -> None:
    with pytest.raises(SystemExit) as caught:
        _parse_conf(text)
    message = str(caught.value.code)
    assert message.startswith("error: --conf is not valid JSON")
    assert "at character" in message


@pytest.mark.parametrize("text", ["[1, 2]", "5", '"epochs"', "null", "true"])
def test_parse_conf_rejects_json_that_is_not_an_object(text: str) -> None:
    with pytest.raises(SystemExit) as caught:
        _parse_conf(text)
    assert str(caught.value.code).startswith("error: --conf must be a JSON object")


def test_trigger_with_bad_conf_exits_before_contacting_airflow(state_dir: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["trigger", "platform_smoke", "--conf", "[1]"])
    assert "must be a JSON object" in str(caught.value.code)


# --- status ---------------------------------------------------------------------------------------


def test_status_json_on_a_fresh_state_dir(capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    assert main(["status", "--json"]) == 0

    info = json.loads(capsys.readouterr().out)
    assert info["running"] is False
    assert info["services"] == {}
    assert info["mode"] == "embedded"
    assert info["airflow"]["url"] == "http://127.0.0.1:8080"
    assert "password" not in info["airflow"]  # nothing generated yet
    assert info["mlflow"]["url"] == "http://127.0.0.1:5000"
    assert info["state_dir"] == str(state_dir.resolve())


def test_status_json_shows_the_login_once_secrets_exist(
    capsys: pytest.CaptureFixture[str], state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_AIRFLOW_PORT", "18080")
    created = load_or_create_secrets(Settings())

    assert main(["status", "--json"]) == 0

    airflow = json.loads(capsys.readouterr().out)["airflow"]
    assert airflow["url"] == "http://127.0.0.1:18080"
    assert airflow["username"] == created.airflow_username
    assert airflow["password"] == created.airflow_password


def test_status_text_says_not_running(capsys: pytest.CaptureFixture[str], state_dir: Path) -> None:
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "not running" in out
    assert "http://127.0.0.1:8080" in out


def test_main_switches_telemetry_off_for_what_it_starts(
    capsys: pytest.CaptureFixture[str], state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    main(["status", "--json"])
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"  # undone by the unit conftest


# --- trigger without a stack ----------------------------------------------------------------------


def test_trigger_before_any_up_is_an_error_on_stderr(
    capsys: pytest.CaptureFixture[str], state_dir: Path
) -> None:
    assert main(["trigger", "x"]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert "loopline up" in captured.err


def test_trigger_with_the_stack_down_is_an_error_on_stderr(
    capsys: pytest.CaptureFixture[str], state_dir: Path, closed_airflow_port: int
) -> None:
    load_or_create_secrets(Settings())  # a stack ran here once, but is down now

    assert main(["trigger", "x"]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert "loopline up" in captured.err
    assert f"127.0.0.1:{closed_airflow_port}" in captured.err


# --- parser ---------------------------------------------------------------------------------------


def test_parser_knows_every_command() -> None:
    parser = build_parser()
    for argv in (
        ["up"],
        ["down"],
        ["status"],
        ["demo", "--exit"],
        ["simulate", "--list-bad"],
        ["ingest", "f"],
    ):
        assert parser.parse_args(argv).command == argv[0]
    args = parser.parse_args(["trigger", "d", "--conf", "{}", "--wait", "--timeout", "5"])
    assert (args.dag_id, args.conf, args.wait, args.timeout) == ("d", "{}", True, 5.0)


def test_pass_through_commands_get_every_argument_flags_included(monkeypatch) -> None:
    from loopline.cli.main import PASS_THROUGH

    seen = {}
    monkeypatch.setitem(PASS_THROUGH, "train", lambda args: seen.setdefault("train", args.passthrough) and 0)
    assert main(["train", "--training-set", "x.parquet", "--set", "epochs=2"]) == 0
    assert seen["train"] == ["--training-set", "x.parquet", "--set", "epochs=2"]


def test_parser_rejects_an_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
