"""Write–audit–publish for landed batches.

A batch file in the landing zone is read, validated with the Great Expectations suite of its kind
(``transactions`` or ``labels``, from its folder), then either

* **published** — rows go into the curated store as parquet partitioned by day, the source file is
  archived byte for byte, and the ledger remembers its content hash so a re-delivery or a rerun is
  ``already_published`` and never duplicates a row; or
* **quarantined** — the file moves to ``quarantine/<batch_id>/`` beside a JSON and an HTML report
  naming every failed expectation, column, count and a sample of bad values.

Nothing is lost either way, and an unreadable file is quarantined with a clear error, not a crash.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loopline.config import Settings
from loopline.data.schema import BATCH_KINDS, BatchKind, columns_for
from loopline.platform.files import exclusive_lock, sha256_file

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas as pd

Status = Literal["published", "already_published", "quarantined"]
SUPPORTED_SUFFIXES = (".parquet", ".csv")
# The day partition of each kind: when it happened / when the label became known.
PARTITION_COLUMN: dict[str, str] = {"transactions": "event_timestamp", "labels": "label_timestamp"}
# Kinds partitioned by a time the id fixes (a transaction id is one event at one time): a redelivered
# row lands in the same day partition, so deduplication only needs the partitions the batch touches.
# Labels are partitioned by when the label became known, which a re-sent label may change: all of them.
DEDUPE_WITHIN_PARTITION: frozenset[str] = frozenset({"transactions"})
KEY_COLUMN = "transaction_id"


class BatchGone(FileNotFoundError):
    """The landed file is no longer there (another run already took it)."""


class UnreadableBatch(ValueError):
    """The file cannot be read as a batch; the message says why and what to deliver instead."""


@dataclass(frozen=True)
class IngestResult:
    status: Status
    batch_id: str
    kind: str
    source: str
    content_hash: str
    rows: int
    published_rows: int = 0
    duplicates_skipped: int = 0
    report: str | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    partitions: list[str] = field(default_factory=list)
    stored_at: str | None = None  # where the source bytes are kept now (archive or quarantine)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One paragraph a person can act on."""
        if self.status != "quarantined":
            extra = f", {len(self.warnings)} warning(s)" if self.warnings else ""
            return (
                f"{self.kind} batch {self.batch_id}: {self.status}, {self.published_rows} of {self.rows} rows "
                f"published ({self.duplicates_skipped} already present){extra}"
            )
        lines = [f"{self.kind} batch {self.batch_id} from {self.source} was quarantined ({self.report}):"]
        for failure in self.failures:
            sample = f"; sample {failure['sample']}" if failure.get("sample") else ""
            lines.append(f"  - [{failure['expectation']}] {failure['message']}{sample}")
        return "\n".join(lines)


# --- the landing zone -------------------------------------------------------------------------------


def landing_dir(settings: Settings, kind: BatchKind) -> Path:
    return settings.state.landing / kind


def is_batch_candidate(path: Path) -> bool:
    """Anything delivered into a kind folder counts, except hidden and in-flight files."""
    name = path.name
    return path.is_file() and not name.startswith((".", "_")) and not name.endswith((".tmp", ".part"))


def landed_files(settings: Settings) -> list[Path]:
    """Files waiting in the landing zone, oldest first."""
    found = [
        path
        for kind in BATCH_KINDS
        if (folder := landing_dir(settings, kind)).is_dir()
        for path in folder.iterdir()
        if is_batch_candidate(path)
    ]
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def kind_of(path: Path) -> BatchKind | None:
    parent = path.parent.name
    return parent if parent in BATCH_KINDS else None  # type: ignore[return-value]


def batch_id_for(kind: str, path: Path, digest: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:80]
    return f"{kind}__{stem}__{digest[:12]}"


def read_batch(path: Path, kind: BatchKind) -> pd.DataFrame:
    """Read a parquet or CSV batch; contract types are applied to CSV text where they parse."""
    import pandas as pd

    if path.stat().st_size == 0:
        raise UnreadableBatch("the file is empty (0 bytes): re-deliver the batch")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnreadableBatch(f"unsupported file type {suffix or '(none)'!r}: deliver .parquet or .csv")
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        frame = pd.read_csv(path, dtype=str, keep_default_na=True)
    except Exception as exc:  # pyarrow and pandas raise many types for corrupt input
        raise UnreadableBatch(
            f"not a readable {suffix[1:]} file ({type(exc).__name__}: {exc}); it may be truncated "
            "or corrupt: re-deliver it"
        ) from exc
    return _typed_csv(frame, kind)


def _typed_csv(frame: pd.DataFrame, kind: BatchKind) -> pd.DataFrame:
    """CSV is all text: convert the contract's columns where every value parses, else leave the text
    so the suite's type expectation names the column and shows the offending values."""
    import pandas as pd

    for name, dtype in columns_for(kind).items():
        if name not in frame.columns:
            continue
        column = frame[name]
        try:
            if dtype.startswith("datetime"):
                frame[name] = pd.to_datetime(column, utc=True, format="ISO8601")
            elif dtype in ("float64", "int64"):
                frame[name] = pd.to_numeric(column).astype(dtype) if column.notna().all() else pd.to_numeric(column)
            else:
                frame[name] = column.astype("string")
        except (ValueError, TypeError):
            continue
    return frame


# --- the ledger -------------------------------------------------------------------------------------


class IngestLedger:
    """SQLite record of every batch seen: content hash → outcome. Publishing is idempotent on it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                """CREATE TABLE IF NOT EXISTS batches (
                    content_hash TEXT NOT NULL, batch_id TEXT NOT NULL, kind TEXT NOT NULL,
                    source TEXT NOT NULL, status TEXT NOT NULL, rows INTEGER NOT NULL,
                    published_rows INTEGER NOT NULL, duplicates_skipped INTEGER NOT NULL,
                    report TEXT, result_json TEXT NOT NULL, recorded_at TEXT NOT NULL)"""
            )
            db.execute("CREATE INDEX IF NOT EXISTS batches_hash ON batches (content_hash, status)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def published(self, digest: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT result_json FROM batches WHERE content_hash = ? AND status = 'published' LIMIT 1",
                (digest,),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def record(self, result: IngestResult) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.content_hash, result.batch_id, result.kind, result.source, result.status,
                    result.rows, result.published_rows, result.duplicates_skipped, result.report,
                    json.dumps(result.to_dict()), datetime.now(UTC).isoformat(),
                ),
            )

    def published_since(self, cursor: int, kind: str) -> list[tuple[int, dict[str, Any]]]:
        """(ledger position, result) of every ``kind`` batch published after position ``cursor``."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT rowid, result_json FROM batches WHERE rowid > ? AND status = 'published' AND kind = ? "
                "ORDER BY rowid",
                (cursor, kind),
            ).fetchall()
        return [(r[0], json.loads(r[1])) for r in rows]

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT result_json, recorded_at FROM batches ORDER BY rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{**json.loads(r[0]), "recorded_at": r[1]} for r in rows]


def _ingest_lock(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """One batch at a time per state dir: dedupe and the ledger must see each other's writes."""
    return exclusive_lock(settings.state.curated / ".ingest.lock")


# --- publish and quarantine -------------------------------------------------------------------------


def curated_dir(settings: Settings, kind: str) -> Path:
    return settings.state.curated / kind


def existing_keys(settings: Settings, kind: str, days: Iterable[str] | None = None) -> set[str]:
    """Transaction ids already in the curated store of ``kind``: in the ``date=YYYY-MM-DD`` partitions
    of ``days`` only, or in all of them (``None``)."""
    import pyarrow.parquet as pq

    folder = curated_dir(settings, kind)
    files = (folder.glob("date=*/*.parquet") if days is None
             else (f for day in sorted(set(days)) for f in (folder / f"date={day}").glob("*.parquet")))
    keys: set[str] = set()
    for part in files:
        keys.update(pq.read_table(part, columns=[KEY_COLUMN]).column(0).to_pylist())
    return keys


def _write_atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def publish(
    settings: Settings, frame: pd.DataFrame, kind: str, batch_id: str
) -> tuple[int, list[str], list[str]]:
    """Append the batch's new rows to the curated store, one file per day partition.

    Returns (published rows, ids skipped because they are already curated, partitions written).
    File names carry the batch id, so a publish interrupted half-way is completed by a rerun.
    """
    import pandas as pd

    batch_days = pd.to_datetime(frame[PARTITION_COLUMN[kind]], utc=True).dt.strftime("%Y-%m-%d")
    # Reading every curated id on each publish grows with history; the batch's own days do not.
    known = existing_keys(settings, kind, batch_days.unique() if kind in DEDUPE_WITHIN_PARTITION else None)
    already = frame[KEY_COLUMN].isin(known)
    fresh = frame[~already]
    skipped = frame.loc[already, KEY_COLUMN].astype(str).tolist()
    days = batch_days[~already]
    written = []
    for day, rows in fresh.groupby(days, sort=True):
        target = curated_dir(settings, kind) / f"date={day}" / f"{batch_id}.parquet"
        _write_atomic_parquet(rows.reset_index(drop=True), target)
        written.append(str(target.relative_to(settings.state.curated)))
    return len(fresh), skipped, written


def _move_or_copy(source: Path, target: Path, inside_landing: bool) -> Path:
    """Landing is a queue, so its files move; a file handed in from elsewhere is copied, never taken."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if inside_landing:
        shutil.move(source, target)
    else:
        shutil.copy2(source, target)
    return target


def _html_report(result: IngestResult) -> str:
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(value))}</td>"
            for value in (
                item["severity"], item["expectation"], item.get("column") or "(table)",
                item.get("count") if item.get("count") is not None else "", item["message"],
                ", ".join(map(str, item.get("sample") or [])),
            )
        )
        + "</tr>"
        for item in [*result.failures, *result.warnings]
    )
    title = f"{result.kind} batch {result.batch_id}: {result.status}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
.critical{{color:#b00}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Source: <code>{html.escape(result.source)}</code><br>Content hash: <code>{result.content_hash}</code><br>
Rows: {result.rows}<br>Kept at: <code>{html.escape(result.stored_at or "")}</code></p>
<table><tr><th>severity</th><th>expectation</th><th>column</th><th>bad values</th><th>what</th>
<th>sample</th></tr>{rows}</table></body></html>
"""


def _write_reports(directory: Path, result: IngestResult) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    (directory / "report.html").write_text(_html_report(result))
    return directory / "report.json"


# --- the whole step ---------------------------------------------------------------------------------


def ingest_file(settings: Settings, path: Path, kind: BatchKind | None = None) -> IngestResult:
    """Audit one batch file and publish or quarantine it (see the module docstring)."""
    from loopline.data.validation import Failure, validate_frame

    settings.state.ensure()
    path = Path(path).resolve()
    inside_landing = path.is_relative_to(settings.state.landing.resolve())
    with _ingest_lock(settings):
        if not path.exists():
            raise BatchGone(f"{path} is gone (already ingested by another run?)")
        kind = kind or kind_of(path)
        digest = sha256_file(path)
        ledger = IngestLedger(settings.state.ingest_ledger)
        batch_id = batch_id_for(kind or "unknown", path, digest)
        base = {"batch_id": batch_id, "kind": kind or "unknown", "source": str(path), "content_hash": digest}

        def quarantine(failures: list[dict[str, Any]], rows: int, warnings: list[dict[str, Any]]) -> IngestResult:
            folder = settings.state.quarantine / batch_id
            kept = _move_or_copy(path, folder / path.name, inside_landing)
            draft = IngestResult(status="quarantined", rows=rows, failures=failures, warnings=warnings,
                                 stored_at=str(kept), report=str(folder / "report.json"), **base)
            _write_reports(folder, draft)
            ledger.record(draft)
            return draft

        if kind is None:
            return quarantine([_unreadable(
                f"cannot tell the batch kind of {path.name}: deliver it under landing/transactions/ "
                "or landing/labels/ (or pass --kind)")], 0, [])

        previous = ledger.published(digest)
        if previous is not None:
            kept = _move_or_copy(path, settings.state.archive / kind / f"{batch_id}__dup__{path.name}", inside_landing)
            result = IngestResult(
                status="already_published", rows=previous["rows"], report=previous.get("report"),
                stored_at=str(kept), partitions=previous.get("partitions", []), **base,
            )
            ledger.record(result)
            return result

        try:
            frame = read_batch(path, kind)
        except UnreadableBatch as exc:
            return quarantine([_unreadable(str(exc))], 0, [])

        outcome = validate_frame(frame, kind, settings.config_dir)
        failures = [f.to_dict() for f in outcome.blocking]
        warnings = [f.to_dict() for f in outcome.warnings]
        if failures:
            return quarantine(failures, len(frame), warnings)

        ordered = frame[list(columns_for(kind))]
        published_rows, skipped_ids, partitions = publish(settings, ordered, kind, batch_id)
        skipped = len(skipped_ids)
        if skipped:
            warnings.append(Failure(
                expectation="rows_not_yet_published", column=KEY_COLUMN, severity="warning", count=skipped,
                sample=skipped_ids[:5],
                message=f"{skipped} row(s) were already in the curated store and were not published again",
            ).to_dict())
        kept = _move_or_copy(path, settings.state.archive / kind / f"{batch_id}__{path.name}", inside_landing)
        report_dir = settings.state.reports / "ingest" / batch_id
        result = IngestResult(
            status="published", rows=len(frame), published_rows=published_rows, duplicates_skipped=skipped,
            warnings=warnings, partitions=partitions, stored_at=str(kept),
            report=str(report_dir / "report.json"), **base,
        )
        _write_reports(report_dir, result)
        ledger.record(result)
        return result


def _unreadable(message: str) -> dict[str, Any]:
    return {"expectation": "file_is_a_readable_batch", "column": None, "severity": "critical",
            "count": None, "sample": [], "message": message}
