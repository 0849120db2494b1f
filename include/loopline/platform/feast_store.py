"""Open Loopline's Feast feature store with the settings' paths.

Which ``feature_store.yaml``: the repo's ``feature_store.yaml`` (embedded: duckdb over parquet, SQLite
online, file registry) unless ``FEAST_FS_YAML_FILE_PATH`` names another — Feast's own switch, which the
``feast`` CLI reads too — e.g. ``feature_store.production.yaml`` (Postgres offline and registry, Redis
online). A relative path is taken inside the use case's ``feature_repo/<use case>/``. The repo's definitions read the same
choice (``offline_store_type``) so their sources match the configured offline store.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from loopline.config import Settings

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig
    from feast.repo_contents import RepoContents

YAML_ENV = "FEAST_FS_YAML_FILE_PATH"  # feast.constants.FEAST_FS_YAML_FILE_PATH_ENV_NAME
DEFAULT_YAML = "feature_store.yaml"
PRODUCTION_YAML = "feature_store.production.yaml"
# Feast expands ${VAR} with os.path.expandvars, which leaves an unset one in place as literal text
# (a registry path "${X}", a host "${X}"): the failure shows up far away, so check first.
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class FeastConfigError(RuntimeError):
    """A feature_store.yaml cannot be used as it stands (missing file or environment variables)."""


def feast_yaml_path(repo_dir: Path) -> Path:
    """The feature_store.yaml in use: ``$FEAST_FS_YAML_FILE_PATH`` (relative to ``repo_dir``) or the
    repo's default one."""
    configured = os.environ.get(YAML_ENV, "").strip()
    if not configured:
        return repo_dir / DEFAULT_YAML
    path = Path(configured).expanduser()
    return path if path.is_absolute() else repo_dir / path


def missing_env_vars(yaml_text: str) -> list[str]:
    """The ``${VAR}`` references outside comments that the environment does not set."""
    content = "\n".join(
        line.split(" #", 1)[0] for line in yaml_text.splitlines() if not line.lstrip().startswith("#")
    )
    return sorted({name for name in _ENV_REFERENCE.findall(content) if name not in os.environ})


def load_feast_config(repo_dir: Path, yaml_path: Path | None = None) -> RepoConfig:
    """Parse and validate a feature_store.yaml with its ``${VAR}`` values filled from the environment
    (as Feast does), failing clearly on a missing file or variable. Connects to nothing."""
    from feast.repo_config import load_repo_config

    path = yaml_path or feast_yaml_path(repo_dir)
    if not path.is_file():
        raise FeastConfigError(f"Feast config {path} does not exist: check ${YAML_ENV} or the feature repo")
    missing = missing_env_vars(path.read_text())
    if missing:
        raise FeastConfigError(
            f"{path.name} needs environment variable(s) {', '.join(missing)}: set them "
            f"(the comment at the top of {path} says what each one holds)"
        )
    config = load_repo_config(repo_dir, path)
    # RepoConfig builds the store configs lazily: touch them so a bad value fails here, not mid-run.
    _ = config.registry, config.offline_store, config.online_store
    return config


def offline_store_type(repo_dir: Path) -> str:
    """``offline_store.type`` of the feature_store.yaml in use (Feast's default when absent); the
    feature repo picks its data sources by it."""
    import yaml

    path = feast_yaml_path(repo_dir)
    if not path.is_file():
        raise FeastConfigError(f"Feast config {path} does not exist: check ${YAML_ENV} or the feature repo")
    offline = (yaml.safe_load(path.read_text()) or {}).get("offline_store") or {}
    return str(offline.get("type", "dask")) if isinstance(offline, dict) else str(offline)


def feast_config(settings: Settings) -> RepoConfig:
    """The RepoConfig of the use case's Feast repo (``feature_repo/<use case>/``), its ``${LOOPLINE_FEAST_*}`` paths filled from settings
    (production values come from the environment). Connects to nothing."""
    settings.state.ensure()
    for key in ("LOOPLINE_FEAST_REGISTRY", "LOOPLINE_FEAST_ONLINE_STORE", "LOOPLINE_FEAST_OFFLINE_DIR"):
        os.environ[key] = settings.env()[key]
    return load_feast_config(settings.feature_repo_dir)


def feature_store(settings: Settings) -> FeatureStore:
    """The FeatureStore of the use case's Feast repo, its ``${LOOPLINE_FEAST_*}`` paths filled from settings."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feature_repo_dir), config=feast_config(settings))


def apply_feature_repo(settings: Settings) -> FeatureStore:
    """``feast apply`` for the use case's Feast repo: registers every definition (idempotent)."""
    from feast.repo_operations import apply_total_with_repo_instance

    store = feature_store(settings)
    repo = parse_feature_repo(settings.feature_repo_dir)
    apply_total_with_repo_instance(store, store.project, store.registry, repo, skip_source_validation=True)
    return store


def parse_feature_repo(repo_dir: Path) -> RepoContents:
    """The repo's Feast objects, built afresh for the current environment (paths, offline store kind)."""
    from feast.repo_operations import parse_repo

    with _inside(repo_dir):
        return parse_repo(repo_dir)


@contextlib.contextmanager
def _inside(repo_dir: Path) -> Iterator[None]:
    """Feast imports repo files as modules named relative to the working directory (like `feast apply`
    run from the repo): enter it for the parse, then restore the process's cwd, sys.path and modules.

    The repo's modules are dropped from ``sys.modules`` first: Feast's ``import_module`` would reuse a
    module imported under another state dir or feature_store.yaml and register stale sources.
    """
    previous_cwd, previous_path = os.getcwd(), list(sys.path)
    names = [p.stem for p in repo_dir.glob("*.py")]
    previous_modules = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    os.chdir(repo_dir)
    sys.path.insert(0, str(repo_dir))
    try:
        yield
    finally:
        os.chdir(previous_cwd)
        sys.path[:] = previous_path
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(previous_modules)
