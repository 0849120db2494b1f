"""Default task arguments shared by Loopline's DAGs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

# A fixed, past start date: DAGs run on events or from now on (catchup is off everywhere).
START_DATE = datetime(2026, 1, 1)

# Transient failures (a busy SQLite DB, a slow server) deserve a retry; a real bug still fails fast
# enough for a person to see it within minutes.
_DEFAULT_ARGS: dict[str, Any] = {
    "owner": "loopline",
    "retries": 2,
    "retry_delay": timedelta(seconds=15),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=5),
}


def default_args(**overrides: Any) -> dict[str, Any]:
    """Loopline's default task arguments, with per-DAG overrides."""
    return {**_DEFAULT_ARGS, **overrides}
