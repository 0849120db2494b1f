"""Issue 19, item 4: a stalled prediction-log database does not hang requests. A real stall: another
connection holds the write lock (SQLite) or an exclusive table lock (Postgres); writes give up after the
configured timeout, the request gets 503 with Retry-After, the metric counts it, and nothing unlogged is
acknowledged. Afterwards the service answers normally again."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator

import pytest
from fake_models import InstantSource
from security_kit import TX, bare_client, bare_config, postgres_database

from loopline.config import Settings
from loopline.serving.prediction_log import (
    LoggedPrediction,
    PostgresPredictionLog,
    PredictionLog,
    PredictionLogUnavailable,
)


def _row(i: int) -> LoggedPrediction:
    return LoggedPrediction(
        request_id=f"r{i}",
        ts=1_800_000_000.0 + i,
        transaction_id=f"tx{i}",
        customer_id="c",
        inputs={"amount": 1.0},
        features={},
        score=0.5,
        decision=False,
        variant="champion",
        model_version="1",
        latency_ms=1.0,
    )


@contextlib.contextmanager
def sqlite_write_lock(path) -> Iterator[None]:
    """Another connection holding SQLite's write lock (as a stuck writer or an admin's open transaction)."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_locked_sqlite_log_fails_the_append_after_its_timeout_then_fast(tmp_path) -> None:
    plog = PredictionLog(tmp_path / "p.db", timeout_s=0.3, fail_fast_s=0.6)
    assert plog.append([_row(0)]) == 1
    with sqlite_write_lock(tmp_path / "p.db"):
        started = time.monotonic()
        with pytest.raises(PredictionLogUnavailable, match="locked"):
            plog.append([_row(1)])
        waited = time.monotonic() - started
        assert 0.25 <= waited < 2.0, waited
        started = time.monotonic()
        with pytest.raises(PredictionLogUnavailable, match="fail fast"):
            plog.append([_row(2)])
        assert time.monotonic() - started < 0.1, "within fail_fast_s the database is not waited on again"
    time.sleep(0.7)
    assert plog.append([_row(3)]) == 1
    assert sorted(plog.read()["transaction_id"]) == ["tx0", "tx3"], "nothing of a failed append is stored"
    plog.close()


def _predict(client, i: int):
    return client.post("/v1/predict", json={"transactions": [{**TX, "transaction_id": f"tx_{i}"}]})


def _metric(client, cause: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'loopline_prediction_log_unavailable_total{{cause="{cause}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _stalled(client, settings: Settings):
    """(the answer to a request sent while another connection holds the log's write lock, seconds it took)."""
    assert _predict(client, 1).status_code == 200  # the table exists, the service answers
    with sqlite_write_lock(settings.state.prediction_log):
        started = time.monotonic()
        return _predict(client, 2), time.monotonic() - started


def test_a_request_during_a_sqlite_stall_gets_503_with_retry_after(tmp_path) -> None:
    config = bare_config(db_timeout_s=0.3, fail_fast_s=0.5, retry_after_s=3)
    settings = Settings(state_dir=tmp_path)
    with bare_client(tmp_path, config, source_factory=InstantSource) as client:
        stalled, waited = _stalled(client, settings)
        assert waited < 3.0
        assert stalled.status_code == 503, stalled.text
        assert stalled.headers["retry-after"] == "3"
        assert "prediction log" in stalled.json()["detail"] and "Traceback" not in stalled.text
        with sqlite_write_lock(settings.state.prediction_log):
            started = time.monotonic()
            fast = _predict(client, 3)  # within fail_fast_s: refused without waiting on the lock again
            assert fast.status_code == 503 and time.monotonic() - started < 0.25
            assert client.get("/healthz").status_code == 200
        assert _metric(client, "database") == 2.0
        time.sleep(0.6)
        assert _predict(client, 4).status_code == 200
    logged = PredictionLog(settings.state.prediction_log, read_only=True).read()
    assert sorted(logged["transaction_id"]) == ["tx_1", "tx_4"]


def test_threads_mode_bounds_the_wait_for_the_commit(tmp_path) -> None:
    """The log thread is stuck longer than the request may wait: the request gets 503 at answer_timeout_s."""
    config = bare_config(db_timeout_s=3.0, answer_timeout_s=0.4, fail_fast_s=0.0)
    config = config.model_copy(update={"batching": config.batching.model_copy(update={"mode": "threads"})})
    settings = Settings(state_dir=tmp_path)
    with bare_client(tmp_path, config, source_factory=InstantSource) as client:
        stalled, waited = _stalled(client, settings)
        assert stalled.status_code == 503 and stalled.headers["retry-after"], stalled.text
        assert 0.35 <= waited < 2.5, waited
        assert _metric(client, "answer_timeout") == 1.0


# --- Postgres: a throwaway server (tests/local_servers.py), as the Postgres integration tests start it ------


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_database("log_timeouts") as url:
        yield url


@contextlib.contextmanager
def pg_table_lock(url: str) -> Iterator[None]:
    import psycopg

    with psycopg.connect(url) as holder:
        holder.execute("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")  # held until the transaction ends
        try:
            yield
        finally:
            holder.rollback()


def test_a_locked_postgres_log_hits_its_statement_timeout(pg_url) -> None:
    import psycopg

    plog = PostgresPredictionLog(pg_url, timeout_s=0.4, fail_fast_s=0.0)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("TRUNCATE predictions")
    assert plog.append([_row(0)]) == 1
    with pg_table_lock(pg_url):
        started = time.monotonic()
        with pytest.raises(PredictionLogUnavailable, match="QueryCanceled|statement timeout"):
            plog.append([_row(1)])
        assert 0.35 <= time.monotonic() - started < 3.0
    assert plog.append([_row(2)]) == 1, "the same writer works once the lock is gone"
    assert sorted(plog.read()["transaction_id"]) == ["tx0", "tx2"]
    # Readers elsewhere (the monitor, the canary) keep no statement timeout.
    reader = PostgresPredictionLog(pg_url, read_only=True)
    with reader._connect() as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"
    plog.close()
    reader.close()


def test_a_request_during_a_postgres_stall_gets_503(tmp_path, pg_url) -> None:
    config = bare_config(db_timeout_s=0.4, fail_fast_s=0.0, retry_after_s=2)
    from fastapi.testclient import TestClient

    from loopline.serving.app import create_app

    app = create_app(
        Settings(state_dir=tmp_path, prediction_log_url=pg_url), config, source_factory=InstantSource
    )
    with TestClient(app) as client:
        assert _predict(client, 10).status_code == 200
        with pg_table_lock(pg_url):
            stalled = _predict(client, 11)
        assert stalled.status_code == 503 and stalled.headers["retry-after"] == "2", stalled.text
        assert _metric(client, "database") == 1.0
        assert _predict(client, 12).status_code == 200


def test_an_unreachable_postgres_is_a_503_too(tmp_path) -> None:
    from loopline.platform.processes import free_port

    url = f"postgresql://nobody@127.0.0.1:{free_port()}/none"  # nothing listens there
    plog = PostgresPredictionLog(url, read_only=True, connect_timeout_s=1, timeout_s=0.5)
    plog._read_only = False  # a writer whose database went away after it started
    with pytest.raises(PredictionLogUnavailable, match="cannot reach"):
        plog.append([_row(0)])
