"""The canary's readers: per-variant counts from a real prediction log, error counters from the real
metrics exposition, counter resets."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import generate_latest

from loopline.deployment.windows import (
    decode_counters,
    encode_counters,
    error_delta,
    logged_counts,
    parse_errors,
    read_predictions,
)
from loopline.serving.metrics import ServingMetrics
from loopline.serving.prediction_log import LoggedPrediction, PredictionLog


def row(i: int, ts: float, variant: str, version: str) -> LoggedPrediction:
    return LoggedPrediction(request_id=f"r{i}", ts=ts, transaction_id=f"tx{i}", customer_id="c", inputs={},
                            features={}, score=0.1, decision=False, variant=variant, model_version=version,
                            latency_ms=2.0)


def test_logged_counts_per_variant_and_version_in_the_window(tmp_path: Path) -> None:
    path = tmp_path / "predictions.db"
    assert logged_counts(path, 0) == {}  # no log yet: nothing, not an error
    log = PredictionLog(path)
    now = time.time()
    log.append([row(0, now - 100, "champion", "1")])  # before the window
    log.append([row(i, now + i * 0.001, "champion", "1") for i in range(1, 4)])
    log.append([row(i, now + i * 0.001, "challenger", "2") for i in range(4, 6)])
    log.append([row(6, now, "shadow", "2")])
    assert logged_counts(path, now - 1) == {("champion", "1"): 3, ("challenger", "2"): 2, ("shadow", "2"): 1}
    frame = read_predictions(path, now - 1, now + 1, "challenger", "2")
    assert list(frame["transaction_id"]) == ["tx4", "tx5"]
    log.close()


def test_error_counters_come_from_the_real_metrics_exposition() -> None:
    metrics = ServingMetrics()
    metrics.scoring_failed("challenger", "7", 3)
    metrics.scoring_failed("challenger", "7", 2)
    metrics.scoring_failed("champion", "6", 1)
    parsed = parse_errors(generate_latest(metrics.registry).decode())
    assert parsed == {("challenger", "7"): 5.0, ("champion", "6"): 1.0}
    assert decode_counters(encode_counters(parsed)) == parsed


def test_error_delta_handles_new_series_and_restarts() -> None:
    key = ("challenger", "7")
    assert error_delta({}, {key: 4.0}, key) == 4
    assert error_delta({key: 4.0}, {key: 10.0}, key) == 6
    assert error_delta({key: 40.0}, {key: 3.0}, key) == 3  # the process restarted: counted from zero
