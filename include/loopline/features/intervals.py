"""Which time interval a set of ``loopline.validated_batch`` events asks to materialise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def interval_from_events(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """[first day, last day + 1) over the transaction partitions the events published, or None when
    no transactions arrived (label batches only). Partitions look like ``transactions/date=YYYY-MM-DD/...``."""
    days = sorted(
        {
            datetime.strptime(part.split("date=", 1)[1][:10], "%Y-%m-%d").replace(tzinfo=UTC)
            for event in events
            if event.get("kind") == "transactions"
            for part in event.get("partitions", [])
            if "date=" in part
        }
    )
    if not days:
        return None
    batches = sorted({e["batch_id"] for e in events if e.get("kind") == "transactions" and "batch_id" in e})
    return {
        "start": days[0].isoformat(),
        "end": (days[-1] + timedelta(days=1)).isoformat(),
        "batches": batches,
    }
