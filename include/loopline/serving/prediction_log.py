"""The durable prediction log: one SQLite (WAL) row per answered prediction.

The service commits a batch of rows before it answers any request in that batch, so an acknowledged
prediction survives kill -9 of the server (WAL + ``synchronous=NORMAL``; ``FULL`` also survives a power
cut). The drift monitor and the canary read it back with ``PredictionLog.read``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,               -- when the prediction was made, seconds since the epoch (UTC)
    transaction_id TEXT NOT NULL,
    customer_id TEXT,
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
CREATE INDEX IF NOT EXISTS predictions_transaction ON predictions (transaction_id);
"""
COLUMNS = ("request_id", "ts", "transaction_id", "customer_id", "inputs", "features", "score", "decision",
           "variant", "model_version", "latency_ms")


@dataclass(frozen=True)
class LoggedPrediction:
    request_id: str
    ts: float
    transaction_id: str
    customer_id: str | None
    inputs: dict[str, Any]
    features: dict[str, Any]
    score: float
    decision: bool
    variant: str
    model_version: str
    latency_ms: float


def _clean(value: Any) -> Any:
    """JSON has no NaN: missing features are stored as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json(mapping: dict[str, Any]) -> str:
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


class PredictionLog:
    """Append (one writer thread) and read (any process) the prediction log at ``path``."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.executescript(_SCHEMA)

    def append(self, rows: Iterable[LoggedPrediction]) -> int:
        """Insert ``rows`` in one transaction and commit; returns how many. Durable when it returns."""
        values = [(r.request_id, r.ts, r.transaction_id, r.customer_id, _json(r.inputs), _json(r.features),
                   r.score, int(r.decision), r.variant, r.model_version, r.latency_ms) for r in rows]
        if not values:
            return 0
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                    values)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return len(values)

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])

    def read(self, since: datetime | float | str | None = None, until: datetime | float | str | None = None,
             variant: str | None = None) -> pd.DataFrame:
        """Predictions made in [since, until) (aware datetimes, ISO strings or epoch seconds), optionally of
        one variant, oldest first. ``ts`` becomes a UTC timestamp; ``inputs``/``features`` stay JSON text
        (``json.loads`` them when needed: parsing every row up front is costly for large windows)."""
        import pandas as pd

        clauses, params = [], []
        for op, bound in ((">=", _epoch(since)), ("<", _epoch(until))):
            if bound is not None:
                clauses.append(f"ts {op} ?")
                params.append(bound)
        if variant is not None:
            clauses.append("variant = ?")
            params.append(variant)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # A separate read-only connection: readers never block the writer (WAL).
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            frame = pd.read_sql_query(f"SELECT * FROM predictions {where} ORDER BY ts, id", conn, params=params)
        finally:
            conn.close()
        frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True)
        frame["decision"] = frame["decision"].astype(bool)
        return frame

    def close(self) -> None:
        with self._lock:
            self._conn.close()
