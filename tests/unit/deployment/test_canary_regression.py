"""The canary's labelled quality for a regressor: MAE (and RMSE) of the challenger against the champion's on
the delivery simulator's orders, routed sticky by restaurant (the use case's unit), with a bootstrap over
restaurants. A worse estimator is rolled back, an equal one passes, in several cities (seeds)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitoring"))
from delivery_world import DELIVERY, Estimator, days  # noqa: E402

from loopline.deployment.analysis import VariantWindow, check_labelled  # noqa: E402
from loopline.deployment.policy import CanaryPolicy, CanaryPolicyError  # noqa: E402

SEEDS = (3, 4, 5, 6, 7)
POLICY = CanaryPolicy()  # labelled: min_labelled 200, min_units 20, max_mae_increase 0.10, confidence 0.975


def windows(
    seed: int, challenger_shift: float = 0.0, challenger_noise: float = 0.0
) -> tuple[VariantWindow, VariantWindow, dict[str, float]]:
    """Two served days split by restaurant (half each), both variants scored by an estimator trained on the
    week before; the challenger's predictions ``challenger_shift`` minutes later and ``challenger_noise``
    minutes noisier."""
    estimator = Estimator.fit(days(seed, 0, 7))
    served = days(seed, 7, 9)
    predicted = estimator.predict(served)
    rng = np.random.default_rng(seed)
    units = served[DELIVERY.unit_column].astype(str)
    to_challenger = (units.str[-1].astype(int) % 2 == 1).to_numpy()  # sticky: by restaurant
    worse = predicted + challenger_shift + rng.normal(0.0, challenger_noise or 1e-9, len(served))

    def window(version: str, mask: np.ndarray, scores: np.ndarray) -> VariantWindow:
        part = served[mask]
        return VariantWindow(
            version=version,
            scores=tuple(scores[mask].tolist()),
            latencies_ms=(1.0,) * int(mask.sum()),
            event_ids=tuple(part[DELIVERY.id_column].astype(str)),
            decisions=(False,) * int(mask.sum()),
            units=int(units[mask].nunique()),
            unit_ids=tuple(units[mask]),
        )

    labels = dict(zip(served[DELIVERY.id_column].astype(str), served[DELIVERY.label_column], strict=True))
    return window("1", ~to_challenger, predicted), window("2", to_challenger, worse), labels


@pytest.mark.parametrize("seed", SEEDS)
def test_an_equal_estimator_passes(seed: int) -> None:
    champion, challenger, labels = windows(seed)
    result = check_labelled(POLICY, champion, challenger, labels, task="regression")
    assert result.status == "pass", result.reason
    assert result.values["units"]["challenger"] >= 50
    assert result.values["increased_at_least"]["mae"] < 0.10


@pytest.mark.parametrize("seed", SEEDS)
def test_a_worse_estimator_is_rolled_back(seed: int) -> None:
    champion, challenger, labels = windows(seed, challenger_shift=2.0, challenger_noise=2.0)
    result = check_labelled(POLICY, champion, challenger, labels, task="regression")
    assert result.status == "fail", result.reason
    assert result.reason.startswith("MAE worse than allowed")
    assert result.values["mae"]["challenger"] > result.values["mae"]["champion"]
    assert result.values["increased_at_least"]["mae"] > 0.10


def test_too_few_units_wait_and_say_so() -> None:
    champion, challenger, labels = windows(3)
    policy = CanaryPolicy.model_validate({"analysis": {"labelled": {"min_units": 500}}})
    result = check_labelled(policy, champion, challenger, labels, task="regression")
    assert result.status == "skipped"
    assert "waiting for labels" in result.reason and "need 200 labelled rows and 500 units" in result.reason
    required = CanaryPolicy.model_validate({"analysis": {"labelled": {"min_units": 500, "required": True}}})
    assert check_labelled(required, champion, challenger, labels, task="regression").status == "insufficient"


def test_no_labels_yet_wait() -> None:
    champion, challenger, _ = windows(3)
    result = check_labelled(POLICY, champion, challenger, {}, task="regression")
    assert result.status == "skipped" and "labelled champion 0, challenger 0" in result.reason


def test_labelled_keys_of_the_other_task_are_refused() -> None:
    regressor = CanaryPolicy.model_validate({"analysis": {"labelled": {"max_mae_increase": 0.2}}})
    assert regressor.check_task("regression", "delivery") is regressor
    with pytest.raises(CanaryPolicyError, match="max_mae_increase do not apply to the 'fraud' use case"):
        regressor.check_task("binary_classification", "fraud")
    classifier = CanaryPolicy.model_validate({"analysis": {"labelled": {"max_pr_auc_drop": 0.2}}})
    with pytest.raises(CanaryPolicyError, match="max_pr_auc_drop do not apply to the 'delivery' use case"):
        classifier.check_task("regression", "delivery")
    # A dumped and re-read policy (DAG params, overrides) keeps its defaults and is not refused.
    again = CanaryPolicy.model_validate(CanaryPolicy().model_dump())
    assert again.check_task("regression", "delivery") is again


def test_the_unit_frame_of_a_prediction_log_window() -> None:
    frame = pd.DataFrame(
        {
            "transaction_id": ["o1", "o2"],
            "customer_id": ["r_0001", "r_0002"],
            "score": [31.5, 12.0],
            "decision": [0, 0],
            "latency_ms": [1.0, 1.0],
        }
    )
    window = VariantWindow.from_frame(frame, "2", errors=0)
    assert window.units == 2 and window.scores == (31.5, 12.0)


def test_the_use_cases_own_canary_policy_wins_over_the_platform_default(tmp_path: Path) -> None:
    from dataclasses import replace

    from loopline.config import Settings
    from loopline.deployment.policy import load_canary_policy

    config_dir = tmp_path / "config"
    own = replace(DELIVERY, policies_dir=tmp_path)
    assert own.policy_file("canary", config_dir) == config_dir / "canary.yaml"
    (tmp_path / "canary.yaml").write_text("analysis: {labelled: {max_mae_increase: 0.2}}\n")
    assert own.policy_file("canary", config_dir) == tmp_path / "canary.yaml"
    # The settings' use case picks it, whatever the environment's is: delivery ships its own canary.yaml.
    settings = Settings(use_case="delivery", state_dir=tmp_path / "state")
    assert settings.policy_file("canary") == DELIVERY.policies_dir / "canary.yaml"
    assert load_canary_policy(settings=settings).analysis.score_shift.resolution == 0.5
