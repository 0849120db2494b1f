"""The production feature store for real: Postgres offline store and SQL registry, Redis online store.

A throwaway Postgres and Redis are started on free ports of 127.0.0.1 (Debian packages; the fixture
skips with the apt line when they are missing), the one feature repo is applied under
``feature_store.production.yaml``, and a small simulated world goes through the production path —
aggregates written to Postgres, materialised into Redis, a training set built by Feast's Postgres
join, online lookups and the skew check — and is compared with the embedded (parquet, duckdb, SQLite)
path on the same world. Equal values are the point: one definition, two deployments, no skew.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from local_servers import APT_LINE, PG_USER, postgres_server

from loopline.config import Settings
from loopline.data.ingest import publish
from loopline.features.curated import curated_time_range
from loopline.features.historical import historical_features
from loopline.features.materialize import materialize, offline_sink
from loopline.features.offline_sink import PostgresSink
from loopline.features.online import OnlineFeatures
from loopline.features.skew import check_skew
from loopline.features.training_sets import build_training_set
from loopline.platform.feast_store import PRODUCTION_YAML, YAML_ENV, apply_feature_repo, feature_store
from loopline.platform.processes import free_port
from loopline.usecases.fraud.features.tables import TABLES
from loopline.usecases.fraud.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.integration

PG_PASSWORD = "s3cret-pw"
OFFLINE_DB, REGISTRY_DB = "features", "feast_registry"


# --- servers -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    pg_port: int
    redis_port: int

    def env(self) -> dict[str, str]:
        """The variables feature_store.production.yaml reads, pointing at these servers."""
        return {
            YAML_ENV: PRODUCTION_YAML,
            "LOOPLINE_FEAST_REGISTRY_URL": f"postgresql+psycopg://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{self.pg_port}/{REGISTRY_DB}",
            "LOOPLINE_FEAST_PG_HOST": "127.0.0.1",
            "LOOPLINE_FEAST_PG_PORT": str(self.pg_port),
            "LOOPLINE_FEAST_PG_DATABASE": OFFLINE_DB,
            "LOOPLINE_FEAST_PG_USER": PG_USER,
            "LOOPLINE_FEAST_PG_PASSWORD": PG_PASSWORD,
            "LOOPLINE_FEAST_PG_SSLMODE": "disable",
            "LOOPLINE_FEAST_REDIS": f"127.0.0.1:{self.redis_port}",
        }


@contextlib.contextmanager
def _redis(root: Path) -> Iterator[int]:
    """A Redis without persistence on a free port of 127.0.0.1, stopped by PID afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(f"redis-server not found: {APT_LINE}")
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    root = Path(tempfile.mkdtemp(prefix="loopline-prod-store-"))
    root.chmod(0o755)  # the Postgres server user must reach its own folder inside
    (root / "pg").mkdir()
    try:
        with postgres_server(root / "pg") as pg_port, _redis(root) as redis_port:
            import psycopg

            with psycopg.connect(
                host="127.0.0.1", port=pg_port, user=PG_USER, dbname="postgres", autocommit=True
            ) as conn:
                conn.execute(f"ALTER USER {PG_USER} PASSWORD '{PG_PASSWORD}'")
                for database in (OFFLINE_DB, REGISTRY_DB):
                    conn.execute(f"CREATE DATABASE {database}")
                # The setup feature_store.production.yaml recommends for Feast's point-in-time SQL.
                conn.execute(f"ALTER ROLE {PG_USER} IN DATABASE {OFFLINE_DB} SET enable_nestloop = off")
            yield Servers(pg_port=pg_port, redis_port=redis_port)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) variables; restore the previous values afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in values.items():
            if value is None:
                patch.delenv(key, raising=False)
            else:
                patch.setenv(key, value)
        yield


# --- the same world through both deployments ---------------------------------------------------------


def _published(state: Path, sim) -> Settings:
    settings = Settings(state_dir=state)
    settings.state.ensure()
    publish(settings, sim.transactions, "transactions", "sim")
    publish(settings, sim.labels, "labels", "sim")
    return settings


def _probe(sim, n: int = 40) -> list[dict]:
    """Transactions to score: each sampled customer's newest one, replayed just after everything."""
    tx = sim.transactions.sort_values("event_timestamp").groupby("customer_id", observed=True).tail(1)
    probe = tx.sample(n=min(n, len(tx)), random_state=3)
    at = pd.Timestamp(sim.transactions["event_timestamp"].max()) + pd.Timedelta(seconds=1)
    return [{**row, "event_timestamp": at} for row in probe.to_dict("records")]


@pytest.fixture(scope="module")
def runs(servers, tmp_path_factory):
    sim = simulate(SimulationConfig(days=10, n_customers=120, seed=5))
    probe = _probe(sim)
    local = _published(tmp_path_factory.mktemp("local"), sim)
    prod = _published(tmp_path_factory.mktemp("production"), sim)
    span = curated_time_range(local)
    timings: dict[str, float] = {}

    with _environment({key: None for key in servers.env()}):  # the embedded store: the reference
        materialize(local, *span)
        local_set = build_training_set(local, local.state.root / "train.parquet")
        local_online = OnlineFeatures(local).lookup(probe)
        local_tables = {
            t.name: pd.read_parquet(local.state.feast_offline_dir / f"{t.name}.parquet") for t in TABLES
        }

    with _environment(servers.env()):
        started = time.perf_counter()
        store = apply_feature_repo(prod)  # `feast apply` into the SQL registry
        timings["apply_s"] = time.perf_counter() - started
        started = time.perf_counter()
        result = materialize(prod, *span)  # aggregates -> Postgres, then Postgres -> Redis
        timings["materialize_s"] = time.perf_counter() - started
        sink = offline_sink(prod)
        prod_tables = {t.name: sink.read(t.name) for t in TABLES}
        # Stale stored rows, then an overlapping re-run of the later half: its rows must be replaced
        # (upsert, not append) and the earlier ones kept; then the whole interval again.
        later = span[0] + (span[1] - span[0]) / 2
        with sink.connect() as conn:
            stale = conn.execute("UPDATE customer_velocity SET cust_tx_count_1h = -1").rowcount
        partial = materialize(prod, later, span[1])
        after_partial = sink.read("customer_velocity")
        again = materialize(prod, *span)
        prod_tables_again = {t.name: sink.read(t.name) for t in TABLES}
        started = time.perf_counter()
        prod_set = build_training_set(prod, prod.state.root / "train.parquet")
        timings["training_set_s"] = time.perf_counter() - started
        prod_online = OnlineFeatures(prod).lookup(probe)
        skew = check_skew(prod, sample=50)
        views = {v.name: type(v.batch_source).__name__ for v in feature_store(prod).list_feature_views()}
    print(f"production feature store timings: {timings}")
    return {
        "sim": sim,
        "sink": sink,
        "store_project": store.project,
        "views": views,
        "local_set": local_set,
        "prod_set": prod_set,
        "local_frame": pd.read_parquet(local_set.path),
        "prod_frame": pd.read_parquet(prod_set.path),
        "local_online": local_online,
        "prod_online": prod_online,
        "skew": skew,
        "local_tables": local_tables,
        "prod_tables": prod_tables,
        "prod_tables_again": prod_tables_again,
        "result": result,
        "again": again,
        "partial": partial,
        "stale": stale,
        "later": later,
        "after_partial": after_partial,
    }


def test_the_registry_in_postgres_holds_the_repo_with_postgres_sources(runs):
    assert runs["store_project"] == "loopline"
    assert sorted(runs["views"]) == sorted(t.name for t in TABLES)
    assert set(runs["views"].values()) == {"PostgreSQLSource"}
    assert isinstance(runs["sink"], PostgresSink)


def test_the_aggregates_in_postgres_equal_the_parquet_tables_and_rewrites_change_nothing(runs):
    for table in TABLES:
        local, prod = runs["local_tables"][table.name], runs["prod_tables"][table.name]
        assert len(prod) > 0
        pd.testing.assert_frame_equal(prod, local.reset_index(drop=True), check_exact=True)
        pd.testing.assert_frame_equal(runs["prod_tables_again"][table.name], prod, check_exact=True)
    assert (
        runs["again"].offline_rows
        == runs["result"].offline_rows
        == {t.name: len(runs["local_tables"][t.name]) for t in TABLES}
    )


def test_an_overlapping_rerun_replaces_the_recomputed_rows_and_keeps_the_others(runs):
    velocity = runs["local_tables"]["customer_velocity"].reset_index(drop=True)
    after = runs["after_partial"]
    assert runs["stale"] == len(velocity) == len(after)  # every row went stale; none was added
    assert runs["partial"].offline_rows == runs["result"].offline_rows
    recomputed = (after["event_timestamp"] >= runs["later"]).to_numpy()
    assert 0 < recomputed.sum() < len(after)
    assert (after.loc[~recomputed, "cust_tx_count_1h"] == -1).all()
    pd.testing.assert_frame_equal(after[recomputed], velocity[recomputed], check_exact=True)


def test_the_training_set_from_postgres_equals_the_local_one_row_for_row(runs):
    local, prod, sim = runs["local_frame"], runs["prod_frame"], runs["sim"]
    assert runs["prod_set"].rows == len(prod) == len(sim.transactions) == runs["local_set"].rows
    assert runs["prod_set"].labelled_rows == runs["local_set"].labelled_rows
    assert runs["prod_set"].features == runs["local_set"].features
    assert list(prod.columns) == list(local.columns)
    features = runs["local_set"].features
    assert prod[features].notna().to_numpy().sum() > 0.5 * prod[features].size, (
        "mostly real values, not nulls"
    )
    pd.testing.assert_frame_equal(prod, local, check_dtype=False, check_exact=False, rtol=1e-12, atol=1e-12)


def test_online_lookups_from_redis_equal_the_local_store_and_the_skew_check_is_clean(runs):
    local, prod = runs["local_online"], runs["prod_online"]
    assert len(prod) == len(local) > 0
    assert prod == local
    assert any(row["has_customer_history"] for row in prod)
    skew = runs["skew"]
    assert skew.compared > 0 and skew.mismatches == 0, skew.examples


def test_the_chunked_feast_join_on_postgres_equals_one_query(servers, runs, tmp_path):
    sample = runs["sim"].transactions.sample(n=300, random_state=1)
    with _environment(servers.env()):
        store = feature_store(Settings(state_dir=tmp_path))
        whole = historical_features(store, sample)  # engine="auto": not parquet -> Feast; one chunk here
        chunked = historical_features(store, sample, engine="feast", chunk_rows=64)  # 5 queries
    assert sorted(whole["transaction_id"]) == sorted(sample["transaction_id"])

    def by_id(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.sort_values("transaction_id").reset_index(drop=True)[sorted(frame.columns)]

    pd.testing.assert_frame_equal(by_id(chunked), by_id(whole), check_exact=True)
