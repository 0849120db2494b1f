"""The fast path gives Evidently's scores and verdicts, column by column, with the same pinned methods."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from monitoring_testkit import config, reference_from

from loopline.config.drift_policy import DriftConfigError, MethodSpec, drift_config_from_dict
from loopline.monitoring.decide import column_plan, on_drift_scale
from loopline.monitoring.fast_drift import DriftInputError, compare, wasserstein_normed
from loopline.monitoring.reports import evidently_report


def evidently_scores(reference, window: pd.DataFrame, cfg) -> dict[str, float]:
    snapshot = evidently_report(reference, window, cfg, sample_rows=len(window) + 1)
    return {
        m["config"]["column"]: float(m["value"])
        for m in snapshot.dict()["metrics"]
        if m["config"].get("type", "").endswith("ValueDrift")
    }


def assert_same_as_evidently(reference, window: pd.DataFrame) -> list:
    cfg = config()  # the report shows the log_scale columns on the scale they are judged on
    ours = compare(
        on_drift_scale(reference.frame, cfg), on_drift_scale(window, cfg), column_plan(reference, cfg)
    )
    theirs = evidently_scores(reference, window, cfg)
    assert {c.column for c in ours} <= set(theirs)
    for column in ours:
        assert column.score == pytest.approx(theirs[column.column], rel=1e-9, abs=1e-12), column.column
        assert column.drifted == (theirs[column.column] >= column.threshold), column.column
    return ours


def test_same_scores_and_verdicts_as_evidently_without_drift(undrifted) -> None:
    before, after = undrifted
    ours = assert_same_as_evidently(reference_from(before.iloc[:3000]), after.iloc[:4000])
    assert not any(c.drifted for c in ours), [c for c in ours if c.drifted]


@pytest.mark.parametrize("drift", ["covariate", "new_category"])
def test_same_scores_and_verdicts_as_evidently_with_drift(undrifted, covariate, new_category, drift) -> None:
    window = {"covariate": covariate, "new_category": new_category}[drift].iloc[:4000]
    ours = assert_same_as_evidently(reference_from(undrifted[0].iloc[:3000]), window)
    drifted = {c.column for c in ours if c.drifted}
    expected = {"covariate": {"amount", "amount_log"}, "new_category": {"merchant_category"}}[drift]
    assert expected <= drifted, (drift, drifted)


def test_missing_values_and_infinities_are_dropped_like_evidently(undrifted) -> None:
    before, after = undrifted
    window = after.iloc[:3000].copy()
    window.loc[window.index[:400], "amount"] = np.nan
    window.loc[window.index[400:410], "amount"] = np.inf
    window.loc[window.index[:300], "channel"] = None
    assert_same_as_evidently(reference_from(before.iloc[:3000]), window)


def test_wasserstein_matches_scipy_with_ties_and_a_constant_reference() -> None:
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(0)
    ref, cur = rng.integers(0, 5, 300).astype(float), rng.integers(0, 7, 5000).astype(float)
    assert wasserstein_normed(ref, cur) == pytest.approx(
        wasserstein_distance(ref, cur) / np.std(ref), rel=1e-12
    )
    constant = np.full(50, 2.0)  # std 0: Evidently divides by 0.001 instead
    assert wasserstein_normed(constant, cur) == pytest.approx(wasserstein_distance(constant, cur) / 0.001)


def test_missing_columns_are_named() -> None:
    plan = column_plan(
        reference_from(
            pd.DataFrame({"channel": ["a"], "amount": [1.0], "score": [0.1], "transaction_id": ["t"]})
        ),
        config(),
    )
    with pytest.raises(DriftInputError, match="window lacks.*merchant_category"):
        compare(pd.DataFrame({c: [1.0] for c in plan}), pd.DataFrame({"amount": [1.0]}), plan)


def test_policy_errors_name_the_field() -> None:
    with pytest.raises(DriftConfigError, match="methods.numeric.method"):
        drift_config_from_dict({"methods": {"numeric": {"method": "psi", "threshold": 0.1}}})
    with pytest.raises(DriftConfigError, match="dataset_drift_share"):
        drift_config_from_dict({"dataset_drift_share": 0})
    with pytest.raises(DriftConfigError, match="categorical"):
        drift_config_from_dict(
            {"methods": {"per_feature": {"channel": {"method": "wasserstein", "threshold": 1}}}}
        ).methods.for_column("channel", categorical=True)
    assert config().methods.for_column("is_new_device", False) == MethodSpec(
        method="jensenshannon", threshold=0.1
    )


def test_the_alert_rate_method_is_cohens_h_of_the_flagged_shares() -> None:
    from loopline.monitoring.fast_drift import flagged_share_h

    rng = np.random.default_rng(3)
    reference = np.where(rng.random(20_000) < 0.03, 0.9, 0.01)  # 3 % alerts at a 0.5 cutoff
    doubled = np.where(rng.random(20_000) < 0.06, 0.9, 0.01)
    h = flagged_share_h(reference, doubled, cutoff=0.5)
    expected = 2 * np.arcsin(np.sqrt(np.mean(doubled >= 0.5))) - 2 * np.arcsin(
        np.sqrt(np.mean(reference >= 0.5))
    )
    assert h == pytest.approx(expected) and 0.12 < h < 0.17
    assert flagged_share_h(reference, reference, cutoff=0.5) == 0
    # Moving the crowd of low scores changes no decision: no alert-rate drift.
    assert flagged_share_h(reference, np.where(reference < 0.5, reference * 3, reference), cutoff=0.5) == 0


def test_quantile_bins_weigh_the_rare_high_scores_like_the_crowd() -> None:
    from loopline.monitoring.fast_drift import quantile_jensenshannon

    rng = np.random.default_rng(4)
    reference = rng.beta(1, 60, 30_000)
    same = rng.beta(1, 60, 30_000)
    tail = np.concatenate([same[:29_000], rng.uniform(0.5, 1.0, 1_000)])  # 3 % more high scores
    assert quantile_jensenshannon(reference, same, 20) < 0.02
    assert quantile_jensenshannon(reference, tail, 20) > 3 * quantile_jensenshannon(reference, same, 20)
    lumpy = np.concatenate([np.zeros(20_000), rng.random(10_000)])  # tied quantiles merge bins, none empty
    assert quantile_jensenshannon(lumpy, lumpy, 20) == 0
