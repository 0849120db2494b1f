"""The canary's readers: per-variant counts from a real prediction log, error counters from the real
metrics exposition, counter resets, and failed transactions summed over replicas: each replica's real
/metrics over HTTP, and the counting of Prometheus' raw samples (the real Prometheus binary is in
test_prometheus_errors.py)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from canary_testkit import Replica
from prometheus_client import generate_latest

from loopline.config import Settings
from loopline.deployment.canary import CanaryPlan, Phase
from loopline.deployment.windows import (
    REPLICA_METRIC,
    ErrorSource,
    ErrorsUnavailable,
    counted_in_window,
    decode_counters,
    encode_counters,
    error_delta,
    logged_counts,
    parse_errors,
    parse_metrics,
    read_predictions,
    window_counts,
    window_errors,
)
from loopline.serving.metrics import ServingMetrics
from loopline.serving.prediction_log import LoggedPrediction, PredictionLog


def row(i: int, ts: float, variant: str, version: str) -> LoggedPrediction:
    return LoggedPrediction(
        request_id=f"r{i}",
        ts=ts,
        transaction_id=f"tx{i}",
        customer_id="c",
        inputs={},
        features={},
        score=0.1,
        decision=False,
        variant=variant,
        model_version=version,
        latency_ms=2.0,
    )


def test_logged_counts_per_variant_and_version_in_the_window(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    assert logged_counts(settings, 0) == {}  # no log yet: nothing, not an error
    log = PredictionLog(settings.state.prediction_log)
    now = time.time()
    log.append([row(0, now - 100, "champion", "1")])  # before the window
    log.append([row(i, now + i * 0.001, "champion", "1") for i in range(1, 4)])
    log.append([row(i, now + i * 0.001, "challenger", "2") for i in range(4, 6)])
    log.append([row(6, now, "shadow", "2")])
    assert logged_counts(settings, now - 1) == {
        ("champion", "1"): 3,
        ("challenger", "2"): 2,
        ("shadow", "2"): 1,
    }
    frame = read_predictions(settings, now - 1, now + 1, "challenger", "2")
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


# --- Errors summed over replicas -------------------------------------------------------------------------


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started = [Replica(), Replica()]
    yield started
    for replica in started:
        replica.stop()


def test_metrics_urls_sum_each_replicas_difference_with_its_own_restart(replicas: list[Replica]) -> None:
    a, b = replicas
    key, other = ("challenger", "7"), ("champion", "6")
    a.metrics.scoring_failed(*key, 40)  # before the window
    source = ErrorSource(metrics_urls=(a.url, b.url))
    mark = source.mark()
    assert mark is not None and json.loads(json.dumps(mark)) == mark  # stored in XCom / trigger kwargs
    a.metrics.scoring_failed(*key, 5)
    a.restart()  # replica a restarts: its counter starts again from 0 ...
    a.metrics.scoring_failed(*key, 3)  # ... and counts 3 since then
    b.metrics.scoring_failed(*key, 4)  # a series born in the window
    b.metrics.scoring_failed(*other, 2)
    counts = source.count(mark, 0, time.time())
    # a: the 5 before its restart are lost with the process (as with any scrape), the 3 after it count.
    assert counts == {key: 3 + 4, other: 2}


def test_an_unreadable_replica_makes_the_count_unavailable_naming_it(replicas: list[Replica]) -> None:
    a, b = replicas
    source = ErrorSource(metrics_urls=(a.url, b.url))
    mark = source.mark()
    with pytest.raises(ErrorsUnavailable, match="could not be read when the window began"):
        source.count(None, 0, time.time())
    b.stop()
    assert source.mark() is None  # a window starting now cannot be counted
    with pytest.raises(ErrorsUnavailable, match=re.escape(b.url)):
        source.count(mark, 0, time.time())


def test_a_counter_series_is_counted_from_its_last_sample_before_the_window() -> None:
    since = 100.0
    assert counted_in_window([(90, 5), (95, 7), (101, 9), (102, 12)], since) == 5  # baseline 7 (t=95)
    assert counted_in_window([(100, 7), (101, 9)], since) == 2  # a sample at the start is the baseline
    assert counted_in_window([(101, 4), (102, 6)], since) == 6  # born in the window: from 0
    assert (
        counted_in_window([(95, 40), (101, 44), (102, 3), (103, 5)], since) == 4 + 3 + 2
    )  # restarted at 102
    assert counted_in_window([(90, 5), (95, 7)], since) == 0  # gone before the window
    assert counted_in_window([], since) == 0


def series(name: str, samples: list[tuple[float, float]], **labels: str) -> dict[str, Any]:
    """One series of a Prometheus API matrix result (values are strings there)."""
    return {
        "metric": {"__name__": name, "job": "loopline-serving", **labels},
        "values": [[at, f"{value:g}"] for at, value in samples],
    }


ERRORS = "loopline_prediction_errors_total"


def test_window_errors_sums_replicas_and_needs_two_scrapes_of_one() -> None:
    since, until = 100.0, 110.0
    scrapes = [(t, 0.0) for t in (98, 101, 104, 107, 110)]
    result = [
        series(REPLICA_METRIC, scrapes, instance="a:8000"),
        series(REPLICA_METRIC, scrapes[2:], instance="b:8000"),  # b started in the window
        series(
            ERRORS, [(98, 10), (101, 12), (104, 15)], instance="a:8000", variant="challenger", version="7"
        ),
        series(ERRORS, [(104, 2), (107, 6)], instance="b:8000", variant="challenger", version="7"),
        series(ERRORS, [(98, 1), (110, 1)], instance="a:8000", variant="champion", version="6"),
    ]
    assert window_errors(result, since, until, "Prometheus") == {
        ("challenger", "7"): 5 + 6,
        ("champion", "6"): 0,
    }
    with pytest.raises(ErrorsUnavailable, match="1 scrape.*too short"):
        window_errors(result, 108.0, until, "Prometheus")
    with pytest.raises(ErrorsUnavailable, match="scrapes no serving replica"):
        window_errors([r for r in result if r["metric"]["__name__"] == ERRORS], since, until, "Prometheus")


def test_error_source_validates_its_settings_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        ErrorSource()
    with pytest.raises(ValueError, match="exactly one of"):
        ErrorSource(metrics_urls=("http://a:8000/metrics",), prometheus_url="http://prometheus:9090")
    with pytest.raises(ValueError, match="the Prometheus URL must be an http"):
        ErrorSource(prometheus_url="prometheus:9090")
    with pytest.raises(ValueError, match="counted twice"):
        ErrorSource(metrics_urls=("http://a:8000/metrics", "http://a:8000/metrics"))
    with pytest.raises(ValueError, match="label matchers"):
        ErrorSource(prometheus_url="http://p:9090", selector="job=serving")
    with pytest.raises(ValueError, match="__name__"):
        ErrorSource(prometheus_url="http://p:9090", selector='__name__="up"')
    source = ErrorSource(
        prometheus_url=" http://p:9090/ ", selector='{job="loopline-serving", namespace=~"prod-.*"}'
    )
    assert (source.prometheus_url, source.selector) == (
        "http://p:9090/",
        'job="loopline-serving", namespace=~"prod-.*"',
    )
    assert ErrorSource.from_dict(json.loads(json.dumps(source.to_dict()))) == source


def test_the_plan_keeps_its_error_source_through_json() -> None:
    source = ErrorSource(prometheus_url="http://prometheus:9090", selector='job="loopline-serving"')
    plan = CanaryPlan(
        "2",
        "1",
        (Phase(0.25, "live"), Phase(1.0, "live")),
        "",
        started_at=1.0,
        errors_at_start=source.mark(),
        errors_from=source,
    )
    assert CanaryPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    old = CanaryPlan("2", "1", (Phase(1.0, "live"),), "http://serving:8000/metrics")  # one URL, as before
    assert CanaryPlan.from_dict(json.loads(json.dumps(old.to_dict()))).error_source == ErrorSource(
        metrics_urls=("http://serving:8000/metrics",)
    )


def test_an_unreachable_prometheus_is_unavailable_not_zero() -> None:
    source = ErrorSource(prometheus_url="http://127.0.0.1:9")  # the discard port: nothing listens
    assert source.mark() == {}  # Prometheus keeps the history: nothing to note when a window starts
    with pytest.raises(ErrorsUnavailable, match="cannot query Prometheus at http://127.0.0.1:9"):
        source.count({}, time.time() - 60, time.time())


def test_every_replica_exports_the_replica_metric_from_its_start() -> None:
    """The Prometheus count tells "no errors" from "no replica scraped" by this series: a fresh service
    must expose it, without labels, before it has answered anything."""
    text = generate_latest(ServingMetrics().registry).decode()
    assert re.search(rf"^{REPLICA_METRIC} 0\.0$", text, flags=re.MULTILINE), text


# --- Failed loads and error texts, read with the errors --------------------------------------------------

LOAD_FAILURES = "loopline_model_load_failures_total"
ERROR_INFO = "loopline_model_error_info"


def test_load_failures_and_first_errors_are_summed_over_replicas_like_the_errors(
    replicas: list[Replica],
) -> None:
    a, b = replicas
    a.metrics.load_failed("challenger", "7", "an attempt before the window")
    source = ErrorSource(metrics_urls=(a.url, b.url))
    mark = source.mark()
    assert mark is not None and json.loads(json.dumps(mark)) == mark
    a.metrics.load_failed("challenger", "7", "cannot load models:/fraud_detector/7: MLmodel not found")
    b.metrics.load_failed(
        "challenger", "7", "cannot load models:/fraud_detector/7 from http://u:secret@mlflow"
    )
    b.metrics.load_failed("challenger", "7", "a later, different error")
    b.metrics.scoring_failed("challenger", "7", 4, "ValueError('cannot score')")
    counts = source.count_all(mark, 0, time.time())
    assert counts.errors == {("challenger", "7"): 4} == source.count(mark, 0, time.time())
    assert counts.load_failures == {("challenger", "7"): 1 + 2} and counts.load_failures_of("7") == 3
    assert counts.load_failures_of("8") == 0
    # Each replica reports the first error it saw of the version (the one before the window, on a).
    texts = {counts.first_error("load", "7"), counts.first_error("score", "7", "challenger")}
    assert texts == {"an attempt before the window", "ValueError('cannot score')"}
    assert counts.first_error("score", "7", "shadow") == ""
    assert "secret" not in generate_latest(b.metrics.registry).decode()  # credentials of a URL are masked


def test_a_mark_from_before_load_failures_were_counted_leaves_them_unknown(replicas: list[Replica]) -> None:
    a, _ = replicas
    source = ErrorSource(metrics_urls=(a.url,))
    legacy = {a.url: encode_counters({("challenger", "7"): 1.0})}  # what mark() stored before: errors only
    a.metrics.scoring_failed("challenger", "7", 3)
    a.metrics.load_failed("challenger", "7", "boom")
    counts = source.count_all(legacy, 0, time.time())
    assert counts.errors == {("challenger", "7"): 2} and counts.load_failures is None
    assert counts.load_failures_of("7") is None  # unknown, never read as 0


def test_a_version_that_loads_at_last_drops_its_load_error_text() -> None:
    metrics = ServingMetrics()
    metrics.load_failed("challenger", "7", "first")
    metrics.load_failed("challenger", "7", "second")
    scraped = parse_metrics(generate_latest(metrics.registry).decode())
    assert scraped.load_failures == {("challenger", "7"): 2.0}
    assert scraped.first_errors == {("load", "challenger", "7"): "first"}
    metrics.loaded("challenger", "7")
    scraped = parse_metrics(generate_latest(metrics.registry).decode())
    assert scraped.first_errors == {} and scraped.load_failures == {("challenger", "7"): 2.0}


def test_window_counts_reads_load_failures_and_error_texts_from_prometheus_samples() -> None:
    since, until = 100.0, 110.0
    scrapes = [(t, 0.0) for t in (98, 101, 104, 107, 110)]
    result = [
        series(REPLICA_METRIC, scrapes, instance="a:8000"),
        series(REPLICA_METRIC, scrapes, instance="b:8000"),
        series(
            LOAD_FAILURES, [(98, 4), (101, 5), (104, 6)], instance="a:8000", variant="challenger", version="7"
        ),
        series(LOAD_FAILURES, [(107, 1), (110, 2)], instance="b:8000", variant="challenger", version="7"),
        series(
            ERROR_INFO,
            [(98, 1), (101, 1)],
            instance="a:8000",
            variant="challenger",
            version="7",
            stage="load",
            error="MLmodel not found",
        ),
        series(
            ERROR_INFO,
            [(90, 1), (95, 1)],
            instance="b:8000",
            variant="challenger",
            version="6",
            stage="load",
            error="gone before the window",
        ),
        series(ERRORS, [(98, 1), (110, 1)], instance="a:8000", variant="champion", version="6"),
    ]
    counts = window_counts(result, since, until, "Prometheus")
    assert counts.load_failures == {("challenger", "7"): 2 + 2} and counts.errors == {("champion", "6"): 0}
    assert counts.first_errors == {("load", "challenger", "7"): "MLmodel not found"}
    assert window_errors(result, since, until, "Prometheus") == counts.errors
