"""The durable prediction log: one row per answered prediction, in SQLite (WAL, one machine) or Postgres
(docker-compose and Kubernetes, where several serving replicas write one log and the canary and the drift
monitor read it from other processes).

The service commits a batch of rows before it answers any request in that batch, so an acknowledged
prediction survives kill -9 of the server (SQLite: WAL + ``synchronous=NORMAL``; ``FULL`` also survives a
power cut. Postgres: the commit is durable when it returns). Readers use ``read`` and ``counts``;
``open_prediction_log(settings)`` picks the backend from ``LOOPLINE_PREDICTION_LOG_URL`` (unset: SQLite in
the state dir).

Rows are keyed by the use case's id column value (``LoggedPrediction.event_id``) and carry its unit column
value (``unit_id``). The stored columns keep the names they had when card fraud was the only use case,
``EVENT_ID_COLUMN`` and ``UNIT_ID_COLUMN``, whatever the use case (an order's id, a restaurant's): renaming a
column would break every existing log, and readers select them by these constants. A regressor's rows store
``decision`` false: it makes no threshold decision (its answers say null).
"""

from __future__ import annotations

import json
import logging
import math
import operator
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_core import to_json

from loopline.storage.state_db import is_postgres_url, postgres_conninfo

if TYPE_CHECKING:
    import pandas as pd

    from loopline.config import Settings
    from loopline.features.streaming import StreamEvent, StreamingFeatures
    from loopline.serving.config import RetentionConfig

log = logging.getLogger("loopline.serving")
# How often the SQLite log's WAL is copied into the database file, off the request path (see PredictionLog).
CHECKPOINT_INTERVAL_S = 1.0

# The stored names of the event id and unit columns (see the module docstring).
EVENT_ID_COLUMN = "transaction_id"
UNIT_ID_COLUMN = "customer_id"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,               -- when the prediction was made, seconds since the epoch (UTC)
    {EVENT_ID_COLUMN} TEXT NOT NULL,  -- the use case's event id
    {UNIT_ID_COLUMN} TEXT,             -- its unit (null: the use case has none)
    inputs TEXT NOT NULL,           -- the transaction as received (JSON)
    features TEXT NOT NULL,         -- the online features it was scored with (JSON)
    score REAL NOT NULL,
    decision INTEGER NOT NULL,
    variant TEXT NOT NULL,          -- champion | challenger | shadow
    model_version TEXT NOT NULL,
    latency_ms REAL NOT NULL        -- request received → scored
);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
CREATE INDEX IF NOT EXISTS predictions_variant_ts ON predictions (variant, ts);
CREATE INDEX IF NOT EXISTS predictions_transaction ON predictions ({EVENT_ID_COLUMN});
"""
COLUMNS = (
    "request_id",
    "ts",
    EVENT_ID_COLUMN,
    UNIT_ID_COLUMN,
    "inputs",
    "features",
    "score",
    "decision",
    "variant",
    "model_version",
    "latency_ms",
)


@dataclass(frozen=True)
class LoggedPrediction:
    """One row. ``event_id``/``unit_id``: the use case's id and unit column values, stored as
    ``EVENT_ID_COLUMN``/``UNIT_ID_COLUMN``; those stored names are accepted as keywords (and read as
    attributes) too, for callers written before. ``decision``: None for a regressor (stored false)."""

    request_id: str
    ts: float
    event_id: str
    unit_id: str | None
    inputs: dict[str, Any]
    features: dict[str, Any]
    score: float
    decision: bool | None
    variant: str
    model_version: str
    latency_ms: float


def _accept_stored_names() -> None:
    """``LoggedPrediction(..., <EVENT_ID_COLUMN>=..., <UNIT_ID_COLUMN>=...)`` and ``row.<EVENT_ID_COLUMN>``
    as before the columns had task-neutral names in Python."""
    names = {EVENT_ID_COLUMN: "event_id", UNIT_ID_COLUMN: "unit_id"}
    generated = LoggedPrediction.__init__

    def init(self: LoggedPrediction, *args: Any, **kwargs: Any) -> None:
        for stored, name in names.items():
            if stored in kwargs:
                kwargs[name] = kwargs.pop(stored)
        generated(self, *args, **kwargs)

    init.__doc__ = generated.__doc__
    LoggedPrediction.__init__ = init  # type: ignore[method-assign]
    for stored, name in names.items():
        setattr(LoggedPrediction, stored, property(operator.attrgetter(name)))


_accept_stored_names()


def _clean(value: Any) -> Any:
    """JSON has no NaN: missing features are stored as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# Value types pydantic-core writes exactly as ``json.dumps`` reads them back (a non-finite float as null,
# as ``_clean`` does); anything else (numpy numbers, datetimes, ...) keeps ``json.dumps`` with ``default=str``.
_PLAIN = frozenset((str, float, int, bool, type(None)))


def _json(mapping: dict[str, Any]) -> str:
    """``mapping`` as compact JSON, missing numbers as null. Two per logged prediction, on the request path:
    pydantic-core's serializer takes ~1/6 of ``json.dumps``' time for the plain values requests and
    features are made of (the same JSON values; only how a float is spelled may differ, e.g. 0.00001)."""
    if _PLAIN.issuperset(map(type, mapping.values())):
        return to_json(mapping, inf_nan_mode="null").decode()
    return json.dumps({k: _clean(v) for k, v in mapping.items()}, default=str, separators=(",", ":"))


def _epoch(value: datetime | float | str | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: pass an aware datetime (UTC)")
    return value.timestamp()


Key = tuple[str, str]  # (variant, model_version)


class PredictionLogUnavailable(ConnectionError):
    """The log did not take the rows in time (locked, busy, statement timeout, unreachable): nothing of
    that append is stored or acknowledged; the service answers 503 with ``Retry-After``."""


class _FailFast:
    """After a write timed out, further writes fail at once for ``seconds`` instead of waiting out the
    timeout again: with inline batching the writer is the event loop, and a database that stays stuck
    would otherwise hold it (and every probe and reply) for a whole timeout per batch."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until = 0.0

    def check(self, where: str) -> None:
        if self._until and time.monotonic() < self._until:
            raise PredictionLogUnavailable(
                f"the prediction log {where} timed out moments ago; writes fail fast for {self.seconds:g} s"
            )

    def trip(self) -> None:
        if self.seconds > 0:
            self._until = time.monotonic() + self.seconds


def _sqlite_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _where(
    since: datetime | float | str | None,
    until: datetime | float | str | None,
    variant: str | None,
    version: str | None,
    mark: str,
) -> tuple[str, list[Any]]:
    """The WHERE clause (``mark``: the driver's placeholder) of a read over [since, until)."""
    clauses: list[str] = []
    params: list[Any] = []
    for op, bound in ((">=", _epoch(since)), ("<", _epoch(until))):
        if bound is not None:
            clauses.append(f"ts {op} {mark}")
            params.append(bound)
    for column, value in (("variant", variant), ("model_version", version)):
        if value is not None:
            clauses.append(f"{column} = {mark}")
            params.append(str(value))
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def _frame(rows: list[tuple[Any, ...]], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=columns)
    frame["ts"] = pd.to_datetime(frame["ts"].astype("float64"), unit="s", utc=True)
    frame["decision"] = frame["decision"].astype(bool)
    return frame


def _values(rows: Iterable[LoggedPrediction]) -> list[tuple[Any, ...]]:
    return [
        (
            r.request_id,
            r.ts,
            r.event_id,
            r.unit_id,
            _json(r.inputs),
            _json(r.features),
            r.score,
            int(bool(r.decision)),
            r.variant,
            r.model_version,
            r.latency_ms,
        )
        for r in rows
    ]


class _Reads:
    """The reads both backends share; a backend supplies ``_query`` and its placeholder ``_mark``."""

    _mark = "?"
    _select = ", ".join(("id", *COLUMNS))

    def _query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def count(self) -> int:
        rows = self._query("SELECT COUNT(*) FROM predictions", [])
        return int(rows[0][0]) if rows else 0

    def oldest_ts(self) -> float | None:
        rows = self._query("SELECT MIN(ts) FROM predictions", [])
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def size_cutoff(self, keep_rows: int) -> float | None:
        """The time before which rows go to keep only the newest ``keep_rows`` (rows of one commit share a
        time: a few more may go); None when there are no more than that."""
        rows = self._query(f"SELECT ts FROM predictions ORDER BY ts DESC LIMIT 1 OFFSET {int(keep_rows)}", [])
        return math.nextafter(float(rows[0][0]), math.inf) if rows else None

    def counts(
        self, since: datetime | float | str | None = None, until: datetime | float | str | None = None
    ) -> dict[Key, int]:
        """Predictions per (variant, version) in [since, until): cheap enough to poll while a canary bakes."""
        where, params = _where(since, until, None, None, self._mark)
        rows = self._query(
            f"SELECT variant, model_version, COUNT(*) FROM predictions {where} "
            "GROUP BY variant, model_version",
            params,
        )
        return {(str(v), str(m)): int(n) for v, m, n in rows}

    _inputs = "inputs"  # the inputs column as JSON text

    def _poll(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """A query repeated on the request path (a backend may keep a connection for it)."""
        return self._query(sql, params)

    def newest_id(self) -> int:
        rows = self._poll("SELECT MAX(id) FROM predictions", [])
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def answered_after(self, after_id: int, limit: int = 50_000) -> list[tuple[int, str, str]]:
        """(id, event id, inputs JSON) of answered (not shadow) predictions with id > ``after_id``."""
        return self._poll(
            f"SELECT id, {EVENT_ID_COLUMN}, {self._inputs} FROM predictions WHERE id > {self._mark} "
            f"AND variant <> 'shadow' ORDER BY id LIMIT {int(limit)}",
            [after_id],
        )

    def answered_since(
        self, since: datetime | float | str, upto_id: int | None = None
    ) -> list[tuple[int, str, str]]:
        """(id, event id, inputs JSON) of answered predictions made at or after ``since`` (and id <=
        ``upto_id``), oldest first."""
        sql = (
            f"SELECT id, {EVENT_ID_COLUMN}, {self._inputs} FROM predictions WHERE ts >= {self._mark} "
            "AND variant <> 'shadow'"
        )
        params: list[Any] = [_epoch(since)]
        if upto_id is not None:
            sql += f" AND id <= {self._mark}"
            params.append(upto_id)
        return self._query(sql + " ORDER BY id", params)

    def read(
        self,
        since: datetime | float | str | None = None,
        until: datetime | float | str | None = None,
        variant: str | None = None,
        version: str | None = None,
    ) -> pd.DataFrame:
        """Predictions made in [since, until) (aware datetimes, ISO strings or epoch seconds), optionally of
        one variant and version, oldest first. ``ts`` becomes a UTC timestamp; ``inputs``/``features`` stay
        JSON text (``json.loads`` them when needed: parsing every row up front is costly for large windows)."""
        where, params = _where(since, until, variant, version, self._mark)
        rows = self._query(f"SELECT {self._select} FROM predictions {where} ORDER BY ts, id", params)
        return _frame(rows, ["id", *COLUMNS])


class PredictionLog(_Reads):
    """The SQLite log at ``path``: append (one writer thread) and read (any process).

    ``read_only``: a reader that creates nothing (a missing file reads as empty).

    SQLite's automatic checkpoint (WAL → database file, with an fsync) runs inside the commit that crosses
    1,000 WAL pages, i.e. on the request path: at ~2,000 predictions/s every second or two, stalling every
    request in flight by ~10 ms (it set the service's p99). The writer's auto-checkpoint is therefore off
    and a background thread runs a PASSIVE checkpoint (never blocks the writer) every
    ``CHECKPOINT_INTERVAL_S``. Durability is unchanged: a commit is durable once it is in the WAL.

    ``timeout_s``: how long a write (and serving's polling read) waits for a lock another connection holds
    (SQLite's busy timeout) before ``PredictionLogUnavailable``; ``fail_fast_s``: see ``_FailFast``."""

    def __init__(
        self,
        path: Path,
        synchronous: str = "NORMAL",
        read_only: bool = False,
        *,
        timeout_s: float = 30.0,
        fail_fast_s: float = 0.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = Path(path)
        self.where = str(self.path)
        self.timeout_s = timeout_s
        self._fail_fast = _FailFast(fail_fast_s)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._poller: sqlite3.Connection | None = None
        if read_only:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=timeout_s
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn.executescript(_SCHEMA)
        self._closed = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="loopline-log-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            while not self._closed.wait(CHECKPOINT_INTERVAL_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # the next round tries again; the WAL only grows meanwhile
                    log.warning("checkpointing the prediction log %s failed: %s", self.path, exc)
        finally:
            conn.close()

    def append(self, rows: Iterable[LoggedPrediction]) -> int:
        """Insert ``rows`` in one transaction and commit; returns how many. Durable when it returns;
        ``PredictionLogUnavailable`` (nothing stored) when the database stayed locked for ``timeout_s``."""
        values = _values(rows)
        if not values:
            return 0
        if self._conn is None:
            raise RuntimeError(f"the prediction log {self.where} was opened read-only")
        self._fail_fast.check(self.where)
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                self._conn.executemany(
                    f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                    values,
                )
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and _sqlite_busy(exc):
                    self._fail_fast.trip()
                    raise PredictionLogUnavailable(
                        f"the prediction log {self.where} stayed locked for {self.timeout_s:g} s: {exc}"
                    ) from exc
                raise
        return len(values)

    def delete_before(
        self, cutoff: float, batch_rows: int, pause_s: float = 0.0, stop: threading.Event | None = None
    ) -> int | None:
        """Delete the rows made before ``cutoff`` (epoch seconds), ``batch_rows`` per transaction through the
        writer's own connection and lock, so inserts wait for one short batch at most and never for SQLite's
        lock; ``pause_s`` between batches. Returns how many."""
        if self._conn is None:
            raise RuntimeError(f"the prediction log {self.where} was opened read-only")
        return _delete_batches(lambda: self._delete_batch(cutoff, batch_rows), batch_rows, pause_s, stop)

    def _delete_batch(self, cutoff: float, batch_rows: int) -> int:
        with self._lock:
            assert self._conn is not None  # delete_older checked: not opened read-only
            return self._conn.execute(_DELETE_BATCH.format(mark="?", n=int(batch_rows)), (cutoff,)).rowcount

    def _query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        # A separate read-only connection: readers never block the writer (WAL).
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            cursor = conn.execute(sql, params)
            return cursor.fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # the service has not created its table yet
                return []
            raise
        finally:
            conn.close()

    def _poll(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """One kept read-only connection for the queries serving repeats per batch (opening one costs
        ~0.25 ms); each query is its own read transaction, so it sees every commit made before it."""
        if self._poller is None:
            if not self.path.exists():
                return []
            self._poller = sqlite3.connect(
                f"file:{self.path}?mode=ro",
                uri=True,
                timeout=self.timeout_s,
                check_same_thread=False,
                isolation_level=None,
            )
        try:
            return self._poller.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise

    def close(self) -> None:
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        if self._conn is None:
            return
        self._closed.set()
        self._checkpointer.join(timeout=30)
        with self._lock:
            self._conn.close()  # the last connection to close checkpoints what is left


_PG_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS predictions (
    id BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,   -- seconds since the epoch (UTC), as in the SQLite log
    {EVENT_ID_COLUMN} TEXT NOT NULL,
    {UNIT_ID_COLUMN} TEXT,
    inputs JSONB NOT NULL,
    features JSONB NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    decision BOOLEAN NOT NULL,
    variant TEXT NOT NULL,
    model_version TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_ts ON predictions (ts);
CREATE INDEX IF NOT EXISTS predictions_variant_ts ON predictions (variant, ts);
CREATE INDEX IF NOT EXISTS predictions_transaction ON predictions ({EVENT_ID_COLUMN});
"""
# Every replica creates the schema at start; an advisory lock keeps concurrent CREATE ... IF NOT EXISTS
# (which can still collide in the catalog) one at a time.
_PG_SCHEMA_LOCK = 7_246_001
_PG_RETENTION_LOCK = 7_246_003  # one replica deletes old rows at a time


class PostgresPredictionLog(_Reads):
    """The log in Postgres at ``url``: every serving replica appends, the canary and the monitor read.

    A lost connection (a database restart, a failover) fails that append — its requests get 503, nothing
    unlogged is acknowledged — and the next append reconnects.

    ``timeout_s`` (serving's writer): every statement of this process's writer and polling connections
    runs with ``statement_timeout`` (lock waits included) and TCP keepalives, so a stuck or vanished
    database fails the append with ``PredictionLogUnavailable`` instead of hanging it; None (readers
    elsewhere: the monitor, the canary): no statement timeout."""

    _mark = "%s"
    _inputs = "inputs::text"
    # JSONB read back as text, like the SQLite log's columns.
    _select = ", ".join(f"{c}::text" if c in ("inputs", "features") else c for c in ("id", *COLUMNS))

    def __init__(
        self,
        url: str,
        read_only: bool = False,
        connect_timeout_s: int = 5,
        *,
        timeout_s: float | None = None,
        fail_fast_s: float = 0.0,
    ) -> None:
        self.conninfo = postgres_conninfo(url)
        self.where = _redacted(url)
        self._timeout = connect_timeout_s
        self.timeout_s = timeout_s
        self._fail_fast = _FailFast(fail_fast_s)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._poll_lock = threading.Lock()
        self._poller: Any = None
        self._read_only = read_only
        if not read_only:
            with self._lock:
                self._writer()

    def _connect(self, bounded: bool = False) -> Any:
        """A connection; ``bounded``: with this log's statement timeout and keepalives (serving's own)."""
        import psycopg

        extra: dict[str, Any] = {}
        if bounded and self.timeout_s is not None:
            # A peer that vanished without a word is noticed within ~idle + interval x count seconds.
            extra = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
        try:
            conn = psycopg.connect(
                self.conninfo, connect_timeout=self._timeout, application_name="loopline", **extra
            )
        except psycopg.OperationalError as exc:
            raise PredictionLogUnavailable(
                f"cannot reach the prediction log at {self.where}: {exc}".strip()
            ) from exc
        if extra and self.timeout_s is not None:  # extra is only set with a timeout
            conn.execute(f"SET statement_timeout = {max(1, round(self.timeout_s * 1000))}")
            conn.commit()
        return conn

    def _writer(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = self._connect(bounded=True)
            # The table may belong to another role (compose and Kubernetes: the owner role creates it and
            # serving may only insert): Postgres refuses even CREATE ... IF NOT EXISTS to a non-owner.
            with conn.transaction():
                if conn.execute("SELECT to_regclass('predictions') IS NULL").fetchone()[0]:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", [_PG_SCHEMA_LOCK])
                    conn.execute(_PG_SCHEMA)
            self._conn = conn
        return self._conn

    def append(self, rows: Iterable[LoggedPrediction]) -> int:
        """Insert ``rows`` in one transaction (COPY) and commit; returns how many. Durable when it returns."""
        values = _values(rows)
        if not values:
            return 0
        if self._read_only:
            raise RuntimeError(f"the prediction log {self.where} was opened read-only")
        import psycopg

        self._fail_fast.check(self.where)
        with self._lock:
            try:
                conn = self._writer()
                with conn.transaction(), conn.cursor() as cursor:
                    with cursor.copy(f"COPY predictions ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                        for row in values:
                            copy.write_row((*row[:7], bool(row[7]), *row[8:]))
            except PredictionLogUnavailable:
                self._fail_fast.trip()
                raise
            except psycopg.OperationalError as exc:  # statement timeout, lock timeout, connection lost
                self._fail_fast.trip()
                raise PredictionLogUnavailable(
                    f"the prediction log {self.where} did not take the rows: "
                    f"{type(exc).__name__}: {exc}".strip()
                ) from exc
        return len(values)

    def delete_before(
        self, cutoff: float, batch_rows: int, pause_s: float = 0.0, stop: threading.Event | None = None
    ) -> int | None:
        """Delete the rows made before ``cutoff`` in batches of ``batch_rows`` (row locks only: inserts go
        on), on a connection of its own. One replica at a time (an advisory lock): None when another one
        is at it."""
        conn = self._connect(bounded=True)
        conn.autocommit = True
        try:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", [_PG_RETENTION_LOCK]).fetchone()[0]:
                return None
            sql = _DELETE_BATCH.format(mark="%s", n=int(batch_rows))
            return _delete_batches(lambda: conn.execute(sql, [cutoff]).rowcount, batch_rows, pause_s, stop)
        finally:
            conn.close()  # ends the session: the advisory lock goes with it

    def _query(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        import psycopg

        with self._connect() as conn:
            try:
                cursor = conn.execute(sql, params)
            except psycopg.errors.UndefinedTable:  # no replica has started yet
                return []
            rows: list[tuple[Any, ...]] = cursor.fetchall()
            return rows

    def _poll(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """One kept connection for the queries serving repeats per batch (a connection costs milliseconds)."""
        import psycopg

        with self._poll_lock:
            if self._poller is None or self._poller.closed or self._poller.broken:
                self._poller = self._connect(bounded=True)
                self._poller.autocommit = True
            try:
                rows: list[tuple[Any, ...]] = self._poller.execute(sql, params).fetchall()
                return rows
            except psycopg.errors.UndefinedTable:
                return []

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
        with self._poll_lock:
            if self._poller is not None:
                self._poller.close()


def _redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


AnyPredictionLog = PredictionLog | PostgresPredictionLog

# One retention batch: the oldest ``n`` rows made before the cutoff (the ts index finds them).
_DELETE_BATCH = "DELETE FROM predictions WHERE id IN (SELECT id FROM predictions WHERE ts < {mark} LIMIT {n})"


def _delete_batches(
    batch: Callable[[], int], batch_rows: int, pause_s: float, stop: threading.Event | None
) -> int:
    deleted = 0
    while stop is None or not stop.is_set():
        done = batch()
        deleted += done
        if done < batch_rows:
            break
        if pause_s:
            (stop or threading.Event()).wait(pause_s)
    return deleted


def open_prediction_log(
    settings: Settings,
    *,
    synchronous: str = "NORMAL",
    read_only: bool = False,
    timeout_s: float | None = None,
    connect_timeout_s: int = 5,
    fail_fast_s: float = 0.0,
) -> AnyPredictionLog:
    """The log ``settings`` name: ``LOOPLINE_PREDICTION_LOG_URL`` (``postgresql://...`` or
    ``sqlite:///path``), else SQLite in the state dir. ``read_only`` readers create nothing.
    ``timeout_s`` (serving's writer, from ``log.db_timeout_s``): how long a write may wait on the database
    before ``PredictionLogUnavailable`` (None: SQLite waits 30 s, Postgres has no statement timeout)."""
    url = settings.prediction_log_url
    sqlite_timeouts = {"timeout_s": 30.0 if timeout_s is None else timeout_s, "fail_fast_s": fail_fast_s}
    if not url:
        return PredictionLog(
            settings.state.prediction_log, synchronous=synchronous, read_only=read_only, **sqlite_timeouts
        )
    if url.startswith("sqlite:///"):
        return PredictionLog(
            Path(url.removeprefix("sqlite:///")),
            synchronous=synchronous,
            read_only=read_only,
            **sqlite_timeouts,
        )
    if is_postgres_url(url):
        return PostgresPredictionLog(
            url,
            read_only=read_only,
            connect_timeout_s=connect_timeout_s,
            timeout_s=timeout_s,
            fail_fast_s=fail_fast_s,
        )
    raise ValueError(
        f"LOOPLINE_PREDICTION_LOG_URL={_redacted(url)!r} is neither postgresql://user:password@host/db "
        "nor sqlite:///path"
    )


# --- the served transactions as feature events (fresh features, see loopline.features.fresh) ---------


# Transaction ids of requests that are not transactions (the gate's serving probes): logged like any
# prediction, never counted in anyone's features.
PROBE_ID_PREFIX = "gate_probe_"


ToEvent = Callable[[Mapping[str, Any]], "StreamEvent"]


def _configured_event(settings: Settings) -> ToEvent | None:
    """How the use case of ``settings`` reads a logged event as a feature event
    (``FeatureDefinitions.streaming.event``); None: it defines no streaming features."""
    from loopline.features.definitions import definitions_for

    streaming = definitions_for(settings)[1].streaming
    return None if streaming is None else streaming.event


def _events(
    rows: Iterable[tuple[int, str, str]],
    to_event: ToEvent,
    known: Callable[[str], bool] | None = None,
) -> list[StreamEvent]:
    events = []
    for _, event_id, inputs in rows:
        if (known is not None and known(event_id)) or event_id.startswith(PROBE_ID_PREFIX):
            continue  # parsing JSON costs more than the check
        try:
            events.append(to_event(json.loads(inputs)))
        except (KeyError, TypeError, ValueError) as exc:  # a row logged by an older version, say
            log.warning("prediction of %s has unusable inputs for fresh features: %s", event_id, exc)
    return events


class AnsweredFeed:
    """What every replica answered since the last call, as feature events: the serving engine's
    ``served_events`` (``features.fresh``). ``known(event_id)`` skips rows already counted; ``to_event``
    reads a logged event (default: as the streaming features of ``settings``' use case do). One of the two is
    required: a server passes the settings it was given, so its replicas' events are read as its own use
    case's, whatever ``LOOPLINE_USE_CASE`` says in the process."""

    def __init__(
        self,
        prediction_log: AnyPredictionLog,
        known: Callable[[str], bool] | None = None,
        to_event: ToEvent | None = None,
        settings: Settings | None = None,
    ) -> None:
        if to_event is None and settings is None:
            raise TypeError(
                "AnsweredFeed needs the settings whose use case reads the served rows (or a to_event)"
            )
        self.log = prediction_log
        self.known = known
        self.after = prediction_log.newest_id()
        self._to_event = to_event
        self._settings = settings

    @property
    def to_event(self) -> ToEvent:
        if self._to_event is None:
            assert self._settings is not None  # __init__ requires one of the two
            self._to_event = _configured_event(self._settings)
            if self._to_event is None:
                raise ValueError(
                    f"use case {self._settings.use_case!r} defines no streaming features: no feature events"
                )
        return self._to_event

    def backlog(self, since: datetime) -> list[StreamEvent]:
        """Answered before this feed started, made at or after ``since``."""
        return _events(self.log.answered_since(since, upto_id=self.after), self.to_event, self.known)

    def __call__(self) -> list[StreamEvent]:
        rows = self.log.answered_after(self.after)
        if rows:
            self.after = int(rows[-1][0])
        return _events(rows, self.to_event, self.known)


def served_events_lookback(settings: Settings) -> timedelta:
    """How far back served rows are read as feature events: the streaming features' ``history_us`` of the
    settings' use case (a row served up to its view's TTL after an entity's newest event counts the window
    before that event) plus a day for clocks and ingest lag. Zero for a use case without streaming features."""
    from loopline.features.definitions import definitions_for

    return _lookback(definitions_for(settings)[1].streaming)


def _lookback(streaming: StreamingFeatures | None) -> timedelta:
    if streaming is None:
        return timedelta(0)
    return timedelta(microseconds=streaming.history_us) + timedelta(days=1)


def answered_events(settings: Settings, since: datetime | None = None) -> list[StreamEvent]:
    """Answered events of predictions made at or after ``since`` (default: ``served_events_lookback``, all
    the use case's windows can need) as feature events: what materialisation adds to the curated ones. Empty
    for a use case without streaming features (its online store is Feast's materialisation alone)."""
    to_event = _configured_event(settings)
    if to_event is None:
        return []
    since = since or datetime.now(UTC) - served_events_lookback(settings)
    plog = open_prediction_log(settings, read_only=True)
    try:
        return _events(plog.answered_since(since), to_event)
    finally:
        plog.close()


# --- retention: old rows go, rows something still reads stay ---------------------------------------------

DAY_S = 86_400.0
CANARY_MARGIN_S = 3600.0  # a canary's first window starts when it began; a margin for clocks and the step


class RetentionBlocked(RuntimeError):
    """What the log's readers still need cannot be told (a config that does not load, the history out of
    reach): this run deletes nothing."""


@dataclass(frozen=True)
class Need:
    """A reader of the prediction log and the oldest prediction time (epoch seconds) it may still read."""

    what: str
    since: float


def retention_needs(settings: Settings, now: float, label_delay_days: float) -> list[Need]:
    """Every reader's reach into the past at ``now`` (``RetentionBlocked`` when one cannot be told):

    - ``fresh_features``: served rows are read back as feature events for ``served_events_lookback`` (the
      use case's streaming ``history_us`` plus a day: ``answered_events``, ``AnsweredFeed.backlog``);
      ``materialisation``: the longest streaming window before the watermark, where it is readable here
      (embedded; serving pods in Kubernetes have no watermark and the lookback above applies);
    - ``drift_window``: the drift monitor's window (``window.hours`` of drift.yaml), also what its
      served-features check (check-served) reads;
    - ``concept_drift``: ``judged_windows`` x ``window_hours`` before the label frontier, which trails now by
      at most ``label_delay_days``; a newer ``drift_checked`` event that records ``concept_window`` gives the
      exact start;
    - ``canary``: a canary that started and has not ended (``promoted``/``rolled_back``) in history reads
      from its start."""
    from loopline.features.definitions import definitions_for

    try:
        streaming = definitions_for(settings)[1].streaming
    except Exception as exc:
        raise RetentionBlocked(f"the use case {settings.use_case!r} does not load: {exc}") from exc
    needs = [Need("fresh_features", now - _lookback(streaming).total_seconds())]
    try:
        from loopline.features.watermark import materialized_until

        watermark = materialized_until(settings)
    except Exception as exc:  # no feature repo here: the lookback above covers what is read
        log.debug("retention: no materialisation watermark readable here: %s", exc)
        watermark = None
    if watermark is not None and streaming is not None:
        needs.append(Need("materialisation", watermark.timestamp() - streaming.longest_window_us / 1e6))

    from loopline.config.drift_policy import DriftConfig, load_drift_config

    path = settings.policy_file("drift")  # the use case's own, else the platform default
    try:
        drift = load_drift_config(path) if path.exists() else DriftConfig()
    except ValueError as exc:
        raise RetentionBlocked(f"the drift policy {path} does not load: {exc}") from exc
    needs.append(Need("drift_window", now - drift.window.hours * 3600))
    lookback = drift.concept.window_hours * 3600 * drift.concept.judged_windows
    needs.append(Need("concept_drift", now - label_delay_days * DAY_S - lookback))

    from loopline.lineage import history

    try:
        events = history.read(
            settings, kinds={"canary_started", "promoted", "rolled_back", "drift_checked"}, limit=200
        )
    except Exception as exc:
        raise RetentionBlocked(f"the history (running canaries) cannot be read: {exc}") from exc
    started = next((e for e in reversed(events) if e.kind == "canary_started"), None)
    if started is not None and not any(
        e.kind in ("promoted", "rolled_back")
        and e.version == started.version
        and (e.id or 0) > (started.id or 0)
        for e in events
    ):
        needs.append(
            Need(
                f"canary of version {started.version}",
                datetime.fromisoformat(started.at).timestamp() - CANARY_MARGIN_S,
            )
        )
    checked = next((e for e in reversed(events) if e.kind == "drift_checked"), None)
    window = (checked.details.get("concept_window") or [None])[0] if checked is not None else None
    since = _epoch(window) if window else None
    if since is not None:
        needs.append(Need("concept_drift (recorded window)", since))
    return needs


@dataclass(frozen=True)
class RetentionRun:
    outcome: str  # deleted | nothing_to_delete | skipped | failed
    deleted: int = 0
    cutoff: float | None = None  # rows made before this went
    floor: float | None = None  # the oldest time still needed
    kept_for: str = ""  # the need that held the cutoff back, if one did
    reason: str = ""
    seconds: float = 0.0

    def describe(self) -> str:
        def at(ts: float | None) -> str:
            return "-" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")

        held = f"; held back to {at(self.cutoff)} for {self.kept_for}" if self.kept_for else ""
        what = f"{self.outcome}: {self.deleted} row(s) made before {at(self.cutoff)}{held}"
        return f"{what} in {self.seconds:.2f} s" + (f" ({self.reason})" if self.reason else "")


class Retention:
    """Deletes what ``config`` (``RetentionConfig``) lets go, in the serving process: every ``interval_s``
    (first after ``start_delay_s``), in short batches, never rows newer than ``retention_needs``' floor.

    In serving rather than in a DAG: SQLite has one writer, and deleting through that writer's own
    connection interleaves short delete batches with the inserts instead of making them wait on a second
    writer's lock (503s); it runs wherever serving runs, Airflow up or not. With Postgres the replicas take
    turns (an advisory lock). ``observer(run)`` gets every run (metrics); each is logged."""

    def __init__(
        self,
        prediction_log: AnyPredictionLog,
        settings: Settings,
        config: RetentionConfig,
        observer: Callable[[RetentionRun], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log = prediction_log
        self.settings = settings
        self.config = config
        self.observer = observer
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> RetentionRun:
        started = time.monotonic()
        try:
            run = self._run()
        except RetentionBlocked as exc:
            run = RetentionRun("skipped", reason=str(exc))
        except Exception as exc:  # the database said no (locked, unreachable): the next round tries again
            log.warning("prediction-log retention failed", exc_info=True)
            run = RetentionRun("failed", reason=f"{type(exc).__name__}: {exc}")
        run = RetentionRun(**{**run.__dict__, "seconds": time.monotonic() - started})
        (log.warning if run.outcome in ("skipped", "failed") else log.info)(
            "prediction-log retention %s", run.describe()
        )
        if self.observer is not None:
            self.observer(run)
        return run

    def _run(self) -> RetentionRun:
        now = self.clock()
        config = self.config
        wanted = now - config.max_age_days * DAY_S
        if config.max_rows is not None:
            by_size = self.log.size_cutoff(config.max_rows)
            if by_size is not None:
                wanted = max(wanted, by_size)
        needs = retention_needs(self.settings, now, config.label_delay_days)
        oldest_need = min(needs, key=lambda n: n.since)
        cutoff, kept_for = wanted, ""
        if oldest_need.since < wanted:
            cutoff, kept_for = oldest_need.since, oldest_need.what
        oldest = self.log.oldest_ts()
        if oldest is None or oldest >= cutoff:
            return RetentionRun(
                "nothing_to_delete", cutoff=cutoff, floor=oldest_need.since, kept_for=kept_for
            )
        deleted = self.log.delete_before(cutoff, config.batch_rows, config.pause_s, self._stop)
        if deleted is None:
            return RetentionRun(
                "skipped",
                cutoff=cutoff,
                floor=oldest_need.since,
                reason="another replica is deleting old rows right now",
            )
        return RetentionRun(
            "deleted" if deleted else "nothing_to_delete", deleted, cutoff, oldest_need.since, kept_for
        )

    def start(self) -> Retention:
        # What retention_needs imports, imported now: the first run would otherwise import it on its thread
        # while serving (~20 ms of holding the interpreter, a stall of every request in flight).
        import loopline.config.drift_policy
        import loopline.features.watermark
        import loopline.lineage.history  # noqa: F401

        self._thread = threading.Thread(target=self._loop, name="loopline-log-retention", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        if self._stop.wait(self.config.start_delay_s):
            return
        while True:
            self.run_once()
            if self._stop.wait(self.config.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
