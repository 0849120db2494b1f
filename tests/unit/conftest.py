"""Unit-test helpers: every test leaves the process environment and working directory as it found them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Code under test sets variables itself (MLflow, Feast, the CLI); undo whatever a test leaked."""
    saved = dict(os.environ)
    cwd = os.getcwd()
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)
    if os.getcwd() != cwd:
        os.chdir(cwd)


@pytest.fixture
def clean_loopline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only LOOPLINE_STATE_DIR (from the session conftest) is set: a developer's shell cannot leak in."""
    for key in list(os.environ):
        if key.startswith("LOOPLINE_") and key != "LOOPLINE_STATE_DIR":
            monkeypatch.delenv(key)
