"""Parse-time views of Loopline's settings (cheap: no heavy imports)."""

from __future__ import annotations


def landing_dir() -> str:
    """The landing zone the ingest DAG watches, from the same settings as every other process."""
    from loopline.config import get_settings

    return str(get_settings().state.landing)
