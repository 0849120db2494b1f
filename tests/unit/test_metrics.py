"""loopline.metrics beyond the ranking metrics the gate tests cover: regression errors, weighted curves, NaNs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loopline import metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_errors_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.gamma(2.0, 15.0, 500)
    predicted = truth + rng.normal(0, 5, 500)
    assert metrics.mae(truth, predicted) == pytest.approx(
        sklearn_metrics.mean_absolute_error(truth, predicted)
    )
    assert metrics.rmse(truth, predicted) == pytest.approx(
        math.sqrt(sklearn_metrics.mean_squared_error(truth, predicted))
    )


def test_rmse_weighs_one_large_miss_more_than_mae() -> None:
    truth = np.zeros(10)
    one_big = np.r_[10.0, np.zeros(9)]
    assert metrics.mae(truth, one_big) == pytest.approx(1.0)
    assert metrics.rmse(truth, one_big) == pytest.approx(math.sqrt(10.0))


def test_errors_are_nan_without_rows_and_refuse_missing_predictions() -> None:
    assert math.isnan(metrics.mae([], []))
    assert math.isnan(metrics.rmse([], []))
    with pytest.raises(ValueError, match="1 predictions are NaN"):
        metrics.mae([1.0, 2.0], [1.0, math.nan])
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        metrics.rmse([1.0, 2.0], [1.0])


def test_a_weighted_curve_equals_repeating_the_rows() -> None:
    """average_precision_of_curve takes weighted counts (the canary's bootstrap): weight 2 = the row twice."""
    rng = np.random.default_rng(7)
    y = (rng.random(300) < 0.2).astype(float)
    s = np.round(rng.random(300), 2)  # ties
    w = rng.integers(0, 3, 300).astype(float)
    order = np.argsort(-s, kind="mergesort")
    ends = metrics.tie_ends(s[order])
    tps = np.cumsum((w * y)[order])[ends]
    fps = np.cumsum((w * (1 - y))[order])[ends]
    repeated = np.repeat(np.arange(300), w.astype(int))
    assert metrics.average_precision_of_curve(tps, fps) == pytest.approx(
        metrics.pr_auc(y[repeated], s[repeated])
    )


def test_ranking_metrics_are_nan_with_one_class() -> None:
    assert math.isnan(metrics.pr_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(metrics.roc_auc([1, 1], [0.1, 0.2]))
    assert math.isnan(metrics.average_precision_of_curve(np.array([0.0]), np.array([3.0])))


def test_every_metric_says_which_way_is_better() -> None:
    public = {
        name for name in ("roc_auc", "pr_auc", "recall_at_fpr", "brier", "expected_cost", "mae", "rmse")
    }
    assert set(metrics.HIGHER_IS_BETTER) == public
    assert all(callable(getattr(metrics, name)) for name in public)
