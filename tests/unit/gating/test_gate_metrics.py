"""The metrics (loopline.metrics, numpy) against scikit-learn's reference implementations, and the fairness table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopline.gating.metrics import fairness_table, latency_stats
from loopline.metrics import brier, expected_cost, pr_auc, recall_at_fpr, roc_auc

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _data(seed: int, n: int = 2000, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(int)
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0, 1)
    if ties:
        s = np.round(s, 1)  # many equal scores: ties must move across thresholds together
    return y, s


@pytest.mark.parametrize(("seed", "ties"), [(0, False), (1, True), (2, True)])
def test_ranking_metrics_match_sklearn(seed: int, ties: bool) -> None:
    y, s = _data(seed, ties=ties)
    assert roc_auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)
    assert pr_auc(y, s) == pytest.approx(sklearn_metrics.average_precision_score(y, s), abs=1e-12)
    assert brier(y, s) == pytest.approx(sklearn_metrics.brier_score_loss(y, s), abs=1e-12)


@pytest.mark.parametrize("fpr", [0.001, 0.01, 0.05, 0.2])
def test_recall_at_fpr_is_the_best_roc_point_within_the_fpr(fpr: float) -> None:
    y, s = _data(3, ties=True)
    fprs, tprs, _ = sklearn_metrics.roc_curve(y, s, drop_intermediate=False)
    assert recall_at_fpr(y, s, fpr) == pytest.approx(tprs[fprs <= fpr].max(), abs=1e-12)


def test_one_class_gives_nan_not_a_crash() -> None:
    y = np.zeros(10)
    s = np.linspace(0, 1, 10)
    assert math.isnan(roc_auc(y, s)) and math.isnan(pr_auc(y, s)) and math.isnan(recall_at_fpr(y, s, 0.01))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="0 or 1"):
        brier([0, 2], [0.1, 0.2])


def test_expected_cost_prices_misses_and_false_alarms() -> None:
    y = np.array([1, 1, 0, 0, 0])
    s = np.array([0.9, 0.2, 0.7, 0.1, 0.5])  # at 0.5: one fraud missed, two false alarms
    assert expected_cost(y, s, 0.5, missed_positive_cost=100.0, false_alarm_cost=3.0) == pytest.approx(
        (100 + 6) / 5
    )
    assert expected_cost(y, s, 0.1, 100.0, 3.0) == pytest.approx(9 / 5)  # flag everything: 3 false alarms


def test_fairness_table_rates_gaps_and_small_groups() -> None:
    # group a: 4 fraud (3 caught), 6 genuine (1 flagged); group b: 4 fraud (1 caught), 6 genuine (3 flagged);
    # group c: 2 rows only (reported, not judged).
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0] * 2 + [1, 0])
    flags_a = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    flags_b = [1, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    s = np.array(flags_a + flags_b + [1, 1], dtype=float) * 0.8 + 0.1
    groups = {"band": np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 2, dtype=object)}
    table = fairness_table(y, s, groups, threshold=0.5, min_group_size=5, min_group_positives=2)
    by_group = {g.group: g for g in table.groups}
    assert (by_group["a"].tpr, by_group["a"].fpr) == (0.75, pytest.approx(1 / 6))
    assert (by_group["b"].tpr, by_group["b"].fpr) == (0.25, 0.5)
    assert by_group["c"].n == 2 and not by_group["c"].judged_tpr and not by_group["c"].judged_fpr
    assert table.tpr_gap["band"] == pytest.approx(0.5)  # c's TPR of 1.0 is reported, not judged
    assert table.fpr_gap["band"] == pytest.approx(0.5 - 1 / 6)
    one = fairness_table(y, s, groups, threshold=0.5, min_group_size=10, min_group_positives=5)
    assert one.tpr_gap["band"] is None, "no group has 5 fraud rows: no TPR gap to judge"


def test_latency_percentiles() -> None:
    stats = latency_stats([float(i) for i in range(1, 101)])
    assert stats.requests == 100 and stats.p50_ms == pytest.approx(50.5) and stats.max_ms == 100.0
    assert stats.p95_ms == pytest.approx(95.05) and stats.p99_ms == pytest.approx(99.01)
    assert latency_stats([]).error
