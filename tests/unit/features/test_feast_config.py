"""The production feature_store.yaml (Postgres offline + SQL registry, Redis online) and how the one
feature repo follows whichever feature_store.yaml is selected. Nothing here connects to a server."""

from __future__ import annotations

import re

import pytest
from feast import FileSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

from loopline.config import Settings
from loopline.platform.feast_store import (
    PRODUCTION_YAML,
    YAML_ENV,
    FeastConfigError,
    feast_yaml_path,
    feature_store,
    load_feast_config,
    offline_store_type,
    parse_feature_repo,
)

PRODUCTION_ENV = {
    "LOOPLINE_FEAST_REGISTRY_URL": "postgresql+psycopg://feast:s3cret@registry-db:5432/feast_registry",
    "LOOPLINE_FEAST_PG_HOST": "offline-db",
    "LOOPLINE_FEAST_PG_PORT": "6543",
    "LOOPLINE_FEAST_PG_DATABASE": "features",
    "LOOPLINE_FEAST_PG_USER": "loopline",
    "LOOPLINE_FEAST_PG_PASSWORD": "12345",  # digits only: must still reach Feast as a string
    "LOOPLINE_FEAST_PG_SSLMODE": "disable",
    "LOOPLINE_FEAST_REDIS": "redis:6379,password=hunter2,db=1",
}


@pytest.fixture
def repo_dir():
    return Settings().feature_repo_dir


@pytest.fixture
def production_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in PRODUCTION_ENV.items():
        monkeypatch.setenv(key, value)
    return PRODUCTION_ENV


def test_the_production_yaml_is_a_valid_feast_config_with_the_env_values_filled_in(repo_dir, production_env):
    config = load_feast_config(repo_dir, repo_dir / PRODUCTION_YAML)
    assert config.project == "loopline"
    assert config.registry.registry_type == "sql"
    assert config.registry.path == production_env["LOOPLINE_FEAST_REGISTRY_URL"]
    offline = config.offline_store
    assert offline.type == "postgres" and offline.host == "offline-db" and offline.port == 6543
    assert (offline.database, offline.user, offline.password, offline.sslmode) == (
        "features",
        "loopline",
        "12345",
        "disable",
    )
    assert config.online_store.type == "redis"
    assert config.online_store.connection_string == production_env["LOOPLINE_FEAST_REDIS"]


def test_every_variable_the_production_yaml_reads_is_documented_at_its_top(repo_dir):
    text = (repo_dir / PRODUCTION_YAML).read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    used = set(re.findall(r"\$\{(\w+)\}", body))
    assert used == set(PRODUCTION_ENV)
    assert all(re.search(rf"^#\s+{name}\s+\S", header, re.MULTILINE) for name in used), "each one explained"


@pytest.mark.parametrize("unset", ["LOOPLINE_FEAST_PG_PASSWORD", "LOOPLINE_FEAST_REDIS"])
def test_a_missing_env_var_is_a_clear_error_naming_it(repo_dir, production_env, monkeypatch, unset):
    monkeypatch.delenv(unset)
    with pytest.raises(FeastConfigError, match=unset) as error:
        load_feast_config(repo_dir, repo_dir / PRODUCTION_YAML)
    assert PRODUCTION_YAML in str(error.value)
    assert "LOOPLINE_FEAST_PG_HOST" not in str(error.value), "only what is missing is named"


def test_the_selected_yaml_follows_feasts_own_variable(repo_dir, monkeypatch, tmp_path):
    monkeypatch.delenv(YAML_ENV, raising=False)
    assert feast_yaml_path(repo_dir) == repo_dir / "feature_store.yaml"
    assert offline_store_type(repo_dir) == "duckdb"
    monkeypatch.setenv(YAML_ENV, PRODUCTION_YAML)  # relative: inside the feature repo
    assert feast_yaml_path(repo_dir) == repo_dir / PRODUCTION_YAML
    assert offline_store_type(repo_dir) == "postgres"
    monkeypatch.setenv(YAML_ENV, str(tmp_path / "nowhere.yaml"))
    with pytest.raises(FeastConfigError, match="nowhere.yaml"):
        offline_store_type(repo_dir)


def _sources(repo) -> dict[str, object]:
    return {view.name: view.batch_source for view in repo.feature_views}


def test_the_repo_builds_postgres_sources_under_the_production_config(repo_dir, production_env, monkeypatch):
    monkeypatch.setenv(YAML_ENV, PRODUCTION_YAML)
    repo = parse_feature_repo(repo_dir)
    sources = _sources(repo)
    assert set(sources) == {"customer_velocity", "merchant_stats", "customer_device", "customer_channel"}
    for name, source in sources.items():
        assert isinstance(source, PostgreSQLSource) and source.get_table_query_string() == name
        assert source.timestamp_field == "event_timestamp"
    assert [s.name for s in repo.feature_services] == ["fraud_detection_v1"]
    assert [v.name for v in repo.on_demand_feature_views] == ["transaction_context"]
    # Back to the embedded config: a fresh parse, not the modules imported a moment ago.
    monkeypatch.delenv(YAML_ENV)
    assert all(isinstance(s, FileSource) for s in _sources(parse_feature_repo(repo_dir)).values())


def test_the_feature_store_opens_under_the_production_config_without_connecting(
    production_env, monkeypatch, tmp_path
):
    monkeypatch.setenv(YAML_ENV, PRODUCTION_YAML)
    store = feature_store(Settings(state_dir=tmp_path))
    assert store.config.offline_store.type == "postgres" and store.config.online_store.type == "redis"
    monkeypatch.delenv("LOOPLINE_FEAST_PG_HOST")
    with pytest.raises(FeastConfigError, match="LOOPLINE_FEAST_PG_HOST"):
        feature_store(Settings(state_dir=tmp_path))
