"""The prediction log in a real Postgres (compose and Kubernetes): the same rows, reads and counts as the
SQLite log, several writers at once, and a writer that survives the database dropping its connection."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from local_servers import PG_USER, postgres_server

from loopline.config import Settings
from loopline.serving.prediction_log import (
    LoggedPrediction,
    PostgresPredictionLog,
    PredictionLog,
    PredictionLogUnavailable,
    open_prediction_log,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_port() -> Iterator[int]:
    with postgres_server() as port:
        yield port


@pytest.fixture
def pg_url(pg_port: int, request: pytest.FixtureRequest) -> str:
    """A fresh database per test (the log creates its own table in it)."""
    import psycopg

    name = "log_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    with psycopg.connect(
        host="127.0.0.1", port=pg_port, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql://{PG_USER}@127.0.0.1:{pg_port}/{name}"


def rows(
    n: int, start: float = 1_800_000_000.0, variant: str = "champion", version: str = "1", prefix: str = "tx"
) -> list[LoggedPrediction]:
    return [
        LoggedPrediction(
            request_id=f"r{i}",
            ts=start + i,
            transaction_id=f"{prefix}{i}",
            customer_id=f"c{i % 7}",
            inputs={"amount": 10.5 + i, "channel": "online", "note": "naïve ✓"},
            features={"txn_count_24h": float(i), "missing": float("nan")},
            score=i / (n + 1),
            decision=i % 3 == 0,
            variant=variant,
            model_version=version,
            latency_ms=1.25 * i,
        )
        for i in range(n)
    ]


def test_postgres_reads_back_exactly_what_sqlite_does(pg_url: str, tmp_path: Path) -> None:
    sqlite, postgres = PredictionLog(tmp_path / "p.db"), PostgresPredictionLog(pg_url)
    batch = rows(30) + rows(12, start=1_800_000_100.0, variant="challenger", version="2", prefix="ch")
    assert sqlite.append(batch) == postgres.append(batch) == 42
    for query in (
        {},
        {"variant": "challenger"},
        {"since": 1_800_000_010.0, "until": 1_800_000_020.0},
        {"since": "2027-01-15T08:00:05+00:00", "version": "1"},
    ):
        expected, got = sqlite.read(**query), postgres.read(**query)
        assert len(got) > 0 or not query
        text = ["id", "inputs", "features"]
        pd.testing.assert_frame_equal(got.drop(columns=text), expected.drop(columns=text), check_dtype=False)
        # JSON text parses to the same values (Postgres stores JSONB: other spacing and key order).
        for column in ("inputs", "features"):
            assert [json.loads(t) for t in got[column]] == [json.loads(t) for t in expected[column]]
    assert postgres.counts() == sqlite.counts() == {("champion", "1"): 30, ("challenger", "2"): 12}
    assert postgres.counts(since=1_800_000_025.0) == {("champion", "1"): 5, ("challenger", "2"): 12}
    assert json.loads(postgres.read(variant="champion")["features"].iloc[0]) == {
        "missing": None,
        "txn_count_24h": 0.0,
    }
    assert postgres.count() == 42
    sqlite.close()
    postgres.close()


def test_replicas_write_one_log_at_once_and_a_reader_sees_every_row(pg_url: str) -> None:
    # Each replica creates the schema as it starts: at the same moment, on an empty database.
    barrier = threading.Barrier(4)
    logs: list[PostgresPredictionLog] = []
    errors: list[BaseException] = []

    def replica(k: int) -> None:
        try:
            barrier.wait()
            log = PostgresPredictionLog(pg_url)
            logs.append(log)
            for b in range(10):
                log.append(rows(25, start=1_800_000_000.0 + 1000 * b, prefix=f"r{k}b{b}-"))
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    reader = PostgresPredictionLog(pg_url, read_only=True)
    frame = reader.read()
    assert len(frame) == 4 * 10 * 25 and frame["transaction_id"].is_unique
    assert frame["ts"].is_monotonic_increasing
    for log in logs:
        log.close()


def test_a_dropped_connection_fails_one_append_and_the_next_reconnects(pg_url: str, pg_port: int) -> None:
    import psycopg

    log = PostgresPredictionLog(pg_url)
    log.append(rows(3))
    with psycopg.connect(pg_url, autocommit=True) as admin:  # what a database restart or failover does
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'loopline' AND pid <> pg_backend_pid()"
        ).fetchall()
    assert killed == [(True,)]
    with pytest.raises(PredictionLogUnavailable):  # a 503 with Retry-After for its requests
        log.append(rows(3, prefix="lost"))  # not committed, so its requests are not acknowledged
    assert log.append(rows(3, prefix="after")) == 3
    assert sorted(log.read()["transaction_id"]) == ["after0", "after1", "after2", "tx0", "tx1", "tx2"]
    log.close()


def test_the_settings_pick_the_backend_and_bad_urls_say_what_to_write(pg_url: str, tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", prediction_log_url=pg_url)
    log = open_prediction_log(settings)
    assert isinstance(log, PostgresPredictionLog)
    log.close()
    reader = open_prediction_log(Settings(state_dir=tmp_path / "empty"), read_only=True)
    assert isinstance(reader, PredictionLog) and reader.read().empty and reader.counts() == {}
    assert not (tmp_path / "empty").exists()  # a reader creates nothing
    with pytest.raises(ValueError, match="neither postgresql://"):
        open_prediction_log(Settings(state_dir=tmp_path, prediction_log_url="mysql://u:pw@h/db"))
    unreachable = f"postgresql://{PG_USER}:topsecret@127.0.0.1:9/none"
    with pytest.raises(ConnectionError, match="cannot reach the prediction log") as caught:
        PostgresPredictionLog(unreachable, connect_timeout_s=2)
    assert "topsecret" not in str(caught.value) and ":***@" in str(caught.value)
