"""Small shared control state: SQL connections, cross-process locks and watermarks.

The ingest ledger, the materialisation watermark and the locks that serialise ingest and
materialisation must be seen by every task. On one machine that is SQLite and ``flock`` in the state
directory; where tasks share no disk it is Postgres (``LOOPLINE_STATE_DB_URL``): the same tables, and
*session advisory locks* instead of file locks. Both kinds of lock go with the connection or process that
holds them, so a crashed holder never leaves one stuck.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.storage.file_helpers import exclusive_lock

if TYPE_CHECKING:
    from loopline.config import Settings


def is_postgres_url(url: str | None) -> bool:
    """``postgresql://...``, ``postgres://...`` or SQLAlchemy-style ``postgresql+<driver>://...``."""
    scheme, sep, _ = str(url or "").partition("://")
    return bool(sep) and scheme.split("+")[0] in ("postgresql", "postgres")


def postgres_conninfo(url: str) -> str:
    """A libpq URI from a ``postgresql://`` or SQLAlchemy-style ``postgresql+psycopg://`` URL."""
    if not is_postgres_url(url):
        raise ValueError(f"not a Postgres URL: {url!r} (expected postgresql://user:password@host:5432/db)")
    return f"postgresql://{url.partition('://')[2]}"


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    head, sep, tail = url.partition("://")
    if "@" in tail:
        user, _, host = tail.rpartition("@")
        return f"{head}{sep}{user.split(':', 1)[0]}:***@{host}"
    return url


def connect_postgres(url: str, application: str, setting: str = "LOOPLINE_STATE_DB_URL") -> Any:
    """A psycopg connection, or a ConnectionError naming the setting to fix."""
    import psycopg

    try:
        return psycopg.connect(postgres_conninfo(url), connect_timeout=5, application_name=application)
    except psycopg.OperationalError as exc:
        raise ConnectionError(
            f"cannot reach the database at {setting}={_redacted(url)}: {str(exc).strip()}"
        ) from None


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name`` (the same in every process and release)."""
    return int.from_bytes(hashlib.sha256(f"loopline:{name}".encode()).digest()[:8], "big", signed=True)


@dataclass(frozen=True)
class SqlDialect:
    """What differs between the two SQL stores in the statements Loopline uses."""

    placeholder: str
    serial: str  # the column that orders rows as they were inserted
    serial_ddl: str

    def sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder) if self.placeholder != "?" else statement


SQLITE = SqlDialect(placeholder="?", serial="rowid", serial_ddl="")
POSTGRES = SqlDialect(placeholder="%s", serial="id", serial_ddl="id BIGSERIAL PRIMARY KEY,")


class StateDB:
    """One SQL store of control state: SQLite at ``path`` or Postgres at ``url``.

    ``connection()`` yields ``(connection, dialect)``, committed when the block ends without an error.
    ``schema`` (statements with ``{serial}`` for the insertion-order column) is created once per process.
    """

    _ready: set[tuple[str, str]] = set()  # (store, schema name) whose schema this process has ensured

    def __init__(self, location: Path | str, schema_name: str, schema: list[str], application: str) -> None:
        self.url = str(location) if is_postgres_url(str(location)) else None
        self.path = None if self.url else Path(location)
        self.schema_name = schema_name
        self.schema = schema
        self.application = application
        self.dialect = POSTGRES if self.url else SQLITE

    @property
    def where(self) -> str:
        return _redacted(self.url) if self.url else str(self.path)

    @contextlib.contextmanager
    def connection(self) -> Iterator[tuple[Any, SqlDialect]]:
        if self.url:
            conn = connect_postgres(self.url, self.application)
            with conn:
                self._ensure_schema(conn)
                yield conn, POSTGRES
            return
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=30)) as conn:
            self._ensure_schema(conn)
            with conn:
                yield conn, SQLITE

    def _ensure_schema(self, conn: Any) -> None:
        key = (self.url or str(self.path), self.schema_name)
        if key in StateDB._ready:
            return
        statements = [s.format(serial=self.dialect.serial_ddl) for s in self.schema]
        if self.url:
            # Concurrent CREATE ... IF NOT EXISTS can collide in Postgres' catalog: one creator at a time.
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key(f"schema:{self.schema_name}")])
                for statement in statements:
                    conn.execute(statement)
        else:
            with conn:
                for statement in statements:
                    conn.execute(statement)
        StateDB._ready.add(key)


@contextlib.contextmanager
def shared_lock(settings: Settings, name: str, local_file: Path) -> Iterator[None]:
    """Hold the lock ``name`` across every process sharing this state: an advisory lock in the state
    database when there is one (held by a connection of its own for the whole block), else ``flock`` on
    ``local_file``. Others wait for it."""
    url = settings.state_db_url
    if not url:
        with exclusive_lock(local_file):
            yield
        return
    conn = connect_postgres(url, f"loopline-lock-{name}")
    conn.autocommit = True
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", [lock_key(name)])
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [lock_key(name)])
    finally:
        conn.close()


_WATERMARK_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS watermarks (name TEXT PRIMARY KEY, value_json TEXT NOT NULL, "
    "updated_at TEXT NOT NULL)"
]


def read_watermark(settings: Settings, name: str, local_file: Path) -> dict[str, Any]:
    """The watermark ``name`` ({} when never written): a row in the state database, else a JSON file.

    Reading creates nothing in Postgres: serving reads the watermark as a role that may only SELECT it
    (``CREATE TABLE IF NOT EXISTS`` needs CREATE on the schema even when the table exists)."""
    if not settings.state_db_url:
        return json.loads(local_file.read_text()) if local_file.exists() else {}
    db = StateDB(settings.state_db_url, "watermarks", _WATERMARK_SCHEMA, "loopline-watermark")
    if db.url:
        with closing(connect_postgres(db.url, db.application)) as conn:
            if conn.execute("SELECT to_regclass('watermarks')").fetchone()[0] is None:
                return {}  # no materialisation has written one yet
            row = conn.execute("SELECT value_json FROM watermarks WHERE name = %s", [name]).fetchone()
        return json.loads(row[0]) if row else {}
    with db.connection() as (conn, dialect):
        row = conn.execute(dialect.sql("SELECT value_json FROM watermarks WHERE name = ?"), [name]).fetchone()
    return json.loads(row[0]) if row else {}


def write_watermark(settings: Settings, name: str, value: dict[str, Any], local_file: Path) -> None:
    """Replace the watermark ``name`` (atomically: a readers sees the old or the new value, never half)."""
    text = json.dumps(value)
    if not settings.state_db_url:
        local_file.parent.mkdir(parents=True, exist_ok=True)
        staged = local_file.with_name(local_file.name + ".tmp")
        staged.write_text(text)
        staged.replace(local_file)
        return
    db = StateDB(settings.state_db_url, "watermarks", _WATERMARK_SCHEMA, "loopline-watermark")
    with db.connection() as (conn, dialect):
        conn.execute(
            dialect.sql(
                "INSERT INTO watermarks (name, value_json, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value_json = excluded.value_json, "
                "updated_at = excluded.updated_at"
            ),
            [name, text, datetime.now(UTC).isoformat()],
        )
