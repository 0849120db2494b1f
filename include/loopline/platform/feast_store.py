"""Open Loopline's Feast feature store with the settings' paths."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from loopline.config import Settings

if TYPE_CHECKING:
    from feast import FeatureStore


def feature_store(settings: Settings) -> FeatureStore:
    """The FeatureStore of ``feature_repo/``, its ``${LOOPLINE_FEAST_*}`` paths filled from settings."""
    from feast import FeatureStore

    settings.state.ensure()
    for key in ("LOOPLINE_FEAST_REGISTRY", "LOOPLINE_FEAST_ONLINE_STORE", "LOOPLINE_FEAST_OFFLINE_DIR"):
        os.environ[key] = settings.env()[key]
    return FeatureStore(repo_path=str(settings.feature_repo_dir))


def apply_feature_repo(settings: Settings) -> FeatureStore:
    """``feast apply`` for ``feature_repo/``: registers every definition (idempotent)."""
    from feast.repo_operations import apply_total_with_repo_instance, parse_repo

    store = feature_store(settings)
    with _inside(settings.feature_repo_dir):
        repo = parse_repo(settings.feature_repo_dir)
    apply_total_with_repo_instance(
        store, store.project, store.registry, repo, skip_source_validation=True
    )
    return store


@contextlib.contextmanager
def _inside(repo_dir: Path) -> Iterator[None]:
    """Feast imports repo files as modules named relative to the working directory (like `feast apply`
    run from the repo): enter it for the parse, then restore the process's cwd and sys.path."""
    previous_cwd, previous_path = os.getcwd(), list(sys.path)
    os.chdir(repo_dir)
    sys.path.insert(0, str(repo_dir))
    try:
        yield
    finally:
        os.chdir(previous_cwd)
        sys.path[:] = previous_path
