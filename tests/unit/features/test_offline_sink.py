"""Choosing and shaping the aggregate writer per offline store. No server here: the Postgres sink runs
for real in tests/integration/test_production_feature_store.py."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from psycopg.conninfo import conninfo_to_dict

from loopline.config import Settings
from loopline.data.ingest import publish
from loopline.features.materialize import offline_sink
from loopline.features.offline_refresh import refresh_aggregates
from loopline.features.offline_sink import (
    OfflineSink,
    ParquetSink,
    PostgresSink,
    _csv_chunks,
    column_types,
    create_table_sql,
    postgres_conninfo,
    sink_for,
)
from loopline.platform.feast_store import PRODUCTION_YAML, YAML_ENV
from loopline.usecases.fraud.features.aggregates import compute_aggregates
from loopline.usecases.fraud.features.tables import CUSTOMER_DEVICE, CUSTOMER_VELOCITY, TABLES
from loopline.usecases.fraud.simulator import SimulationConfig, simulate

PG = SimpleNamespace(
    type="postgres",
    host="db.internal",
    port=6543,
    database="features",
    db_schema="feast",
    user="loopline",
    password="p w'\"x",
    sslmode="require",
    sslkey_path=None,
    sslcert_path=None,
    sslrootcert_path=None,
)


def test_the_sink_follows_the_offline_store_type(tmp_path):
    assert sink_for(SimpleNamespace(type="duckdb"), tmp_path) == ParquetSink(tmp_path)
    assert sink_for(SimpleNamespace(type="file"), tmp_path) == ParquetSink(tmp_path)
    assert isinstance(sink_for(PG, tmp_path), PostgresSink)
    with pytest.raises(ValueError, match="snowflake"):
        sink_for(SimpleNamespace(type="snowflake"), tmp_path)


def test_the_postgres_connection_is_feasts_server_and_schema_and_hides_the_password():
    params = conninfo_to_dict(postgres_conninfo(PG))
    assert params["host"] == "db.internal" and params["port"] == "6543" and params["dbname"] == "features"
    assert (
        params["user"] == "loopline" and params["password"] == PG.password and params["sslmode"] == "require"
    )
    assert params["options"] == "-c search_path=feast,public"  # as Feast's own connections
    assert PG.password not in repr(PostgresSink(postgres_conninfo(PG)))


def test_the_tables_key_is_entity_plus_time_and_every_column_has_a_postgres_type():
    sql = create_table_sql(CUSTOMER_DEVICE)
    assert 'PRIMARY KEY ("customer_id", "device_id", "event_timestamp")' in sql
    for table in TABLES:
        types = column_types(table)
        assert list(types) == table.columns
        assert types["event_timestamp"] == "timestamp with time zone"
        assert {types[c] for c in table.features} <= {"bigint", "double precision"}


def test_the_copy_text_round_trips_values_nulls_and_timestamps_exactly():
    sim = simulate(SimulationConfig(days=3, n_customers=20, seed=2))
    rows = compute_aggregates(sim.transactions)[CUSTOMER_VELOCITY.name]
    rows.loc[0, "cust_amount_std_30d"] = np.nan
    text = "".join(_csv_chunks(rows))
    back = pd.read_csv(
        io.StringIO(text),
        header=None,
        names=CUSTOMER_VELOCITY.columns,
        keep_default_na=True,
        float_precision="round_trip",
    )
    assert len(back) == len(rows) and pd.isna(back.loc[0, "cust_amount_std_30d"])
    for column in CUSTOMER_VELOCITY.features:
        np.testing.assert_array_equal(back[column].to_numpy(), rows[column].to_numpy())  # bit for bit
    stamps = pd.to_datetime(back["event_timestamp"], utc=True, format="ISO8601")
    assert (stamps.astype("datetime64[us, UTC]") == rows["event_timestamp"]).all()


def test_refresh_writes_through_whatever_sink_it_is_given(tmp_path):
    class Recorder:
        def __init__(self):
            self.tables = {}

        def write(self, tables):
            self.tables = tables
            return {name: len(rows) for name, rows in tables.items()}

    settings = Settings(state_dir=tmp_path)
    settings.state.ensure()
    sim = simulate(SimulationConfig(days=4, n_customers=30, seed=4))
    publish(settings, sim.transactions, "transactions", "sim")
    start = sim.transactions["event_timestamp"].min().floor("D") + pd.Timedelta(days=2)
    end = start + pd.Timedelta(days=1)
    recorder = Recorder()
    assert isinstance(recorder, OfflineSink)
    counts = refresh_aggregates(settings.state.curated, recorder, start, end)
    assert set(counts) == {t.name for t in TABLES} and sum(counts.values()) > 0
    in_day = sim.transactions["event_timestamp"].between(start, end, inclusive="left").sum()
    assert counts[CUSTOMER_VELOCITY.name] <= in_day
    assert (
        recorder.tables[CUSTOMER_VELOCITY.name]["event_timestamp"].between(start, end, inclusive="left").all()
    )
    # A folder still means the parquet files: the embedded store's behaviour is unchanged.
    assert refresh_aggregates(settings.state.curated, tmp_path / "offline", start, end) == counts


def test_the_settings_pick_parquet_embedded_and_postgres_in_production(tmp_path, monkeypatch):
    settings = Settings(state_dir=tmp_path)
    monkeypatch.delenv(YAML_ENV, raising=False)
    assert offline_sink(settings) == ParquetSink(settings.state.feast_offline_dir)
    for key, value in {
        "LOOPLINE_FEAST_REGISTRY_URL": "postgresql+psycopg://feast:pw@registry-db:5432/feast_registry",
        "LOOPLINE_FEAST_PG_HOST": "offline-db",
        "LOOPLINE_FEAST_PG_PORT": "6543",
        "LOOPLINE_FEAST_PG_DATABASE": "features",
        "LOOPLINE_FEAST_PG_USER": "loopline",
        "LOOPLINE_FEAST_PG_PASSWORD": "12345",
        "LOOPLINE_FEAST_PG_SSLMODE": "disable",
        "LOOPLINE_FEAST_REDIS": "redis:6379",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(YAML_ENV, PRODUCTION_YAML)
    sink = offline_sink(settings)
    assert isinstance(sink, PostgresSink)
    params = conninfo_to_dict(sink.conninfo)
    assert (params["host"], params["port"], params["password"]) == ("offline-db", "6543", "12345")
