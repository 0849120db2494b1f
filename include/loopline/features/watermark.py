"""The materialisation watermark: how far the online store is built, and which published batches it covers.

``features.materialize`` writes it; fresh features, the skew check, the prediction log's retention and the
materialise DAG read it. It is apart from the materialiser because fresh features read it while the
materialiser imports fresh features (to write their latest states): both import this module instead of
each other.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopline.config import Settings


def _watermark_path(settings: Settings) -> Path:
    return settings.state.feast_dir / "materialized_until.json"


def _watermark(settings: Settings) -> dict[str, Any]:
    from loopline.storage.state_db import read_watermark

    return read_watermark(settings, "materialized_until", _watermark_path(settings))


def materialized_until(settings: Settings) -> datetime | None:
    """The newest event time the online store holds state for."""
    until = _watermark(settings).get("until")
    return datetime.fromisoformat(until) if until else None


def materialized_cursor(settings: Settings) -> int:
    """The ingest-ledger position up to which published batches are materialised."""
    return int(_watermark(settings).get("ledger_cursor", 0))


def record_materialized(settings: Settings, until: datetime, ledger_cursor: int) -> None:
    """Record that the online store holds state up to ``until`` and batches up to ``ledger_cursor``."""
    from loopline.storage.state_db import write_watermark

    write_watermark(
        settings,
        "materialized_until",
        {"until": until.isoformat(), "ledger_cursor": ledger_cursor},
        _watermark_path(settings),
    )
