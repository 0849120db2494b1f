"""Prediction drift of a regressor: its predictions are minutes, not probabilities, so the alert rate
(``flagged_share``: the share above a probability cutoff) would be 100 % in every window and never move. The
verdict compares them by the numeric columns' method instead, and says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from monitoring_testkit import config

from loopline.monitoring.decide import decide
from loopline.monitoring.reference import SCORE, SPLIT, Reference

NOW = datetime(2026, 1, 20, tzinfo=UTC)


def frames(seed: int, slower: float) -> tuple[Reference, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    distance = rng.gamma(2.0, 1.5, 4000)
    reference = pd.DataFrame({"distance_km": distance[:2000], SCORE: 15 + 4 * distance[:2000]})
    reference[SPLIT] = "validation"
    window = pd.DataFrame({"distance_km": distance[2000:], SCORE: (15 + 4 * distance[2000:]) * slower})
    return Reference(reference, [], ["distance_km"], version="1", run_id="run"), window


def judge(seed: int, slower: float, task: str):
    reference, window = frames(seed, slower)
    return decide(
        reference,
        window,
        config(),
        window_start=NOW - timedelta(hours=24),
        window_end=NOW,
        now=NOW,
        decision_threshold=0.5,
        task=task,
    )


def test_longer_predicted_minutes_are_prediction_drift_of_a_regressor() -> None:
    for seed in (1, 2, 3):
        verdict = judge(seed, slower=1.5, task="regression")
        assert verdict.prediction_drift, verdict.notes
        assert any("flagged_share (an alert rate) judges a classifier's scores" in n for n in verdict.notes)
        assert not judge(seed, slower=1.0, task="regression").prediction_drift


def test_the_alert_rate_would_have_missed_it() -> None:
    assert not judge(1, slower=1.5, task="binary_classification").prediction_drift
