"""Helpers of the serving tests (imported by name: tests/unit/serving is on sys.path under pytest)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from loopline.config import Settings
from loopline.platform.processes import free_port
from loopline.serving.config import ServingConfig, load_serving_config

MODEL = "fraud_detector"


@dataclass(frozen=True)
class ServingWorld:
    settings: Settings
    transactions: list[dict[str, Any]]  # JSON-ready request bodies of real customers, timed "now"
    versions: tuple[str, str]

    @property
    def tracking_uri(self) -> str:
        return self.settings.mlflow_uri

    def env(self) -> dict[str, str]:
        return {**self.settings.env(), "LOOPLINE_MLFLOW_TRACKING_URI": self.tracking_uri}


def request_rows(frame, n: int, start: datetime | None = None) -> list[dict[str, Any]]:
    """``n`` transactions of the frame as API payload rows, stamped from ``start`` (default: now)."""
    start = start or datetime.now(UTC)
    keys = (
        "transaction_id",
        "customer_id",
        "merchant_id",
        "device_id",
        "channel",
        "amount",
        "merchant_category",
        "merchant_country",
    )
    rows = []
    for i, record in enumerate(frame.head(n).to_dict("records")):
        row = {k: (float(record[k]) if k == "amount" else str(record[k])) for k in keys}
        row["event_timestamp"] = (start + timedelta(milliseconds=i)).isoformat()
        rows.append(row)
    return rows


def quick_config() -> ServingConfig:
    """The shipped config with a short registry poll and few warm-up rounds (tests wait on both)."""
    config = load_serving_config()
    return config.model_copy(
        update={
            "registry": config.registry.model_copy(update={"poll_interval_s": 0.2}),
            "warmup": config.warmup.model_copy(update={"rounds": 2}),
        }
    )


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[str]:
    """A real uvicorn server for ``app`` on a free loopback port, in a thread; yields its base URL."""
    import httpx
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the test server did not start within 30 s")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)
