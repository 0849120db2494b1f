"""loopline traffic's report: percentiles, errors by status, variants seen."""

from __future__ import annotations

import pytest

from loopline.serving.traffic import percentile, summarise


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([], 50) is None


def test_summary_counts_errors_by_status_and_variants() -> None:
    outcomes = [
        ("200", 0.002, ["champion:1"]),
        ("200", 0.004, ["challenger:2"]),
        ("500", 0.001, []),
        ("timeout", 10.0, []),
        ("200", 0.003, ["champion:1"]),
    ]
    report = summarise("http://x", 10, 0.5, outcomes)
    assert (report.sent, report.ok) == (5, 3)
    assert report.errors == {"500": 1, "timeout": 1}
    assert report.variants == {"champion:1": 2, "challenger:2": 1}
    assert report.p50_ms == pytest.approx(3.0) and report.achieved_rps == 10
    assert "errors 500: 1, timeout: 1" in report.describe()
