"""An event trigger that watches the landing zone, for an ``AssetWatcher``.

The triggerer runs it continuously; it yields one event per new (or re-delivered) batch file once
the file has stopped changing, so a half-written upload is never picked up. Each event becomes an
asset event and starts the ingest DAG — no polling cron, no worker slot held while waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

Signature = tuple[int, float]  # (size, mtime)


class LandingZoneTrigger(BaseEventTrigger):
    """Fires for files in ``<landing>/<kind>/`` that have been stable for ``settle_seconds``."""

    def __init__(self, landing_dir: str, poll_interval: float = 2.0, settle_seconds: float = 1.0) -> None:
        super().__init__()
        self.landing_dir = landing_dir
        self.poll_interval = poll_interval
        self.settle_seconds = settle_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "landing_dir": self.landing_dir,
                "poll_interval": self.poll_interval,
                "settle_seconds": self.settle_seconds,
            },
        )

    def _scan(self) -> dict[str, Signature]:
        from loopline.config import get_settings
        from loopline.data.ingest import is_batch_candidate, use_case_of
        from loopline.storage.files import as_path

        found: dict[str, Signature] = {}
        settings = get_settings()
        landing = as_path(settings, self.landing_dir)  # the local disk or object storage
        for kind in use_case_of(settings).batch_kinds:
            folder = landing / kind
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                try:
                    if is_batch_candidate(path):
                        stat = path.stat()
                        found[str(path)] = (stat.st_size, stat.st_mtime)
                except OSError:  # moved away between listing and stat: not ours any more
                    continue
        return found

    async def run(self) -> AsyncIterator[TriggerEvent]:
        announced: dict[str, Signature] = {}
        candidates: dict[str, Signature] = {}
        while True:
            current = await asyncio.to_thread(self._scan)
            now = time.time()
            for path, signature in sorted(current.items(), key=lambda item: item[1][1]):
                if announced.get(path) == signature:
                    continue
                settled = candidates.get(path) == signature and now - signature[1] >= self.settle_seconds
                if settled:
                    announced[path] = signature
                    yield TriggerEvent(
                        {"path": path, "kind": path.rstrip("/").rsplit("/", 2)[-2], "size": signature[0]}
                    )
                else:
                    candidates[path] = signature
            # A file that left (ingested) may be delivered again later: forget it.
            announced = {p: s for p, s in announced.items() if p in current}
            candidates = {p: s for p, s in candidates.items() if p in current}
            await asyncio.sleep(self.poll_interval)
