"""The compose stack's secrets check (loopline.platform.secrets): placeholders, malformed keys, passwords
that break URLs and reused values are refused, each named with the command that generates a good one."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.platform.secrets import (
    COMPOSE_SECRETS,
    GENERATE_FERNET,
    SecretSpec,
    check_secrets,
    generate_env,
    main,
    read_env_file,
    report,
    secret_problem,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
ENV_EXAMPLE = REPO_ROOT / ".env.example"
SPECS = {spec.name: spec for spec in COMPOSE_SECRETS}


def good_env() -> dict[str, str]:
    return {spec.name: spec.new_value() for spec in COMPOSE_SECRETS}


def test_generated_values_pass_and_are_all_different() -> None:
    env = good_env()
    assert check_secrets(env) == []
    assert len(set(env.values())) == len(env)
    assert len(base64.urlsafe_b64decode(env["AIRFLOW_FERNET_KEY"])) == 32


def test_every_env_example_placeholder_is_refused_with_its_name_and_generator() -> None:
    example = read_env_file(ENV_EXAMPLE)
    problems = {p.name: p for p in check_secrets(example)}
    assert set(problems) == set(SPECS)
    for name, problem in problems.items():
        assert problem.generate == SPECS[name].generate
        assert name in str(problem) and SPECS[name].generate in str(problem)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        # placeholders and public defaults
        ("POSTGRES_PASSWORD", "change-me-postgres", "placeholder"),
        ("AIRFLOW_ADMIN_PASSWORD", "admin", "placeholder"),
        ("MLFLOW_ADMIN_PASSWORD", "password1234", "placeholder"),
        ("AIRFLOW_JWT_SECRET", "CHANGEME" + "0" * 40, "placeholder"),
        # Fernet keys: 32 url-safe base64 bytes
        ("AIRFLOW_FERNET_KEY", base64.urlsafe_b64encode(os.urandom(16)).decode(), "16 bytes"),
        ("AIRFLOW_FERNET_KEY", "not base64 at all!" * 3, "not url-safe base64"),
        ("AIRFLOW_FERNET_KEY", base64.b64encode(b"\xfb" * 32).decode(), "not url-safe base64"),  # '+' and '/'
        # passwords that go into connection URLs
        ("SERVING_DB_PASSWORD", "abc@def:ghi/jkl0123", "break connection URLs"),
        ("REDIS_PASSWORD", "abcdefgh,ijklmnop", "break connection URLs"),
        ("FEAST_DB_PASSWORD", "it's-a-password-123", "break connection URLs"),
        ("LOOPLINE_DB_PASSWORD", "percent%20encoded-pw", "break connection URLs"),
        ("AIRFLOW_DB_PASSWORD", "short-pw", "at least 16"),
        # tokens and human passwords
        ("AIRFLOW_API_SECRET_KEY", "a" * 31, "at least 32"),
        ("MLFLOW_FLASK_SECRET_KEY", "a" * 20 + " " + "b" * 20, "characters other than"),
        ("GRAFANA_ADMIN_PASSWORD", "elevenchars", "at least 12"),
        ("AIRFLOW_ADMIN_PASSWORD", 'quote"inside-pw', "quotes"),
        ("AIRFLOW_ADMIN_PASSWORD", " padded-password ", "whitespace"),
        # API keys: comma-separated while rotating, each long enough
        ("LOOPLINE_SERVING_API_KEY", "k" * 40 + ",short", "key #2 is 5 characters"),
        ("LOOPLINE_SERVING_API_KEY", "k" * 40 + ",", "key #2 is 0 characters"),
        ("LOOPLINE_SERVING_API_KEY", "k" * 40 + ";" + "j" * 40, "characters other than"),
        (
            "AIRFLOW_FERNET_KEY",
            base64.urlsafe_b64encode(os.urandom(32)).decode() + ",abcd",
            "key #2 decodes to 3 bytes",
        ),
    ],
)
def test_bad_values_are_refused_with_a_reason(name: str, value: str, expected: str) -> None:
    problem = secret_problem(SPECS[name], value)
    assert problem is not None and expected in problem, problem


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOOPLINE_SERVING_API_KEY", "n" * 64 + "," + "o" * 64),  # rotating: new,old
        ("AIRFLOW_FERNET_KEY", ",".join(base64.urlsafe_b64encode(os.urandom(32)).decode() for _ in range(2))),
        ("AIRFLOW_ADMIN_PASSWORD", "Correct-Horse-Battery-9"),
        ("AIRFLOW_JWT_SECRET", base64.b64encode(os.urandom(48)).decode()),  # base64 is fine for a token
        ("REDIS_PASSWORD", "a.b_c~d-e0123456789"),
    ],
)
def test_good_values_of_other_shapes_pass(name: str, value: str) -> None:
    assert secret_problem(SPECS[name], value) is None


def test_missing_and_reused_secrets_are_named() -> None:
    env = good_env()
    del env["REDIS_PASSWORD"]
    env["SERVING_DB_PASSWORD"] = env["LOOPLINE_DB_PASSWORD"]
    problems = {p.name: p.problem for p in check_secrets(env)}
    assert problems["REDIS_PASSWORD"] == "is not set"
    assert problems["SERVING_DB_PASSWORD"] == "has the same value as LOOPLINE_DB_PASSWORD: give each its own"
    assert len(problems) == 2


def test_the_report_says_what_to_do_and_that_nothing_started() -> None:
    env = good_env() | {"AIRFLOW_FERNET_KEY": "change-me"}
    text = report(check_secrets(env))
    assert "AIRFLOW_FERNET_KEY: is still a placeholder" in text
    assert GENERATE_FERNET in text
    assert "generate-env .env.example > .env" in text and "Nothing was started." in text


def test_generate_env_fills_in_secrets_and_keeps_everything_else() -> None:
    example = ENV_EXAMPLE.read_text()
    generated = generate_env(example)
    values = read_env_file_text(generated)
    assert check_secrets(values) == []
    original = read_env_file_text(example)
    for name in set(original) - set(SPECS):  # ports, user names, the project name
        assert values[name] == original[name]
    comments = [line for line in example.splitlines() if line.startswith("#")]
    assert [line for line in generated.splitlines() if line.startswith("#")] == comments
    assert generate_env(example) != generated  # fresh every time


def read_env_file_text(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#") and "=" in line
    )


def test_read_env_file_skips_comments_and_strips_quotes(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("# comment\n\nA=1\nexport B='two'\nC=\"three\"\nNOT A LINE\n")
    assert read_env_file(path) == {"A": "1", "B": "two", "C": "three"}


def test_main_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text(ENV_EXAMPLE.read_text())
    assert main(["check", "--env-file", str(bad)]) == 1
    assert "Refusing to start: 17 secret(s)" in capsys.readouterr().err
    good = tmp_path / "good.env"
    good.write_text(generate_env(ENV_EXAMPLE.read_text()))
    assert main(["check", "--env-file", str(good)]) == 0
    assert "secrets ok" in capsys.readouterr().out


def test_the_check_runs_on_a_bare_python_without_loopline_s_dependencies(tmp_path: Path) -> None:
    """compose's check-secrets runs it from a plain Python image: standard library only."""
    env = {"PYTHONPATH": str(REPO_ROOT / "include"), **good_env()}
    done = subprocess.run(
        [sys.executable, "-S", "-m", "loopline.platform.secrets", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    env["AIRFLOW_FERNET_KEY"] = "change-me-fernet-key"
    done = subprocess.run(
        [sys.executable, "-S", "-m", "loopline.platform.secrets", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "AIRFLOW_FERNET_KEY" in done.stderr


def test_spec_kinds_have_generators_that_pass_their_own_check() -> None:
    for kind, length in (
        ("url_password", 16),
        ("password", 12),
        ("token", 32),
        ("api_keys", 32),
        ("fernet", 44),
    ):
        spec = SecretSpec("X", kind, "test", length)
        assert secret_problem(spec, spec.new_value()) is None, kind
        assert spec.generate
