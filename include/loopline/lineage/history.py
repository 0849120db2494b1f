"""The model loop's decision history: what happened to which model version, when, and why.

Every stage that decides something about a model appends one event here — the gate (``gate_passed``,
``gate_rejected``), the canary (``canary_started``, ``promoted``, ``rolled_back``), the drift monitor
(``retrain_requested``, ``retrain_suppressed``). ``loopline status --json`` and the UI's "Model loop"
page read it back as ``history``. The MLflow registry stays the source of truth for what serves; this
is the audit trail across versions, in order, that the registry's per-version tags cannot give.

Append-only SQLite (WAL) in the state directory: several processes (Airflow tasks, the CLI) append
concurrently, and an event is durable once ``record`` returns.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopline.config import Settings

# The kinds of event the loop records; anything else is a programming error caught at write time.
EVENT_KINDS = frozenset({
    "training_started", "trained", "training_failed",
    "gate_passed", "gate_rejected",
    "canary_started", "traffic_shifted", "promoted", "rolled_back",
    "drift_checked", "retrain_requested", "retrain_suppressed",
})

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


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        yield conn


def record(settings: Settings, kind: str, *, version: str | int | None = None, reason: str = "",
           at: datetime | None = None, **details: Any) -> Event:
    """Append one event and return it (with its id); durable when this returns."""
    if kind not in EVENT_KINDS:
        raise UnknownEventKind(f"unknown history event kind {kind!r}; known: {', '.join(sorted(EVENT_KINDS))}")
    stamp = (at or datetime.now(UTC)).astimezone(UTC).isoformat()
    version = None if version is None else str(version)
    payload = json.dumps(details, default=str, sort_keys=True)
    with _connect(settings.state.history_db) as conn, conn:
        cursor = conn.execute("INSERT INTO events (at, kind, version, reason, details) VALUES (?, ?, ?, ?, ?)",
                              (stamp, kind, version, reason, payload))
    return Event(kind=kind, at=stamp, version=version, reason=reason, details=json.loads(payload),
                 id=cursor.lastrowid)


def read(settings: Settings, *, kinds: set[str] | frozenset[str] | None = None, since: datetime | None = None,
         limit: int | None = None) -> list[Event]:
    """Events oldest first; ``limit`` keeps the newest ``limit`` of them. No history yet: an empty list."""
    path = settings.state.history_db
    if not path.exists():
        return []
    where, args = [], []
    if kinds:
        where.append(f"kind IN ({', '.join('?' * len(kinds))})")
        args.extend(sorted(kinds))
    if since is not None:
        where.append("at >= ?")
        args.append(since.astimezone(UTC).isoformat())
    sql = "SELECT id, at, kind, version, reason, details FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with _connect(path) as conn:
        rows = conn.execute(sql, args).fetchall()
    return [Event(id=r[0], at=r[1], kind=r[2], version=r[3], reason=r[4], details=json.loads(r[5]))
            for r in reversed(rows)]


def last(settings: Settings, kinds: set[str] | frozenset[str], since: datetime | None = None) -> Event | None:
    """The newest event of any of ``kinds`` (at or after ``since``; cooldowns and dedupe ask this), or None."""
    events = read(settings, kinds=kinds, since=since, limit=1)
    return events[0] if events else None
