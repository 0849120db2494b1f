"""The model loop's decision history: what happened to which model version, when, and why.

Every stage that decides something about a model appends one event here — the gate (``gate_passed``,
``gate_rejected``), the canary (``canary_started``, ``promoted``, ``rolled_back``), the drift monitor
(``retrain_requested``, ``retrain_suppressed``). ``loopline status --json`` and the UI's "Model loop"
page read it back as ``history``. The MLflow registry stays the source of truth for what serves; this
is the audit trail across versions, in order, that the registry's per-version tags cannot give.

Append-only, durable once ``record`` returns, several processes (Airflow tasks, the CLI) appending at once:
SQLite (WAL) in the state directory, or Postgres at ``LOOPLINE_HISTORY_URL`` — needed wherever tasks do not
share a disk (Kubernetes: every task is a pod of its own, with its own empty state dir).

An event recorded by an Airflow task names that task's DAG run in its details (``dag_id``, ``dag_run_id``),
so the UI links it to the run: ``record`` reads them from the environment Airflow sets in every task process
(``AIRFLOW_CTX_DAG_ID``, ``AIRFLOW_CTX_DAG_RUN_ID``; see ``airflow_run``). The stages stay unaware of Airflow
(nothing here imports it); an event recorded outside a task (the CLI, the demo) names no run.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from loopline.config import Settings

# The kinds of event the loop records; anything else is a programming error caught at write time.
EVENT_KINDS = frozenset(
    {
        "training_started",
        "trained",
        "training_failed",
        "gate_passed",
        "gate_rejected",
        "canary_started",
        "traffic_shifted",
        "promoted",
        "rolled_back",
        "drift_checked",
        "retrain_requested",
        "retrain_suppressed",
        "served_features_skew",
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    version TEXT,
    reason  TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_kind_at ON events (kind, at);
"""


# What Airflow's task runner exports into the environment of every task process it runs.
AIRFLOW_DAG_ID_ENV = "AIRFLOW_CTX_DAG_ID"
AIRFLOW_DAG_RUN_ID_ENV = "AIRFLOW_CTX_DAG_RUN_ID"


def airflow_run() -> dict[str, str]:
    """``{"dag_id", "dag_run_id"}`` of the Airflow task this process runs, or ``{}`` outside one."""
    dag_id, run_id = os.environ.get(AIRFLOW_DAG_ID_ENV), os.environ.get(AIRFLOW_DAG_RUN_ID_ENV)
    return {"dag_id": dag_id, "dag_run_id": run_id} if dag_id and run_id else {}


def _with_run(details: dict[str, Any]) -> dict[str, Any]:
    """``details`` naming the Airflow run recording them, unless they already name another run."""
    run = airflow_run()
    if not run or details.get("dag_run_id") not in (None, run["dag_run_id"]):
        return details
    return {**run, **details}


class UnknownEventKind(ValueError):
    """An event kind outside ``EVENT_KINDS``: add it there (and to the UI) before recording it."""


@dataclass(frozen=True)
class Event:
    kind: str
    at: str
    version: str | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id      BIGSERIAL PRIMARY KEY,
    at      TEXT NOT NULL,          -- ISO 8601 UTC, as in the SQLite history (sorts as text)
    kind    TEXT NOT NULL,
    version TEXT,
    reason  TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_kind_at ON events (kind, at);
"""
_PG_SCHEMA_LOCK = 7_246_002  # concurrent CREATE ... IF NOT EXISTS can collide in Postgres' catalog
_PG_SCHEMA_READY: set[str] = set()  # history URLs whose schema this process has created or found


@contextmanager
def _connect(settings: Settings, create: bool = True) -> Iterator[tuple[Any, str] | None]:
    """(connection, placeholder) of the history store, committed on success; None when it does not exist
    yet and ``create`` is off (a reader creates nothing)."""
    url = settings.history_url
    if url:
        import psycopg

        from loopline.storage.state_db import postgres_conninfo

        try:
            conn = psycopg.connect(
                postgres_conninfo(url), connect_timeout=5, application_name="loopline-history"
            )
        except psycopg.OperationalError as exc:
            raise ConnectionError(
                f"cannot reach the history database (LOOPLINE_HISTORY_URL): {exc}".strip()
            ) from exc
        with conn:
            if url not in _PG_SCHEMA_READY:  # once per process and database, not at every event or read
                with conn.transaction():  # DDL only when missing: a reader's role may not own the table
                    missing = conn.execute("SELECT to_regclass('events') IS NULL").fetchone()
                    assert missing is not None  # a SELECT of one value returns one row
                    if missing[0]:
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_SCHEMA_LOCK])
                        conn.execute(_PG_SCHEMA)
                _PG_SCHEMA_READY.add(url)
            yield conn, "%s"
        return
    path = settings.state.history_db
    if not create and not path.exists():
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=30)) as lite:
        lite.execute("PRAGMA journal_mode=WAL")
        lite.executescript(_SCHEMA)
        with lite:
            yield lite, "?"


def record(
    settings: Settings,
    kind: str,
    *,
    version: str | int | None = None,
    reason: str = "",
    at: datetime | None = None,
    **details: Any,
) -> Event:
    """Append one event and return it (with its id); durable when this returns. Inside an Airflow task the
    details also name its run (``dag_id``, ``dag_run_id``) unless they name one themselves."""
    if kind not in EVENT_KINDS:
        raise UnknownEventKind(
            f"unknown history event kind {kind!r}; known: {', '.join(sorted(EVENT_KINDS))}"
        )
    stamp = (at or datetime.now(UTC)).astimezone(UTC).isoformat()
    version = None if version is None else str(version)
    payload = json.dumps(_with_run(details), default=str, sort_keys=True)
    with _connect(settings) as store:
        assert store is not None  # create=True: the store is created when missing
        conn, mark = store
        row = conn.execute(
            f"INSERT INTO events (at, kind, version, reason, details) VALUES "
            f"({', '.join([mark] * 5)}) RETURNING id",
            (stamp, kind, version, reason, payload),
        ).fetchone()
    return Event(
        kind=kind, at=stamp, version=version, reason=reason, details=json.loads(payload), id=int(row[0])
    )


def read(
    settings: Settings,
    *,
    kinds: set[str] | frozenset[str] | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[Event]:
    """Events oldest first; ``limit`` keeps the newest ``limit`` of them. No history yet: an empty list."""
    with _connect(settings, create=False) as store:
        if store is None:
            return []
        conn, mark = store
        where, args = [], []
        if kinds:
            where.append(f"kind IN ({', '.join([mark] * len(kinds))})")
            args.extend(sorted(kinds))
        if since is not None:
            where.append(f"at >= {mark}")
            args.append(since.astimezone(UTC).isoformat())
        sql = "SELECT id, at, kind, version, reason, details FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = conn.execute(sql, args).fetchall()
    return [
        Event(id=r[0], at=r[1], kind=r[2], version=r[3], reason=r[4], details=json.loads(r[5]))
        for r in reversed(rows)
    ]


def last(settings: Settings, kinds: set[str] | frozenset[str], since: datetime | None = None) -> Event | None:
    """The newest event of any of ``kinds`` (at or after ``since``; cooldowns and dedupe ask this), or None."""
    events = read(settings, kinds=kinds, since=since, limit=1)
    return events[0] if events else None


def record_training_failed(settings: Settings, dag_run_id: str, reason: str) -> Event | None:
    """``training_failed`` for a training run that ended without recording ``trained`` (so a drift check's
    "is training running?" never waits on a dead run); None when it had trained: the gate's verdict
    (``gate_rejected``) already says why it failed."""
    if any(e.details.get("dag_run_id") == dag_run_id for e in read(settings, kinds={"trained"}, limit=20)):
        return None
    return record(settings, "training_failed", reason=reason, dag_run_id=dag_run_id)
