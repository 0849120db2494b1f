"""The deployment tests run against the serving tests' world (Feast store + SQLite MLflow with a trained
model): its fixture is reused, not copied. tests/unit is on sys.path; the serving helpers are imported
by name, as the serving tests do."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loopline.platform.mlflow_util import mlflow_client

_SERVING_TESTS = str(Path(__file__).resolve().parents[1] / "serving")
if _SERVING_TESTS not in sys.path:
    sys.path.insert(0, _SERVING_TESTS)

from serving.conftest import serving_world  # noqa: E402,F401  (the session fixture itself)


@pytest.fixture(scope="module")
def registry(serving_world):  # noqa: F811 (the fixture imported above)
    """The world's MLflow registry, without canary aliases and traffic tags before and after the module."""
    from canary_testkit import reset

    client = mlflow_client(serving_world.tracking_uri)
    reset(client)
    yield client
    reset(client)
