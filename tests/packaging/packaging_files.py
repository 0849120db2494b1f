"""Shared parsing for the packaging checks: the compose file, the Helm values, the Dockerfiles.

Nothing here needs a Docker engine or a cluster: the files are parsed, linted and schema-checked.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
HELM_VALUES = REPO_ROOT / "deploy" / "helm" / "airflow-values.yaml"
DOCKERFILES = sorted((REPO_ROOT / "docker").glob("*/Dockerfile"))
# `${NAME}`, `${NAME:-default}`, `${NAME:?error}` (compose interpolation); `$$` escapes are not variables.
_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    """The compose file as YAML (merge keys resolved, ``${...}`` left as written)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*_strings(key), *_strings(value))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def compose_variables() -> dict[str, str | None]:
    """Every variable the compose file interpolates: name -> its ``:?`` error text (None if optional).

    Read from the parsed YAML, so a ``${...}`` in a comment is not a variable.
    """
    found: dict[str, str | None] = {}
    for name, kind, text in _VARIABLE.findall("\n".join(_strings(compose()))):
        if kind == ":?":
            found[name] = text
        else:
            found.setdefault(name, None)
    return found


def env_example() -> dict[str, str]:
    lines = (line.strip() for line in ENV_EXAMPLE.read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def service_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def helm_values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def venv_tool(name: str) -> str | None:
    """A command on PATH or next to this interpreter (a venv's bin is not on PATH under .venv/bin/pytest)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None
