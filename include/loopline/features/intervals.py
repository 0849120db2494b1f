"""Which time interval needs materialising.

The ingest ledger, not the asset events, is the source of truth: Airflow 3.3 may fold several asset
events into one run and leave some unconsumed when runs queue behind ``max_active_runs``, so each run
materialises every events batch (the use case's, e.g. fraud's transactions) published since the last successful
materialisation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopline.data.ingest import IngestLedger


def interval_from_events(events: list[dict[str, Any]], events_kind: str) -> dict[str, Any] | None:
    """[first day, last day + 1) over the partitions the ``events_kind`` batches (the use case's events folder)
    published, or None when none arrived (label batches only). Partitions look like
    ``<events_kind>/date=YYYY-MM-DD/...``. ``events`` are ingest results or asset-event extras (both carry
    kind, batch_id, partitions)."""
    days = sorted(
        {
            datetime.strptime(part.split("date=", 1)[1][:10], "%Y-%m-%d").replace(tzinfo=UTC)
            for event in events
            if event.get("kind") == events_kind
            for part in event.get("partitions", [])
            if "date=" in part
        }
    )
    if not days:
        return None
    batches = sorted({e["batch_id"] for e in events if e.get("kind") == events_kind and "batch_id" in e})
    return {
        "start": days[0].isoformat(),
        "end": (days[-1] + timedelta(days=1)).isoformat(),
        "batches": batches,
    }


def pending_interval(ledger: IngestLedger | Path, cursor: int, events_kind: str) -> dict[str, Any] | None:
    """The interval of ``events_kind`` batches (the use case's events folder) published after ledger position
    ``cursor`` (None if none), with ``cursor`` set to the newest position it covers. ``ledger``: the ledger,
    or its SQLite file."""
    from loopline.data.ingest import IngestLedger

    if not isinstance(ledger, IngestLedger):
        ledger = IngestLedger(ledger)
    if not ledger.exists():
        return None
    published = ledger.published_since(cursor, events_kind)
    interval = interval_from_events([result for _, result in published], events_kind)
    if interval is not None:
        interval["cursor"] = published[-1][0]
    return interval
