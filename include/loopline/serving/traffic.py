"""``loopline traffic``: replay transactions against the prediction service as production clients would.

Open loop: request *i* is sent at ``start + i / rps`` whether or not earlier ones were answered (a closed
loop slows down with the server and hides its latency). Transactions are the newest curated ones, so
their customers, merchants and devices exist in the online store, re-stamped to the moment they are
sent. They keep their ``transaction_id``: labels published for them (the curated ``labels``) join the
prediction log by that id, which is how the canary's labelled-quality check finds ground truth for
replayed traffic without any extra label writing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from loopline.config import Settings

REQUEST_FIELDS = (
    "transaction_id",
    "customer_id",
    "merchant_id",
    "device_id",
    "channel",
    "amount",
    "merchant_category",
    "merchant_country",
)


class NoTransactions(RuntimeError):
    """Nothing to replay: the curated store holds no transactions yet."""


@dataclass(frozen=True)
class TrafficReport:
    url: str
    target_rps: float
    duration_s: float
    sent: int
    ok: int
    achieved_rps: float  # answered (any status) per second of the run
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)  # status (or exception kind) → count
    variants: dict[str, int] = field(default_factory=dict)  # "variant:version" → predictions

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        variants = ", ".join(f"{k}: {v}" for k, v in sorted(self.variants.items())) or "none"
        return (
            f"{self.sent} requests to {self.url} in {self.duration_s:.1f} s "
            f"(target {self.target_rps:g}/s, achieved {self.achieved_rps:.1f}/s); "
            f"ok {self.ok}; latency p50 {ms(self.p50_ms)} ms, p95 {ms(self.p95_ms)} ms, p99 {ms(self.p99_ms)} ms; "
            f"errors {errors}; variants {variants}"
        )


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarise(
    url: str, target_rps: float, duration_s: float, outcomes: list[tuple[str, float, list[str]]]
) -> TrafficReport:
    """From (status or error kind, latency seconds, ["variant:version", ...]) per request."""
    ok = [latency * 1000 for status, latency, _ in outcomes if status == "200"]
    errors = Counter(status for status, _, _ in outcomes if status != "200")
    variants = Counter(v for status, _, seen in outcomes if status == "200" for v in seen)
    return TrafficReport(
        url=url,
        target_rps=target_rps,
        duration_s=duration_s,
        sent=len(outcomes),
        ok=len(ok),
        achieved_rps=len(outcomes) / duration_s if duration_s > 0 else 0.0,
        p50_ms=percentile(ok, 50),
        p95_ms=percentile(ok, 95),
        p99_ms=percentile(ok, 99),
        errors=dict(errors),
        variants=dict(variants),
    )


def load_transactions(settings: Settings, limit: int = 5000) -> list[dict[str, Any]]:
    """The newest ``limit`` curated transactions as request rows (without a timestamp: stamped when sent)."""
    import pandas as pd

    from loopline.data.ingest import visible_partition_files
    from loopline.storage.files import read_parquet

    files = visible_partition_files(settings.state.curated / "transactions")
    if not files:
        raise NoTransactions(
            f"no curated transactions under {settings.state.curated / 'transactions'}: "
            "simulate and ingest data first (`loopline simulate`, or `loopline demo`)"
        )
    frames, rows = [], 0
    for path in reversed(files):  # newest days first; stop once there are enough
        frame = read_parquet(path, columns=[*REQUEST_FIELDS, "event_timestamp"])  # local or object storage
        frames.append(frame)
        rows += len(frame)
        if rows >= limit:
            break
    frame = pd.concat(frames, ignore_index=True).sort_values("event_timestamp").tail(limit)
    return [
        {k: (float(r[k]) if k == "amount" else str(r[k])) for k in REQUEST_FIELDS}
        for r in frame.to_dict("records")
    ]


async def replay(
    url: str,
    transactions: list[dict[str, Any]],
    rps: float,
    duration_s: float,
    *,
    batch: int = 1,
    timeout_s: float = 10.0,
    max_in_flight: int = 1000,
    headers: dict[str, str] | None = None,
) -> TrafficReport:
    """Send ``rps`` requests per second for ``duration_s`` seconds, open loop; each carries ``batch``
    transactions (cycling through ``transactions``). ``headers`` (default: the API key of
    ``LOOPLINE_SERVING_API_KEY`` when it is set) go with every request."""
    import httpx

    from loopline.serving.config import client_headers

    if rps <= 0 or duration_s <= 0:
        raise ValueError("rps and duration must be positive")
    if not transactions:
        raise NoTransactions("no transactions to replay")
    total = max(1, int(rps * duration_s))
    outcomes: list[tuple[str, float, list[str]]] = []
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    predict = f"{url.rstrip('/')}/v1/predict"

    headers = client_headers() if headers is None else headers
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, headers=headers) as client:

        async def one(i: int) -> None:
            now = datetime.now(UTC).isoformat()
            body = {
                "transactions": [
                    {**transactions[(i * batch + j) % len(transactions)], "event_timestamp": now}
                    for j in range(batch)
                ]
            }
            started = time.perf_counter()
            try:
                response = await client.post(predict, json=body)
                status, seen = str(response.status_code), []
                if response.status_code == 200:
                    seen = [f"{p['variant']}:{p['model_version']}" for p in response.json()["predictions"]]
            except httpx.TimeoutException:
                status, seen = "timeout", []
            except httpx.HTTPError as exc:
                status, seen = type(exc).__name__, []
            outcomes.append((status, time.perf_counter() - started, seen))

        begun = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = begun + i / rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begun
    return summarise(url, rps, elapsed, outcomes)


def run_traffic(
    settings: Settings, rps: float, duration_s: float, url: str | None = None, batch: int = 1
) -> TrafficReport:
    """Replay the newest curated transactions against ``url`` (default: the settings' serving URL)."""
    return asyncio.run(
        replay(url or settings.serving_base_url, load_transactions(settings), rps, duration_s, batch=batch)
    )
