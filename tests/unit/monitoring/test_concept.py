"""Concept drift with late labels: judged only behind the label frontier, against the gate baseline, with
a customer bootstrap that knows how few frauds it saw."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from monitoring_testkit import config

from loopline.config.use_case import load_use_case
from loopline.monitoring.concept import JUDGED, NOT_JUDGED, Baseline, concept_check, lookback

NOW = datetime(2026, 4, 20, 6, tzinfo=UTC)
FRONTIER = NOW - timedelta(days=7, hours=3)  # genuine labels mature after about a week


def traffic(
    rows: int, seed: int, *, fraud_scored: str = "high", start: datetime | None = None, days: float = 7.0
) -> pd.DataFrame:
    """Served predictions of ~300 customers: ~1.5 % fraud in bursts per customer; a model that scores its
    fraud ``high`` (it knows the pattern) or like genuine traffic (``low``: a new fraud pattern)."""
    rng = np.random.default_rng(seed)
    customers = rng.integers(0, 300, rows)
    fraudster = rng.random(300) < 0.08
    fraud = fraudster[customers] & (rng.random(rows) < 0.2)
    genuine_scores = rng.beta(1, 30, rows)
    scores = np.where(
        fraud, rng.beta(8, 2, rows) if fraud_scored == "high" else rng.beta(1, 30, rows), genuine_scores
    )
    start = start or FRONTIER - timedelta(days=days)
    ts = [start + timedelta(seconds=float(s)) for s in np.sort(rng.uniform(0, days * 86400, rows))]
    return pd.DataFrame(
        {
            "transaction_id": [f"t{seed}-{i}" for i in range(rows)],
            "customer_id": [f"c{c}" for c in customers],
            "score": scores,
            "ts": pd.to_datetime(ts, utc=True),
            "is_fraud": fraud.astype("float64"),
        }
    )


@pytest.fixture(scope="module")
def baseline() -> Baseline:
    return Baseline("gate holdout of v1", traffic(3000, seed=1).drop(columns="ts"))


def judge(served: pd.DataFrame, baseline: Baseline | None, frontier: datetime | None = FRONTIER, **policy):
    concept = config().concept.model_copy(update=policy)
    return concept_check(
        served, baseline, frontier, NOW, concept, threshold=0.5, use_case=load_use_case("fraud")
    )


def test_the_same_model_on_the_same_kind_of_traffic_is_within_limits(baseline) -> None:
    for seed in (2, 3, 4):
        result = judge(traffic(9000, seed=seed), baseline)
        assert result.status == JUDGED and not result.drifted, result.note
        assert "within limits" in result.note and result.current["positives"] >= 30


def test_fraud_the_model_cannot_see_is_concept_drift_once_labelled(baseline) -> None:
    result = judge(traffic(9000, seed=5, fraud_scored="low"), baseline)
    assert result.status == JUDGED and result.drifted
    assert "concept drift" in result.note and "97.5% sure" in result.note
    assert result.dropped_at_least["pr_auc"] > 0.15 and result.current["pr_auc"] < result.baseline["pr_auc"]


def test_unlabelled_traffic_is_not_judged_and_says_it_waits(baseline) -> None:
    served = traffic(9000, seed=5, fraud_scored="low").assign(is_fraud=np.nan)
    result = judge(served, baseline)
    assert result.status == NOT_JUDGED and not result.drifted
    assert "waiting for labels" in result.note and "0 labelled rows" in result.note


def test_traffic_younger_than_the_label_frontier_is_never_judged(baseline) -> None:
    # Fraud labelled early, genuine not yet: served after the frontier, it would look perfect or awful.
    young = traffic(9000, seed=5, fraud_scored="low", start=FRONTIER + timedelta(hours=1), days=6)
    result = judge(young, baseline)
    assert result.status == NOT_JUDGED and result.current is None
    start, end = lookback(FRONTIER, config().concept)
    assert result.judged_until == FRONTIER.isoformat() and result.judged_from == start.isoformat()
    assert result.label_delay_hours == pytest.approx(171.0)


def test_the_lookback_follows_the_observed_label_delay_not_a_constant(baseline) -> None:
    later = FRONTIER - timedelta(days=10)  # labels ten days slower: the judged windows move back with them
    result = judge(traffic(9000, seed=2, start=later - timedelta(days=7)), baseline, frontier=later)
    assert result.status == JUDGED and result.judged_until == later.isoformat()
    assert sum(w.labelled for w in result.windows) == result.current["labelled"]


def test_few_frauds_are_not_enough_to_judge(baseline) -> None:
    result = judge(traffic(600, seed=6, fraud_scored="low"), baseline)
    assert result.status == NOT_JUDGED and "need 1000 and 30" in result.note


def test_no_frontier_and_no_baseline_are_said_not_passed(baseline) -> None:
    served = traffic(9000, seed=2)
    no_labels_yet = judge(served, baseline, frontier=None)
    assert no_labels_yet.status == NOT_JUDGED and "confirmed-genuine" in no_labels_yet.note
    no_baseline = judge(served, None)
    assert no_baseline.status == NOT_JUDGED and "re-gate" in no_baseline.note
