"""Single-row latency through the serving code path (``loopline.serving.predictor.Predictor``), in-process.

In-process on purpose: the budget is about what the model and its feature lookup cost per request, not
about the HTTP stack (the infra check exercises that, for correctness).
"""

from __future__ import annotations

import time
from typing import Any

from loopline.config import Settings
from loopline.gating.metrics import LatencyStats, latency_stats


def measure_latency(
    settings: Settings,
    model_uri: str,
    version: str,
    requests: list[dict[str, Any]],
    n: int,
    warmup: int = 20,
    variant: str = "challenger",
    features: Any = None,
) -> LatencyStats:
    """p50/p95/p99 over ``n`` one-transaction ``predict`` calls (cycling through ``requests``) after
    ``warmup`` untimed ones. A model that cannot load or predict yields stats with ``error`` set."""
    from loopline.serving.predictor import Predictor

    if not requests:
        return _failed("no sample requests")
    try:
        predictor = Predictor.load(
            model_uri, version=version, variant=variant, settings=settings, features=features
        )
    except Exception as exc:  # noqa: BLE001 - any load failure is a verdict, not a crash
        return _failed(f"the serving predictor could not load {model_uri}: {type(exc).__name__}: {exc}")
    errors = 0
    last_error = ""
    for i in range(warmup):
        try:
            predictor.predict([requests[i % len(requests)]])
        except Exception as exc:  # noqa: BLE001
            errors += 1
            last_error = f"{type(exc).__name__}: {exc}"
    durations: list[float] = []
    for i in range(n):
        started = time.perf_counter()
        try:
            predictor.predict([requests[i % len(requests)]])
        except Exception as exc:  # noqa: BLE001
            errors += 1
            last_error = f"{type(exc).__name__}: {exc}"
            continue
        durations.append((time.perf_counter() - started) * 1000.0)
    if not durations:
        return _failed(f"every prediction failed: {last_error}", errors)
    return latency_stats(durations, errors)


def _failed(error: str, errors: int = 0) -> LatencyStats:
    nan = float("nan")
    return LatencyStats(0, nan, nan, nan, nan, errors, error)
