"""The decision history: append-only, ordered, durable, shared by concurrent writers — in SQLite (one
machine) and in a real Postgres (LOOPLINE_HISTORY_URL: Kubernetes, where task pods share no disk)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from local_servers import PG_USER, postgres_server

from loopline.config import Settings
from loopline.lineage import history


@pytest.fixture(scope="module")
def postgres_port() -> Iterator[int]:
    with postgres_server() as port:
        yield port


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def settings(request, tmp_path) -> Settings:
    if request.param == "sqlite":
        return Settings(state_dir=tmp_path / "state")
    import psycopg

    port = request.getfixturevalue("postgres_port")
    name = "history_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]
    with psycopg.connect(
        host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return Settings(
        state_dir=tmp_path / "state", history_url=f"postgresql://{PG_USER}@127.0.0.1:{port}/{name}"
    )


def test_no_history_yet_reads_as_empty_and_creates_nothing(settings):
    assert history.read(settings) == []
    assert history.last(settings, {"promoted"}) is None
    assert not settings.state.history_db.exists()


def test_events_come_back_in_order_with_their_details(settings):
    history.record(settings, "gate_passed", version=3, reason="beats the champion", pr_auc=0.61)
    history.record(settings, "canary_started", version="3", traffic=0.05)
    events = history.read(settings)
    assert [e.kind for e in events] == ["gate_passed", "canary_started"]
    assert events[0].version == "3" and events[0].details == {"pr_auc": 0.61}
    assert events[0].reason == "beats the champion"
    assert events[0].id < events[1].id


def test_filters_by_kind_time_and_limit(settings):
    old = datetime.now(UTC) - timedelta(days=2)
    history.record(settings, "retrain_requested", reason="drift", at=old)
    history.record(settings, "retrain_suppressed", reason="cooldown")
    history.record(settings, "retrain_requested", reason="drift again")
    assert [e.reason for e in history.read(settings, kinds={"retrain_requested"})] == ["drift", "drift again"]
    assert [e.reason for e in history.read(settings, since=old + timedelta(hours=1))] == [
        "cooldown",
        "drift again",
    ]
    assert [e.reason for e in history.read(settings, limit=2)] == ["cooldown", "drift again"]
    assert history.last(settings, {"retrain_requested", "retrain_suppressed"}).reason == "drift again"


def test_an_unknown_kind_is_refused_with_the_known_ones_listed(settings):
    with pytest.raises(history.UnknownEventKind, match="promoted"):
        history.record(settings, "promotted", version=1)
    assert history.read(settings) == []


def _append_many(state_dir: str, history_url: str | None, worker: int) -> None:
    settings = Settings(state_dir=state_dir, history_url=history_url)
    for i in range(25):
        history.record(settings, "drift_checked", worker=worker, i=i)


def test_concurrent_writers_lose_nothing(settings):
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_append_many, args=(str(settings.state.root), settings.history_url, w))
        for w in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    events = history.read(settings)
    assert len(events) == 75
    assert {(e.details["worker"], e.details["i"]) for e in events} == {
        (w, i) for w in range(3) for i in range(25)
    }


def test_an_unreachable_history_database_is_named_without_its_password(tmp_path):
    settings = Settings(state_dir=tmp_path, history_url="postgresql://loopline:s3cret@127.0.0.1:9/none")
    with pytest.raises(ConnectionError, match="LOOPLINE_HISTORY_URL") as caught:
        history.record(settings, "promoted", version=1)
    assert "s3cret" not in str(caught.value)
