"""Secrets: the embedded stack's (generated once, kept in the state directory) and the compose stack's
(.env, checked before anything starts: see ``check_secrets`` below).

Nothing here is a fixed default: the Airflow login and the keys shared by Airflow's components are
random per state directory, written with owner-only permissions, and stable across restarts so
tokens and encrypted connections stay valid. This module imports only the standard library at run time
(``python -m loopline.platform.secrets check`` runs in compose's check-secrets service, a plain Python
image without Loopline's dependencies).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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


# --- The compose stack's secrets (.env): refuse placeholders and malformed values --------------------------
#
# docker-compose.yaml's `${VAR:?...}` only refuses an unset or empty variable, so `cp .env.example .env`
# would start a stack with publicly known keys. The `check-secrets` service runs `python -m
# loopline.platform.secrets check` with every secret in its environment before anything else starts (all
# services wait for it to complete successfully); it names each bad variable and how to generate it. This
# part needs nothing outside the standard library: that service runs it from a plain Python image.

# Characters that survive a connection URL (user:PASSWORD@host), a Redis connection string
# ("host:port,password=...") and Feast's single-quoted YAML unescaped: RFC 3986's unreserved set.
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")
# Keys and tokens: hex, base64 and url-safe base64 (no whitespace, quotes, `$` or `#` that .env files,
# compose interpolation or HTTP headers would mangle).
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
# Values that are public knowledge: .env.example's placeholders and the usual defaults (MLflow's
# basic-auth app once created its admin as admin/password1234).
_PLACEHOLDER = re.compile(r"change[-_ ]?me|changeme|replace[-_ ]?me|placeholder|example|xxxx", re.IGNORECASE)
_KNOWN_DEFAULTS = frozenset(
    {
        "admin",
        "password",
        "password1234",
        "airflow",
        "postgres",
        "mlflow",
        "secret",
        "loopline",
        "grafana",
        "redis",
        "12345678",
        "123456789012",
    }
)

GENERATE_HEX_24 = "openssl rand -hex 24"
GENERATE_HEX_32 = "openssl rand -hex 32"
GENERATE_HEX_16 = "openssl rand -hex 16"
GENERATE_FERNET = 'python3 -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"'


@dataclass(frozen=True)
class SecretSpec:
    """One secret of the compose stack: what it is for, what a valid value looks like, how to make one."""

    name: str
    kind: str  # url_password | password | token | api_keys (comma-separated tokens) | fernet
    purpose: str
    min_length: int

    @property
    def generate(self) -> str:
        return {
            "url_password": GENERATE_HEX_24,
            "password": GENERATE_HEX_16,
            "token": GENERATE_HEX_32,
            "api_keys": GENERATE_HEX_32,
            "fernet": GENERATE_FERNET,
        }[self.kind]

    def new_value(self) -> str:
        """A fresh value that passes the check (what ``generate`` prints)."""
        if self.kind == "fernet":
            return base64.urlsafe_b64encode(os.urandom(32)).decode()
        return secrets.token_hex({"url_password": 24, "password": 16, "token": 32, "api_keys": 32}[self.kind])


# Every secret docker-compose.yaml reads (a packaging test checks the file, .env.example and this list agree).
COMPOSE_SECRETS: tuple[SecretSpec, ...] = (
    SecretSpec("POSTGRES_PASSWORD", "url_password", "Postgres superuser (postgres): database setup only", 16),
    SecretSpec(
        "AIRFLOW_DB_PASSWORD", "url_password", "Postgres role airflow: Airflow's metadata database", 16
    ),
    SecretSpec(
        "MLFLOW_DB_PASSWORD",
        "url_password",
        "Postgres role mlflow: MLflow's tracking, registry and users database",
        16,
    ),
    SecretSpec(
        "FEAST_DB_PASSWORD", "url_password", "Postgres role feast: Feast's offline store and registry", 16
    ),
    SecretSpec(
        "LOOPLINE_DB_PASSWORD",
        "url_password",
        "Postgres role loopline: Loopline's tables (owner of the prediction log and the decision history)",
        16,
    ),
    SecretSpec(
        "SERVING_DB_PASSWORD",
        "url_password",
        "Postgres role serving: insert/read the prediction log, read Feast's registry",
        16,
    ),
    SecretSpec("REDIS_PASSWORD", "url_password", "Redis (Feast online store)", 16),
    SecretSpec(
        "AIRFLOW_FERNET_KEY",
        "fernet",
        "Airflow: encrypts connections and variables (new,old while rotating)",
        44,
    ),
    SecretSpec("AIRFLOW_JWT_SECRET", "token", "Airflow: signs the tokens of the api-server and tasks", 32),
    SecretSpec("AIRFLOW_API_SECRET_KEY", "token", "Airflow: the api-server's session secret", 32),
    SecretSpec("AIRFLOW_ADMIN_PASSWORD", "password", "Airflow UI / REST API admin login", 12),
    SecretSpec("MLFLOW_FLASK_SECRET_KEY", "token", "MLflow: CSRF secret of the basic-auth app", 32),
    SecretSpec("MLFLOW_ADMIN_PASSWORD", "password", "MLflow admin (users and permissions)", 12),
    SecretSpec(
        "MLFLOW_LOOPLINE_PASSWORD",
        "url_password",
        "MLflow user loopline (Airflow and the trainer: logs runs, registers models, moves @champion)",
        16,
    ),
    SecretSpec(
        "MLFLOW_SERVING_PASSWORD", "url_password", "MLflow user serving (READ on the registered model)", 16
    ),
    # Comma-separated while rotating ("new,old"): serving accepts each, Prometheus and clients send the first.
    SecretSpec(
        "LOOPLINE_SERVING_API_KEY",
        "api_keys",
        "the prediction service's API key(s) (/v1/predict, /metrics)",
        32,
    ),
    SecretSpec("GRAFANA_ADMIN_PASSWORD", "password", "Grafana admin login", 12),
)


@dataclass(frozen=True)
class SecretProblem:
    name: str
    problem: str
    generate: str

    def __str__(self) -> str:
        return f"{self.name}: {self.problem}\n    generate one with: {self.generate}"


_URL_SAFE_BASE64 = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


def _fernet_problem(value: str) -> str | None:
    try:
        if not _URL_SAFE_BASE64.match(value):
            raise ValueError(value)
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return (
            "is not url-safe base64 (a Fernet key is 32 random bytes, url-safe base64-encoded: 44 characters)"
        )
    if len(raw) != 32:
        return (
            f"decodes to {len(raw)} bytes; a Fernet key is exactly 32 bytes, url-safe base64-encoded "
            "(44 characters ending in '=')"
        )
    return None


def secret_problem(spec: SecretSpec, value: str | None) -> str | None:
    """Why ``value`` is not acceptable for ``spec`` (None: it is)."""
    if not value:
        return "is not set"
    if value != value.strip():
        return "has leading or trailing whitespace"
    if _PLACEHOLDER.search(value) or value.lower() in _KNOWN_DEFAULTS:
        return "is still a placeholder or a well-known default"
    if spec.kind == "fernet":  # "new,old" while rotating (airflow rotate-fernet-key): each must be a key
        keys = value.split(",")
        for number, key in enumerate(keys, 1):
            problem = _fernet_problem(key)
            if problem:
                return f"key #{number} {problem}" if len(keys) > 1 else problem
        return None
    if spec.kind == "api_keys":
        keys = value.split(",")
        for number, key in enumerate(keys, 1):
            label = f"key #{number} " if len(keys) > 1 else ""
            if not key or len(key) < spec.min_length:
                return f"{label}is {len(key)} characters long; each key must have at least {spec.min_length}"
            if not _TOKEN.match(key):
                return f"{label}contains characters other than letters, digits and . _ ~ + / = - (keys are comma-separated)"
        return None
    if len(value) < spec.min_length:
        return f"is {len(value)} characters long; it must have at least {spec.min_length}"
    if spec.kind == "url_password" and not _URL_SAFE.match(value):
        return (
            "contains characters that break connection URLs (only letters, digits and . _ ~ - are allowed: "
            "it goes into user:password@host URLs and Redis/Feast strings unescaped)"
        )
    if spec.kind == "token" and not _TOKEN.match(value):
        return "contains characters other than letters, digits and . _ ~ + / = -"
    if spec.kind == "password" and any(c.isspace() or c in "\"'$`\\" for c in value):
        return "contains whitespace, quotes, backslashes or '$' (which .env files and compose mangle)"
    return None


def check_secrets(
    env: Mapping[str, str], specs: Iterable[SecretSpec] = COMPOSE_SECRETS
) -> list[SecretProblem]:
    """Every problem with the secrets in ``env``: missing, placeholder, malformed, or one value reused for
    two secrets (then a leak of one is a leak of both, and the roles are not separate any more)."""
    specs = list(specs)
    problems = []
    for spec in specs:
        problem = secret_problem(spec, env.get(spec.name))
        if problem:
            problems.append(SecretProblem(spec.name, problem, spec.generate))
    seen: dict[str, str] = {}
    for spec in specs:
        value = env.get(spec.name)
        if not value or any(p.name == spec.name for p in problems):
            continue
        if value in seen:
            problems.append(
                SecretProblem(
                    spec.name, f"has the same value as {seen[value]}: give each its own", spec.generate
                )
            )
        else:
            seen[value] = spec.name
    return problems


def report(problems: list[SecretProblem], source: str = "the environment (.env)") -> str:
    lines = [f"Refusing to start: {len(problems)} secret(s) in {source} are not usable.", ""]
    lines += [str(problem) for problem in problems]
    lines += [
        "",
        "Edit .env (next to docker-compose.yaml), or write a fresh one with every secret generated:",
        "  PYTHONPATH=include python3 -m loopline.platform.secrets generate-env .env.example > .env",
        "Nothing was started.",
    ]
    return "\n".join(lines)


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of a compose .env file (comments and blank lines skipped, quotes removed)."""
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip().removeprefix("export ").strip()] = value
    return values


def generate_env(example: str, specs: Iterable[SecretSpec] = COMPOSE_SECRETS) -> str:
    """``example`` (the text of .env.example) with every secret replaced by a freshly generated value."""
    by_name = {spec.name: spec for spec in specs}
    out = []
    for line in example.splitlines():
        name, sep, _ = line.partition("=")
        spec = by_name.get(name.strip()) if sep and not line.lstrip().startswith("#") else None
        out.append(f"{name}={spec.new_value()}" if spec else line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m loopline.platform.secrets",
        description="Check or generate the compose stack's secrets.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check the secrets in the environment (or in --env-file)")
    check.add_argument("--env-file", type=Path, default=None, help="read NAME=value lines from this file")
    gen = sub.add_parser(
        "generate-env", help="print EXAMPLE with every secret generated (redirect into .env)"
    )
    gen.add_argument("example", type=Path, help="the .env.example to fill in")
    args = parser.parse_args(argv)
    if args.command == "generate-env":
        sys.stdout.write(generate_env(args.example.read_text()))
        return 0
    env = read_env_file(args.env_file) if args.env_file else dict(os.environ)
    problems = check_secrets(env)
    if problems:
        print(
            report(problems, str(args.env_file) if args.env_file else "the environment (.env)"),
            file=sys.stderr,
        )
        return 1
    print(f"secrets ok: {len(COMPOSE_SECRETS)} checked, none is a placeholder, malformed or reused")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
