"""The gate judges a regressor by its task's metrics (MAE, RMSE in the label's units), and a policy whose
quality thresholds belong to the other task is refused with the metrics it should use."""

from __future__ import annotations

import numpy as np
import pytest
from test_gate_decide import REPO_ROOT, policy

from loopline import metrics
from loopline.gating.decide import decide
from loopline.gating.metrics import quality_metrics
from loopline.gating.policy import GatePolicyError, load_policy, policy_from_dict


def test_a_regressors_quality_is_its_errors_in_the_labels_units() -> None:
    rng = np.random.default_rng(0)
    minutes = rng.gamma(4.0, 8.0, 400)
    predicted = minutes + rng.normal(0.0, 4.0, 400)
    got = quality_metrics(minutes, predicted, policy(), task="regression")
    assert got == {"mae": metrics.mae(minutes, predicted), "rmse": metrics.rmse(minutes, predicted)}
    assert 2.5 < got["mae"] < got["rmse"] < 6.0


def test_a_regressor_passes_within_its_limits_and_fails_beyond_them() -> None:
    p = policy(quality={"mae": {"max": 6.0, "max_regression": 0.5}, "rmse": {"max": 8.0}})
    champion = {"mae": 4.0, "rmse": 5.5}
    assert decide(p, {"mae": 4.3, "rmse": 5.9}, champion, None, None, None).passed
    worse = decide(p, {"mae": 4.6, "rmse": 5.9}, champion, None, None, None)
    assert not worse.passed
    assert worse.reasons == [
        "quality: mae 4.6 regresses beyond the allowed 0.5 against the champion's 4 (limit 4.5)"
    ]
    too_slow = decide(p, {"mae": 7.0, "rmse": 9.0}, None, None, None, None)
    assert too_slow.reasons == ["quality: mae 7 is not <= max 6.0", "quality: rmse 9 is not <= max 8.0"]


def test_lower_is_better_for_errors() -> None:
    with pytest.raises(GatePolicyError, match="mae: lower is better"):
        policy_from_dict({"quality": {"mae": {"min": 1.0}}})


def test_a_policy_of_the_other_task_is_refused_naming_the_metrics_to_use() -> None:
    fraud = load_policy(REPO_ROOT / "include" / "loopline" / "usecases" / "fraud" / "policies" / "gate.yaml")
    with pytest.raises(GatePolicyError) as error:
        fraud.check_task("regression", "delivery")
    message = str(error.value)
    assert "quality thresholds roc_auc, pr_auc, recall_at_fpr, brier, expected_cost" in message
    assert "do not apply to the 'delivery' use case (regression): its metrics are mae, rmse" in message
    assert fraud.check_task("binary_classification", "fraud") is fraud

    regression = policy(quality={"mae": {"max": 6.0}})
    assert regression.check_task("regression", "delivery") is regression
    with pytest.raises(GatePolicyError, match="quality thresholds mae do not apply to the 'fraud' use case"):
        regression.check_task("binary_classification", "fraud")
