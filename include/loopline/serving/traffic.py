"""``loopline traffic``: replay the use case's events against the prediction service as production clients
would.

Open loop: request *i* is sent at ``start + i / rps`` whether or not earlier ones were answered (a closed
loop slows down with the server and hides its latency). Events are the newest curated ones (fraud's
events, delivery's orders), so their entities exist in the online store. They keep their id (the use case's
id column): labels published for them (the curated labels) join the prediction log by that id, which is how
the canary's labelled-quality check finds ground truth for replayed traffic without any extra label
writing. A request carries the columns the request contract requires (``loopline.serving.request``).

Their time, two ways:

* re-stamped (the default, a load test): each event at the moment it is sent. A day of traffic sent in
  seconds then *is* a burst: the hour of day is the current one for all, and fresh window counts (orders in
  the last hour) count the replay's pace, not the world's;
* ``recorded``: the newest day of events, each at its recorded time, in a fixed shuffled order (any stretch
  of the replay spans the day's hours). Serving computes their features as of those times, and the events
  it already holds (curated) count once, so time-of-day and window counts are the day's as it happened:
  what the drift monitor and the canary should judge (``loopline demo`` replays this way).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from loopline.config import Settings
from loopline.config.use_case import UseCase, load_use_case
from loopline.serving.request import contract


class NoEvents(RuntimeError):
    """Nothing to replay: the curated store holds no events yet."""


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


def request_fields(use_case: UseCase) -> dict[str, Any]:
    """The columns a replayed request carries (the contract's required ones but the time, stamped when
    sent), each with how a curated value becomes its JSON value."""
    fields: dict[str, Any] = {}
    for column in contract(use_case).required:
        if column == use_case.time_column:
            continue
        dtype = str(use_case.event_columns[column]).lower()
        if dtype.startswith("float"):
            fields[column] = float
        elif dtype.startswith(("int", "uint")):
            fields[column] = int
        elif dtype.startswith("bool"):
            fields[column] = bool
        else:
            fields[column] = str
    return fields


RECORDED_SPAN = timedelta(hours=24)  # a recorded replay's day: every hour of it


def load_events(
    settings: Settings, limit: int = 5000, use_case: UseCase | None = None, recorded: bool = False
) -> list[dict[str, Any]]:
    """The newest ``limit`` curated events of the use case (default: the settings') as request rows (without
    their time: stamped when sent); ``recorded``: the events of the newest 24 hours instead, with their
    recorded time (ISO 8601), shuffled with a fixed seed (see the module)."""
    import pandas as pd

    from loopline.data.ingest import visible_partition_files
    from loopline.storage.files import read_parquet

    use_case = use_case or load_use_case(settings.use_case)
    batch = use_case.batch_names["events"]
    fields = request_fields(use_case)
    files = visible_partition_files(settings.state.curated / batch)
    if not files:
        raise NoEvents(
            f"no curated {batch} under {settings.state.curated / batch}: "
            "simulate and ingest data first (`loopline simulate`, or `loopline demo`)"
        )
    time = use_case.time_column
    frames, rows = [], 0
    newest = oldest = None
    for path in reversed(files):  # newest days first; stop once there are enough
        frame = read_parquet(path, columns=[*fields, time])  # local or object storage
        frames.append(frame)
        rows += len(frame)
        if not recorded:
            if rows >= limit:
                break
            continue
        stamps = pd.to_datetime(frame[time], utc=True)
        newest = stamps.max() if newest is None else max(newest, stamps.max())
        oldest = stamps.min() if oldest is None else min(oldest, stamps.min())
        if newest - oldest >= RECORDED_SPAN:  # the whole newest day is read
            break
    frame = pd.concat(frames, ignore_index=True).sort_values(time)
    if not recorded:
        return [
            {k: convert(r[k]) for k, convert in fields.items()} for r in frame.tail(limit).to_dict("records")
        ]
    stamps = pd.to_datetime(frame[time], utc=True)
    day = frame[(stamps > stamps.max() - RECORDED_SPAN).to_numpy()]
    day = day.sample(frac=1.0, random_state=0)  # any stretch of the replay spans the day's hours
    return [
        {**{k: convert(r[k]) for k, convert in fields.items()}, time: pd.Timestamp(r[time]).isoformat()}
        for r in day.to_dict("records")
    ]


async def replay(
    url: str,
    events: list[dict[str, Any]],
    rps: float,
    duration_s: float,
    *,
    batch: int = 1,
    timeout_s: float = 10.0,
    max_in_flight: int = 1000,
    headers: dict[str, str] | None = None,
    use_case: UseCase | None = None,
) -> TrafficReport:
    """Send ``rps`` requests per second for ``duration_s`` seconds, open loop; each carries ``batch``
    events (cycling through ``events``), stamped now unless they carry their time (``recorded``), under the
    use case's list key (default: the configured use case's). ``headers`` (default: the API key of ``LOOPLINE_SERVING_API_KEY`` when it is
    set) go with every request."""
    import httpx

    from loopline.serving.config import client_headers

    if rps <= 0 or duration_s <= 0:
        raise ValueError("rps and duration must be positive")
    if not events:
        raise NoEvents("no events to replay")
    use_case = use_case or load_use_case(Settings().use_case)
    events_key, time_column = contract(use_case).list_key, use_case.time_column
    total = max(1, int(rps * duration_s))
    outcomes: list[tuple[str, float, list[str]]] = []
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    predict = f"{url.rstrip('/')}/v1/predict"

    headers = client_headers() if headers is None else headers
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, headers=headers) as client:

        async def one(i: int) -> None:
            now = datetime.now(UTC).isoformat()
            body = {
                events_key: [
                    {time_column: now, **events[(i * batch + j) % len(events)]} for j in range(batch)
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
    settings: Settings,
    rps: float,
    duration_s: float,
    url: str | None = None,
    batch: int = 1,
    recorded: bool = False,
) -> TrafficReport:
    """Replay the newest curated events against ``url`` (default: the settings' serving URL), re-stamped
    now or, ``recorded``, the newest day at its recorded times (see the module)."""
    use_case = load_use_case(settings.use_case)
    return asyncio.run(
        replay(
            url or settings.serving_base_url,
            load_events(settings, use_case=use_case, recorded=recorded),
            rps,
            duration_s,
            batch=batch,
            use_case=use_case,
        )
    )
