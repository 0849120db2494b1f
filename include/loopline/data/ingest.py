"""Write–audit–publish for landed batches.

A batch file in the landing zone is read, validated with the Great Expectations suite of its kind
(the use case's events or labels, from its folder: ``transactions`` or ``labels`` for fraud), then either

* **published** — rows go into the curated store as parquet partitioned by day, the source file is
  archived byte for byte, and the ledger remembers its content hash so a re-delivery or a rerun is
  ``already_published`` and never duplicates a row; or
* **quarantined** — the file moves to ``quarantine/<batch_id>/`` beside a JSON and an HTML report
  naming every failed expectation, column, count and a sample of bad values.

Nothing is lost either way, and an unreadable file is quarantined with a clear error, not a crash.

Two safety rules on top (issue 19):

* **The landing zone takes files, not links.** A symbolic link in a kind folder, or an entry that
  resolves outside the landing zone (through a linked folder), is *refused*: never opened, hashed,
  moved or copied — a link to ``.loopline/run/secrets.json`` must not end up in quarantine, where the
  UI serves it. A refusal is reported like any other unusable batch (a ``quarantined`` result and
  ledger row whose failure ``file_is_inside_the_landing_zone`` says why, with ``quarantine/<batch_id>/``
  holding only ``report.json``/``report.html``, ``stored_at`` None and ``content_hash`` empty: nothing
  was read); a refused *link* is then removed from the landing zone (the link only, never what it
  points to), so the queue does not fail on it forever. See ``landing_refusal``.
* **A batch is published all at once, and a crash never loses or hides it.** Its day partitions
  are first written under staged names (``.<batch_id>.parquet.staged``, which no reader lists: they
  read ``date=*/*.parquet``), then an intent — the complete result, with every partition it will
  publish — is committed to the ledger, then the staged files are renamed into place (the batch marked
  ``<kind>/.publishing/<batch_id>`` meanwhile: readers, through ``visible_partition_files``, leave out
  all of a marked batch, so even a crash between two renames shows none of it), the source is
  archived, the report written, and the ledger row recorded while the intent is dropped, in one
  transaction. Every ``ingest_file`` first rolls forward any intent a crashed run left behind, so a
  retry after a crash at any point publishes exactly the batch's rows and its ledger row lists every
  partition (``IngestLedger.published_since``, from which materialisation plans). See ``publish``.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loopline.config import Settings
from loopline.config.use_case import UseCase, load_use_case
from loopline.storage.file_helpers import sha256_file
from loopline.storage.files import (
    as_path,
    check_local_read,
    is_remote,
    read_parquet,
    read_parquet_table,
    sync,
    transfer,
    write_parquet,
)
from loopline.storage.files import (
    replace as replace_file,
)
from loopline.storage.state_db import SqlDialect, StateDB, is_postgres_url, shared_lock

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas as pd

log = logging.getLogger(__name__)

Status = Literal["published", "already_published", "quarantined"]
SUPPORTED_SUFFIXES = (".parquet", ".csv")


def use_case_of(settings: Settings) -> UseCase:
    """The data contract batches are held to: the use case the settings name (``LOOPLINE_USE_CASE``)."""
    return load_use_case(settings.use_case)


def partition_column(use_case: UseCase, kind: str) -> str:
    """The day partition of a batch kind: when the event happened / when the label became known."""
    return use_case.time_column if kind == use_case.batch_names["events"] else use_case.label_time_column


def dedupe_within_partition(use_case: UseCase, kind: str) -> bool:
    """Events are partitioned by a time their id fixes (one id is one event at one time): a redelivered row
    lands in the same day partition, so deduplication only needs the partitions the batch touches. Labels
    are partitioned by when the label became known, which a re-sent label may change: all of them."""
    return kind == use_case.batch_names["events"]


class BatchGone(FileNotFoundError):
    """The landed file is no longer there (another run already took it)."""


class UnknownBatchKind(ValueError):
    """A batch kind the use case does not land (``--kind``); the message names the ones it does."""


class UnreadableBatch(ValueError):
    """The file cannot be read as a batch; the message says why and what to deliver instead."""


class IncompletePublish(RuntimeError):
    """A publish intent names a partition that is neither staged nor in place (deleted by hand?)."""


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


def landing_dir(settings: Settings, kind: str) -> Path:
    return settings.state.landing / kind


def is_batch_candidate(path: Path) -> bool:
    """Anything delivered into a kind folder counts, except hidden and in-flight files.

    Symbolic links count too (even dangling ones), so that ``ingest_file`` refuses and reports them
    and takes them out of the queue, rather than leaving them unexplained in the landing zone."""
    name = path.name
    return (
        (path.is_symlink() or path.is_file())
        and not name.startswith((".", "_"))
        and not name.endswith((".tmp", ".part"))
    )


def landed_files(settings: Settings) -> list[Path]:
    """Files waiting in the landing zone, oldest first (links by their own time: never followed)."""
    found = [
        path
        for kind in use_case_of(settings).batch_kinds
        if (folder := landing_dir(settings, kind)).is_dir()
        for path in folder.iterdir()
        if is_batch_candidate(path)
    ]
    return sorted(found, key=lambda p: (_delivered_at(p), p.name))


def _delivered_at(path: Path) -> float:
    # A link by its own time (never followed); an object by its upload time.
    return (path.stat() if is_remote(path) else path.lstat()).st_mtime


def landing_refusal(settings: Settings, path: Path) -> str | None:
    """Why ``path`` (as delivered, links not yet followed) must not be read, or None when it may be.

    Only entries of the landing zone are judged: a file named on the command line from elsewhere is
    the operator's own choice (and is copied, never taken). In the landing zone, a symbolic link is
    refused wherever it points, and so is anything that resolves outside the zone (a linked folder).
    Hard links are not refused: making one needs the right to read the target already. Object
    storage has no links: nothing there is refused.
    """
    if is_remote(path):
        return None
    given = Path(os.path.abspath(path))  # ``..`` folded by text; no link followed
    zone = settings.state.landing.resolve()
    where = given.parent.resolve() / given.name  # the folder's links followed, the entry's not
    if not (
        given.is_relative_to(Path(os.path.abspath(settings.state.landing)))
        or given.is_relative_to(zone)
        or where.is_relative_to(zone)
    ):
        return None
    if given.is_symlink():
        return (
            f"{given.name} is a symbolic link (to {os.readlink(given)}), not a delivered file: the "
            "landing zone takes files only, so it was not read and the link was removed; deliver the "
            "file itself"
        )
    if not given.resolve().is_relative_to(zone):
        return (
            f"{given} resolves to {given.resolve()}, outside the landing zone {zone} (a folder on its "
            "way is a link): it was not read; deliver batches into the landing zone's own folders"
        )
    return None


def kind_of(path: Path, use_case: UseCase) -> str | None:
    """The batch kind a landed file's folder names (``landing/<kind>/<file>``), None for another folder."""
    parent = path.parent.name
    return parent if parent in use_case.batch_kinds else None


def batch_id_for(kind: str, path: Path, digest: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:80]
    return f"{kind}__{stem}__{digest[:12]}"


def read_batch(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    """Read a parquet or CSV batch; contract types are applied to CSV text where they parse."""
    import pandas as pd

    if path.stat().st_size == 0:
        raise UnreadableBatch("the file is empty (0 bytes): re-deliver the batch")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnreadableBatch(f"unsupported file type {suffix or '(none)'!r}: deliver .parquet or .csv")
    try:
        if suffix == ".parquet":
            table: pd.DataFrame = read_parquet(path)
            return table
        with path.open("rb") as handle:
            frame = pd.read_csv(handle, dtype=str, keep_default_na=True)
    except Exception as exc:  # pyarrow and pandas raise many types for corrupt input
        raise UnreadableBatch(
            f"not a readable {suffix[1:]} file ({type(exc).__name__}: {exc}); it may be truncated "
            "or corrupt: re-deliver it"
        ) from exc
    return _typed_csv(frame, columns)


def _typed_csv(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """CSV is all text: convert the contract's columns where every value parses, else leave the text
    so the suite's type expectation names the column and shows the offending values."""
    import pandas as pd

    for name, dtype in columns.items():
        if name not in frame.columns:
            continue
        column = frame[name]
        try:
            if dtype.startswith("datetime"):
                frame[name] = pd.to_datetime(column, utc=True, format="ISO8601")
            elif dtype in ("float64", "int64"):
                frame[name] = (
                    # ignore: pandas-stubs take only literal dtype names; the contract's are plain str
                    pd.to_numeric(column).astype(dtype)  # type: ignore[call-overload]
                    if column.notna().all()
                    else pd.to_numeric(column)
                )
            else:
                frame[name] = column.astype("string")
        except (ValueError, TypeError):
            continue
    return frame


# --- the ledger -------------------------------------------------------------------------------------


class IngestLedger:
    """Record of every batch seen: content hash → outcome. Publishing is idempotent on it.

    SQLite in the state dir (``IngestLedger(path)``), or Postgres where tasks share no disk
    (``IngestLedger.of(settings)`` with ``LOOPLINE_STATE_DB_URL``): the same tables either way.
    """

    # SQLite keeps its historical table names; Postgres gets prefixed ones (the database is shared).
    def __init__(self, location: Path | str) -> None:
        postgres = is_postgres_url(str(location))
        self.batches = "ingest_batches" if postgres else "batches"
        self.publishing = "ingest_publishing" if postgres else "publishing"
        self.db = StateDB(
            location,
            "ingest-ledger",
            [
                f"""CREATE TABLE IF NOT EXISTS {self.batches} ({{serial}}
                content_hash TEXT NOT NULL, batch_id TEXT NOT NULL, kind TEXT NOT NULL,
                source TEXT NOT NULL, status TEXT NOT NULL, rows INTEGER NOT NULL,
                published_rows INTEGER NOT NULL, duplicates_skipped INTEGER NOT NULL,
                report TEXT, result_json TEXT NOT NULL, recorded_at TEXT NOT NULL)""",
                f"CREATE INDEX IF NOT EXISTS {self.batches}_hash ON {self.batches} (content_hash, status)",
                # Publishes under way: the result they will record, committed before any partition is
                # renamed into place (see ``publish``); a row left here is a run that crashed.
                f"""CREATE TABLE IF NOT EXISTS {self.publishing} ({{serial}}
                content_hash TEXT {"UNIQUE" if postgres else "PRIMARY KEY"}, result_json TEXT NOT NULL,
                inside_landing INTEGER NOT NULL, recorded_at TEXT NOT NULL)""",
            ],
            "loopline-ingest",
        )
        self.path = self.db.path

    @classmethod
    def of(cls, settings: Settings) -> IngestLedger:
        """The ledger every task of these settings shares."""
        return cls(settings.state_db_url or settings.state.ingest_ledger)

    def exists(self) -> bool:
        """Whether anything was ever recorded (a reader creates no SQLite file)."""
        return self.path is None or self.path.exists()

    def published(self, digest: str) -> dict[str, Any] | None:
        with self.db.connection() as (db, sql):
            row = db.execute(
                sql.sql(
                    f"SELECT result_json FROM {self.batches} WHERE content_hash = ? AND status = 'published' "
                    "LIMIT 1"
                ),
                (digest,),
            ).fetchone()
        return json.loads(row[0]) if row else None

    def record(self, result: IngestResult) -> None:
        with self.db.connection() as (db, sql):
            self._insert(db, sql, result)

    def _insert(self, db: Any, sql: SqlDialect, result: IngestResult) -> None:
        db.execute(
            sql.sql(
                f"INSERT INTO {self.batches} (content_hash, batch_id, kind, source, status, rows, published_rows, "
                "duplicates_skipped, report, result_json, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            (
                result.content_hash,
                result.batch_id,
                result.kind,
                result.source,
                result.status,
                result.rows,
                result.published_rows,
                result.duplicates_skipped,
                result.report,
                json.dumps(result.to_dict()),
                datetime.now(UTC).isoformat(),
            ),
        )

    def begin_publish(self, result: IngestResult, inside_landing: bool) -> None:
        """Remember (durably: the commit is synced) that ``result`` is being published."""
        with self.db.connection() as (db, sql):
            db.execute(
                sql.sql(f"DELETE FROM {self.publishing} WHERE content_hash = ?"), (result.content_hash,)
            )
            db.execute(
                sql.sql(
                    f"INSERT INTO {self.publishing} (content_hash, result_json, inside_landing, recorded_at) "
                    "VALUES (?, ?, ?, ?)"
                ),
                (
                    result.content_hash,
                    json.dumps(result.to_dict()),
                    int(inside_landing),
                    datetime.now(UTC).isoformat(),
                ),
            )

    def finish_publish(self, result: IngestResult) -> None:
        """Record the published ``result`` and drop its intent: one transaction, so exactly once."""
        with self.db.connection() as (db, sql):
            self._insert(db, sql, result)
            db.execute(
                sql.sql(f"DELETE FROM {self.publishing} WHERE content_hash = ?"), (result.content_hash,)
            )

    def abandon_publish(self, digest: str) -> None:
        with self.db.connection() as (db, sql):
            db.execute(sql.sql(f"DELETE FROM {self.publishing} WHERE content_hash = ?"), (digest,))

    def unfinished(self) -> list[tuple[IngestResult, bool]]:
        """(result, whether its source is in the landing zone) of every publish a crash interrupted."""
        with self.db.connection() as (db, sql):
            rows = db.execute(
                f"SELECT result_json, inside_landing FROM {self.publishing} ORDER BY {sql.serial}"
            ).fetchall()
        return [(IngestResult(**json.loads(r[0])), bool(r[1])) for r in rows]

    def published_since(self, cursor: int, kind: str) -> list[tuple[int, dict[str, Any]]]:
        """(ledger position, result) of every ``kind`` batch published after position ``cursor``."""
        with self.db.connection() as (db, sql):
            rows = db.execute(
                sql.sql(
                    f"SELECT {sql.serial}, result_json FROM {self.batches} WHERE {sql.serial} > ? "
                    f"AND status = 'published' AND kind = ? ORDER BY {sql.serial}"
                ),
                (cursor, kind),
            ).fetchall()
        return [(r[0], json.loads(r[1])) for r in rows]

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.db.connection() as (db, sql):
            rows = db.execute(
                sql.sql(
                    f"SELECT result_json, recorded_at FROM {self.batches} ORDER BY {sql.serial} DESC LIMIT ?"
                ),
                (limit,),
            ).fetchall()
        return [{**json.loads(r[0]), "recorded_at": r[1]} for r in rows]


def _ingest_lock(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """One batch at a time across every ingest of this state: dedupe and the ledger must see each
    other's writes. Without a state database the lock is a local file: enough for one machine, which is
    why tasks on several machines need ``LOOPLINE_STATE_DB_URL`` as well as ``LOOPLINE_STORAGE_URL``."""
    return shared_lock(settings, "ingest", settings.state.run_dir / "locks" / "ingest.lock")


# --- publish and quarantine -------------------------------------------------------------------------


def curated_dir(settings: Settings, kind: str) -> Path:
    return settings.state.curated / kind


def existing_keys(
    settings: Settings, kind: str, days: Iterable[str] | None = None, *, ignoring: str | None = None
) -> set[str]:
    """Event ids (the use case's ``id_column``) already in the curated store of ``kind``: in the ``date=YYYY-MM-DD`` partitions
    of ``days`` only, or in all of them (``None``); files named ``ignoring`` are left out. Staged
    files of a publish under way (``.*.parquet.staged``) are never read."""
    keys: set[str] = set()
    id_column = use_case_of(settings).id_column
    for part in visible_partition_files(curated_dir(settings, kind), days):
        if part.name != ignoring:
            keys.update(read_parquet_table(part, columns=[id_column]).column(0).to_pylist())
    return keys


STAGED_SUFFIX = ".staged"
# ``<kind>/.publishing/<batch_id>``: the batch's files are being renamed into place. Readers leave out every
# file of such a batch, so they see a batch all at once or not at all, even after a crash mid-rename.
PUBLISHING_DIR = ".publishing"


def publishing_batches(kind_dir: Path) -> set[str]:
    """Batch ids whose partitions are being renamed into place under ``kind_dir`` (hidden from readers)."""
    marks = kind_dir / PUBLISHING_DIR
    return {mark.name for mark in marks.iterdir()} if marks.is_dir() else set()


def visible_partition_files(kind_dir: Path, days: Iterable[str] | None = None) -> list[Path]:
    """The published parquet files of the ``date=YYYY-MM-DD`` partitions under ``kind_dir`` (of ``days``
    only, or all): what every reader of the curated store reads. Staged files and the files of a batch
    whose publish is under way are left out."""
    files = (
        kind_dir.glob("date=*/*.parquet")
        if days is None
        else (f for day in sorted(set(days)) for f in (kind_dir / f"date={day}").glob("*.parquet"))
    )
    hidden = publishing_batches(kind_dir)
    return sorted((f for f in files if not f.name.startswith(".") and f.stem not in hidden), key=str)


def staged_path(final: Path) -> Path:
    """Where a partition file waits until its batch is published: hidden, and not ``*.parquet``."""
    return final.with_name(f".{final.name}{STAGED_SUFFIX}")


def stage_partition(frame: pd.DataFrame, final: Path) -> None:
    """Write one partition file under its staged name, synced to disk (a publish intent may name it)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(frame, staged_path(final))


def promote_partition(settings: Settings, partition: str) -> None:
    """Rename one staged partition into place; a partition already in place is left as it is."""
    final = settings.state.curated / partition
    staged = staged_path(final)
    if staged.exists():
        replace_file(staged, final)
    elif not final.exists():
        raise IncompletePublish(f"partition {partition} is neither staged nor published")


def stage(
    settings: Settings, frame: pd.DataFrame, kind: str, batch_id: str
) -> tuple[int, list[str], list[str]]:
    """Write the batch's new rows as staged day-partition files, invisible to every reader.

    Returns (rows staged, ids skipped because they are already curated, partitions to publish). The
    batch's own files (``<batch_id>.parquet``, its content hash in the name) do not count as curated:
    such files without a ledger row are left by an interrupted publish of this very batch (before
    publish intents existed), and are rewritten with the same rows.
    """
    import pandas as pd

    use_case = use_case_of(settings)
    batch_days = pd.to_datetime(frame[partition_column(use_case, kind)], utc=True).dt.strftime("%Y-%m-%d")
    # Reading every curated id on each publish grows with history; the batch's own days do not.
    known = existing_keys(
        settings,
        kind,
        batch_days.unique() if dedupe_within_partition(use_case, kind) else None,
        ignoring=f"{batch_id}.parquet",
    )
    already = frame[use_case.id_column].isin(known)
    fresh = frame[~already]
    skipped = frame.loc[already, use_case.id_column].astype(str).tolist()
    days = batch_days[~already]
    partitions = []
    for day, rows in fresh.groupby(days, sort=True):
        target = curated_dir(settings, kind) / f"date={day}" / f"{batch_id}.parquet"
        stage_partition(rows.reset_index(drop=True), target)
        partitions.append(str(target.relative_to(settings.state.curated)))
    return len(fresh), skipped, partitions


def _publishing_marks(settings: Settings, partitions: list[str]) -> list[Path]:
    """``<kind>/.publishing/<batch_id>`` of the batches these partitions (``<kind>/date=…/<batch_id>.parquet``)
    belong to."""
    return sorted(
        {settings.state.curated / Path(p).parts[0] / PUBLISHING_DIR / Path(p).stem for p in partitions},
        key=str,
    )


def promote(settings: Settings, partitions: list[str]) -> None:
    """Rename every staged partition into place, then sync their folders. Readers do not see the batch
    until all are in place: it is marked as publishing (synced) first, and the mark goes last; a crash in
    between leaves the batch hidden until its publish is finished or rolled back (``finish_interrupted``)."""
    marks = _publishing_marks(settings, partitions)
    for mark in marks:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    for folder in sorted({mark.parent for mark in marks}, key=str):
        sync(folder)
    for partition in partitions:
        promote_partition(settings, partition)
    for folder in sorted({(settings.state.curated / p).parent for p in partitions}, key=str):
        sync(folder)
    for mark in marks:
        mark.unlink()


def publish(
    settings: Settings, frame: pd.DataFrame, kind: str, batch_id: str
) -> tuple[int, list[str], list[str]]:
    """Append the batch's new rows to the curated store, one file per day partition.

    Returns (published rows, ids skipped because they are already curated, partitions written).
    Every partition is written under a staged name first and renamed into place only when all are
    written, so a reader never sees a file half-written nor the batch's days trickle in one by one.
    This is the whole publish for callers without a ledger (tests, benchmarks); ``ingest_file`` runs
    the same two steps with a publish intent in the ledger between them, which makes a crash anywhere
    recoverable (see the module docstring).
    """
    published, skipped, partitions = stage(settings, frame, kind, batch_id)
    promote(settings, partitions)
    return published, skipped, partitions


def _move_or_copy(source: Path, target: Path, inside_landing: bool) -> Path:
    """Landing is a queue, so its files move; a file handed in from elsewhere is copied, never taken.

    ``source`` is a resolved path, so never a link; should one have been swapped in since, it is
    refused here rather than followed (its target's bytes would land in archive or quarantine)."""
    if source.is_symlink():
        raise UnreadableBatch(f"{source} became a symbolic link while it was ingested: refused")
    kept: Path = transfer(source, target, move=inside_landing)
    return kept


def _html_report(result: IngestResult) -> str:
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(value))}</td>"
            for value in (
                item["severity"],
                item["expectation"],
                item.get("column") or "(table)",
                item.get("count") if item.get("count") is not None else "",
                item["message"],
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


def ingest_file(settings: Settings, path: Path | str, kind: str | None = None) -> IngestResult:
    """Audit one batch file and publish or quarantine it (see the module docstring)."""
    from loopline.data.validation import Failure, validate_frame

    settings.state.ensure()
    use_case = use_case_of(settings)
    if kind is not None and kind not in use_case.batch_kinds:
        raise UnknownBatchKind(
            f"unknown batch kind {kind!r}: use case {use_case.name!r} lands {', '.join(use_case.batch_kinds)}"
        )
    if isinstance(path, str):  # handed over as text (the ingest DAG's XCom): maybe from another task
        as_given: Path = as_path(settings, path)  # a Path, or a UPath on object storage
        path = as_given
        if not is_remote(path):
            check_local_read(path)
    if is_remote(path) or is_remote(settings.state.landing):
        given = path  # object storage: no links to resolve
        inside_landing = str(path).startswith(str(settings.state.landing).rstrip("/") + "/")
    else:
        given = Path(os.path.abspath(path))
        path = Path(path).resolve()
        inside_landing = path.is_relative_to(settings.state.landing.resolve())
    with _ingest_lock(settings):
        ledger = IngestLedger.of(settings)
        recovered = finish_interrupted(settings, ledger)
        refusal = landing_refusal(settings, given)
        if refusal is not None:
            return _refuse(settings, ledger, given, kind or kind_of(given, use_case), refusal)
        if not path.exists():
            if str(path) in recovered:  # this very batch, whose publish a crash had interrupted
                return recovered[str(path)]
            raise BatchGone(f"{path} is gone (already ingested by another run?)")
        kind = kind or kind_of(path, use_case)
        digest = sha256_file(path)
        batch_id = batch_id_for(kind or "unknown", path, digest)
        base: dict[str, Any] = {
            "batch_id": batch_id,
            "kind": kind or "unknown",
            "source": str(path),
            "content_hash": digest,
        }

        def quarantine(
            failures: list[dict[str, Any]], rows: int, warnings: list[dict[str, Any]]
        ) -> IngestResult:
            folder = settings.state.quarantine / batch_id
            kept = _move_or_copy(path, folder / path.name, inside_landing)
            draft = IngestResult(
                status="quarantined",
                rows=rows,
                failures=failures,
                warnings=warnings,
                stored_at=str(kept),
                report=str(folder / "report.json"),
                **base,
            )
            _write_reports(folder, draft)
            ledger.record(draft)
            return draft

        if kind is None:
            return quarantine(
                [
                    _unreadable(
                        f"cannot tell the batch kind of {path.name}: deliver it under "
                        + " or ".join(f"landing/{k}/" for k in use_case.batch_kinds)
                        + " (or pass --kind)"
                    )
                ],
                0,
                [],
            )

        previous = ledger.published(digest)
        if previous is not None:
            kept = _move_or_copy(
                path, settings.state.archive / kind / f"{batch_id}__dup__{path.name}", inside_landing
            )
            result = IngestResult(
                status="already_published",
                rows=previous["rows"],
                report=previous.get("report"),
                stored_at=str(kept),
                partitions=previous.get("partitions", []),
                **base,
            )
            ledger.record(result)
            return result

        try:
            frame = read_batch(path, use_case.columns_for(kind))
        except UnreadableBatch as exc:
            return quarantine([_unreadable(str(exc))], 0, [])

        outcome = validate_frame(frame, kind, use_case.expectations_dir)
        failures = [f.to_dict() for f in outcome.blocking]
        warnings = [f.to_dict() for f in outcome.warnings]
        if failures:
            return quarantine(failures, len(frame), warnings)

        ordered = frame[list(use_case.columns_for(kind))]
        published_rows, skipped_ids, partitions = stage(settings, ordered, kind, batch_id)
        skipped = len(skipped_ids)
        if skipped:
            warnings.append(
                Failure(
                    expectation="rows_not_yet_published",
                    column=use_case.id_column,
                    severity="warning",
                    count=skipped,
                    sample=skipped_ids[:5],
                    message=f"{skipped} row(s) were already in the curated store and were not published again",
                ).to_dict()
            )
        result = IngestResult(
            status="published",
            rows=len(frame),
            published_rows=published_rows,
            duplicates_skipped=skipped,
            warnings=warnings,
            partitions=partitions,
            stored_at=str(settings.state.archive / kind / f"{batch_id}__{path.name}"),
            report=str(settings.state.reports / "ingest" / batch_id / "report.json"),
            **base,
        )
        ledger.begin_publish(result, inside_landing)
        return _finish_publish(settings, ledger, result, inside_landing)


def _finish_publish(
    settings: Settings,
    ledger: IngestLedger,
    result: IngestResult,
    inside_landing: bool,
    *,
    recovering: bool = False,
) -> IngestResult:
    """Everything after the publish intent: partitions into place, the source archived, the report
    written, the ledger row recorded (with the intent dropped). Every step may be repeated, so a run
    that crashed anywhere in here is finished by running this again."""
    promote(settings, result.partitions)
    source, kept = as_path(settings, result.source), as_path(settings, result.stored_at or "")
    # A file at the source path after a crash may be a new delivery under the same name: only the
    # batch's own bytes go to the archive.
    if (
        source.is_file()
        and not source.is_symlink()
        and (not recovering or sha256_file(source) == result.content_hash)
    ):
        _move_or_copy(source, kept, inside_landing)
    elif not kept.is_file():
        log.warning(
            "publish of %s finished without its source: %s is gone and was never archived",
            result.batch_id,
            source,
        )
        result = replace(result, stored_at=None)
    _write_reports(as_path(settings, result.report or "").parent, result)
    ledger.finish_publish(result)
    return result


def finish_interrupted(settings: Settings, ledger: IngestLedger) -> dict[str, IngestResult]:
    """Finish every publish a crashed run left in the ledger (``source`` → its result), then delete
    staged files no publish claims (a crash before the intent was written: redone from the source).

    A publish whose staged files are gone (deleted by hand) cannot be finished: it is rolled back
    (its partitions removed, its intent dropped) and its source, still in the landing zone, is
    ingested afresh when its turn comes. Call under the ingest lock.
    """
    finished: dict[str, IngestResult] = {}
    for result, inside_landing in ledger.unfinished():
        try:
            finished[result.source] = _finish_publish(
                settings, ledger, result, inside_landing, recovering=True
            )
            log.warning("finished the publish of %s that an earlier run left half done", result.batch_id)
        except IncompletePublish as exc:
            log.warning("rolled back the interrupted publish of %s: %s", result.batch_id, exc)
            _roll_back(settings, result.partitions)
            ledger.abandon_publish(result.content_hash)
    for orphan in settings.state.curated.glob(f"*/date=*/.*{STAGED_SUFFIX}"):
        orphan.unlink(missing_ok=True)
    for mark in settings.state.curated.glob(f"*/{PUBLISHING_DIR}/*"):  # a publish without a ledger intent
        _roll_back(
            settings,
            [
                str(p.relative_to(settings.state.curated))
                for p in mark.parent.parent.glob(f"date=*/{mark.name}.parquet")
            ],
        )
        mark.unlink(missing_ok=True)
    return finished


def _roll_back(settings: Settings, partitions: list[str]) -> None:
    """Remove the partitions of a publish that cannot be finished (and their staged files, and its mark)."""
    for partition in partitions:
        (settings.state.curated / partition).unlink(missing_ok=True)
        staged_path(settings.state.curated / partition).unlink(missing_ok=True)
    for mark in _publishing_marks(settings, partitions):
        mark.unlink(missing_ok=True)


def _refuse(
    settings: Settings, ledger: IngestLedger, given: Path, kind: str | None, reason: str
) -> IngestResult:
    """Report a landing entry that must not be read (``landing_refusal``): a quarantine record with no
    file in it, and a refused link taken out of the queue (the link itself: its target is untouched)."""
    target = os.readlink(given) if given.is_symlink() else str(given.resolve())
    pseudo = hashlib.sha256(f"refused:{given}->{target}".encode()).hexdigest()  # nothing was read
    batch_id = batch_id_for(kind or "unknown", given, pseudo)
    folder = settings.state.quarantine / batch_id
    result = IngestResult(
        status="quarantined",
        batch_id=batch_id,
        kind=kind or "unknown",
        source=str(given),
        content_hash="",
        rows=0,
        failures=[_unreadable(reason, "file_is_inside_the_landing_zone")],
        report=str(folder / "report.json"),
    )
    _write_reports(folder, result)
    ledger.record(result)
    if given.is_symlink():
        given.unlink()
    log.warning("refused %s: %s", given, reason)
    return result


def _unreadable(message: str, expectation: str = "file_is_a_readable_batch") -> dict[str, Any]:
    return {
        "expectation": expectation,
        "column": None,
        "severity": "critical",
        "count": None,
        "sample": [],
        "message": message,
    }
