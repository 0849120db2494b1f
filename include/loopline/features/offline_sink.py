"""Where the aggregate tables go: the offline store of the feature_store.yaml in use.

- ``ParquetSink``: ``<offline_dir>/<table>.parquet`` (embedded: Feast's duckdb store reads them).
- ``PostgresSink``: tables of the same names and columns in the Postgres offline store (production:
  the ``PostgreSQLSource`` of each view in ``feature_repo/fraud/features.py`` reads them).

Both are idempotent in the same way: a row replaces any stored row with the same
``(keys, event_timestamp)`` and is never duplicated, so re-running a recomputed interval (or an
overlapping one) leaves the same table. Postgres gets this from a primary key on those columns and an
``INSERT ... ON CONFLICT DO UPDATE`` from a temporary table bulk-loaded with ``COPY`` (no row inserts).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pandas as pd

from loopline.features.frames import TIMESTAMP, conform_table, empty_table, sort_table
from loopline.features.tables import KNOWN as _TABLES
from loopline.features.tables import AggregateTable

if TYPE_CHECKING:
    import psycopg

# Postgres column types of the pandas dtypes in tables.py (keys are strings).
PG_TYPES = {"int64": "bigint", "float64": "double precision"}
KEY_TYPE = "text"
TIMESTAMP_TYPE = "timestamp with time zone"  # Feast's point-in-time SQL compares against timestamptz
# Rows per CSV chunk handed to COPY: bounds the text buffer, not the transaction (one per table).
COPY_CHUNK_ROWS = 100_000


class OfflineSchemaMismatch(RuntimeError):
    """A stored aggregate table's columns differ from ``tables.py`` (a definition changed)."""


@runtime_checkable
class OfflineSink(Protocol):
    """Somewhere the aggregate tables are merged into; ``write`` returns the rows now in each table."""

    def write(self, tables: dict[str, pd.DataFrame]) -> dict[str, int]: ...


@dataclass(frozen=True)
class ParquetSink:
    """One parquet file per table in ``offline_dir`` (see ``write_aggregates``)."""

    offline_dir: Path

    def write(self, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
        return write_aggregates(self.offline_dir, tables)


def write_aggregates(offline_dir: Path, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Merge ``tables`` into ``<offline_dir>/<table>.parquet``; returns the rows now in each file.

    Idempotent: a row replaces any stored row with the same (keys, event_timestamp), never duplicates
    it, so writing the same rows twice or overlapping recomputations leave the same file. The file is
    rewritten atomically (a temporary file in the same folder, then ``os.replace``). Not safe for two
    concurrent writers of one table (the later merge wins); Airflow runs one refresh at a time.
    """
    offline_dir = Path(offline_dir)
    offline_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for name, rows in tables.items():
        if name not in _TABLES:
            raise ValueError(f"unknown aggregate table {name!r}; known: {sorted(_TABLES)}")
        table = _TABLES[name]
        path = offline_dir / f"{name}.parquet"
        new = conform_table(rows, table)
        stored = conform_table(pd.read_parquet(path), table) if path.exists() else empty_table(table)
        merged = _merge(stored, new, table)
        _write_atomic(merged, path)
        written[name] = len(merged)
    return written


def _merge(stored: pd.DataFrame, new: pd.DataFrame, table: AggregateTable) -> pd.DataFrame:
    key = [*table.keys, TIMESTAMP]
    new = new.drop_duplicates(subset=key, keep="last")
    if not len(stored):
        return sort_table(new, table)
    if not len(new):
        return stored
    # Only stored rows inside the new rows' time span can collide; dedupe just those.
    lo, hi = new[TIMESTAMP].min(), new[TIMESTAMP].max()
    inside = stored[TIMESTAMP].between(lo, hi).to_numpy()
    overlap = pd.concat([stored[inside], new], ignore_index=True).drop_duplicates(subset=key, keep="last")
    merged = pd.concat([stored[~inside], overlap], ignore_index=True)
    return sort_table(merged, table)


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class PostgresSink:
    """The aggregate tables in a Postgres database (one transaction per table)."""

    conninfo: str = field(repr=False)  # holds the password: kept out of logs and reprs

    def connect(self) -> psycopg.Connection:
        import psycopg

        return psycopg.connect(self.conninfo)

    def write(self, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
        written: dict[str, int] = {}
        with self.connect() as conn:
            for name, rows in tables.items():
                table = _table(name)
                new = conform_table(rows, table).drop_duplicates(subset=[*table.keys, TIMESTAMP], keep="last")
                with conn.transaction():
                    written[name] = _upsert(conn, table, new)
        return written

    def read(self, name: str) -> pd.DataFrame:
        """A whole stored table with ``tables.py``'s dtypes, sorted by keys and time (tests, checks)."""
        table = _table(name)
        with self.connect() as conn, conn.cursor() as cur:
            if not _stored_columns(conn, table.name):
                return empty_table(table)
            order = ", ".join(_quote(c) for c in (*table.keys, TIMESTAMP))
            cur.execute(
                f"SELECT {', '.join(map(_quote, table.columns))} FROM {_quote(table.name)} ORDER BY {order}"
            )
            frame = pd.DataFrame(cur.fetchall(), columns=table.columns)
        return conform_table(frame, table)


def sink_for(offline_store_config: object, offline_dir: Path) -> OfflineSink:
    """The sink of a Feast ``offline_store`` config: Postgres for ``type: postgres``, else parquet files
    in ``offline_dir`` (what the file-based stores — duckdb, dask/file — read)."""
    kind = getattr(offline_store_config, "type", "dask")
    if kind == "postgres":
        return PostgresSink(postgres_conninfo(offline_store_config))
    if kind in {"duckdb", "dask", "file"}:
        return ParquetSink(Path(offline_dir))
    raise ValueError(
        f"no aggregate writer for offline store {kind!r}: use duckdb, file or postgres "
        "(or add a sink in loopline/features/offline_sink.py)"
    )


def postgres_conninfo(config: Any) -> str:
    """libpq connection string of Feast's ``PostgreSQLConfig`` (host, port, database, user, password,
    sslmode and the schema as search_path) — the same server and schema Feast's queries use."""
    from psycopg.conninfo import make_conninfo

    schema = (getattr(config, "db_schema", None) or "public").strip()
    search_path = schema if schema == "public" else f"{schema},public"
    params = {
        "host": config.host,
        "port": int(config.port),
        "dbname": config.database,
        "user": config.user,
        "password": config.password,
        "sslmode": getattr(config, "sslmode", None),
        "sslkey": getattr(config, "sslkey_path", None),
        "sslcert": getattr(config, "sslcert_path", None),
        "sslrootcert": getattr(config, "sslrootcert_path", None),
        "options": f"-c search_path={search_path}",
    }
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


# --- SQL -------------------------------------------------------------------------------------------


def _table(name: str) -> AggregateTable:
    if name not in _TABLES:
        raise ValueError(f"unknown aggregate table {name!r}; known: {sorted(_TABLES)}")
    return _TABLES[name]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def column_types(table: AggregateTable) -> dict[str, str]:
    """Column -> Postgres type, in the table's column order."""
    return {
        **dict.fromkeys(table.keys, KEY_TYPE),
        TIMESTAMP: TIMESTAMP_TYPE,
        **{c: PG_TYPES[d] for c, d in table.features.items()},
    }


def create_table_sql(table: AggregateTable) -> str:
    """The table with its primary key (keys, event_timestamp): what makes the upsert idempotent, and
    the index Feast's point-in-time and materialisation queries filter by."""
    columns = ", ".join(
        f"{_quote(c)} {t}{' NOT NULL' if c in table.keys or c == TIMESTAMP else ''}"
        for c, t in column_types(table).items()
    )
    key = ", ".join(_quote(c) for c in (*table.keys, TIMESTAMP))
    return f"CREATE TABLE IF NOT EXISTS {_quote(table.name)} ({columns}, PRIMARY KEY ({key}))"


def _stored_columns(conn: psycopg.Connection, name: str) -> dict[str, str]:
    """Column -> type of the table ``name`` first on the search path; empty when there is none."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (_quote(name),),
    ).fetchall()
    return dict(rows)


def _upsert(conn: psycopg.Connection, table: AggregateTable, rows: pd.DataFrame) -> int:
    conn.execute(create_table_sql(table))
    stored, wanted = _stored_columns(conn, table.name), column_types(table)
    if stored != wanted:
        raise OfflineSchemaMismatch(
            f"offline table {table.name!r} has columns {stored}, but loopline.features.tables defines "
            f"{wanted}: migrate it (ALTER TABLE) or drop it and refresh the aggregates over the full history"
        )
    staging = _quote(f"_loopline_load_{table.name}")
    conn.execute(f"CREATE TEMPORARY TABLE {staging} (LIKE {_quote(table.name)}) ON COMMIT DROP")
    columns = ", ".join(_quote(c) for c in table.columns)
    with conn.cursor().copy(f"COPY {staging} ({columns}) FROM STDIN (FORMAT csv)") as copy:
        for chunk in _csv_chunks(rows):
            copy.write(chunk)
    key = ", ".join(_quote(c) for c in (*table.keys, TIMESTAMP))
    updates = ", ".join(f"{_quote(c)} = EXCLUDED.{_quote(c)}" for c in table.features)
    conn.execute(
        f"INSERT INTO {_quote(table.name)} ({columns}) SELECT {columns} FROM {staging} "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )
    row = conn.execute(f"SELECT count(*) FROM {_quote(table.name)}").fetchone()
    assert row is not None  # count(*) always returns one row
    (count,) = row
    return int(count)


def _csv_chunks(rows: pd.DataFrame) -> Iterator[str]:
    """CSV text for COPY: pandas' C writer (fast), nulls as empty unquoted fields (COPY's NULL in csv),
    floats in Python's shortest round-trip form (what is stored reads back bit for bit), timestamps
    as ISO text with their UTC offset."""
    for start in range(0, len(rows), COPY_CHUNK_ROWS):
        buffer = io.StringIO()
        rows.iloc[start : start + COPY_CHUNK_ROWS].to_csv(buffer, index=False, header=False, na_rep="")
        yield buffer.getvalue()
