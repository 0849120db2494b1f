"""The verdict and the retrain policy over many windows, with the real history store."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from monitoring_testkit import NOW, config, reference_from, settings

from loopline.lineage import history
from loopline.monitoring.decide import INSUFFICIENT, INVALID, decide
from loopline.monitoring.monitor import record_decision


def check(reference, window: pd.DataFrame, now, **kwargs):
    cfg = kwargs.pop("cfg", config())
    return decide(
        reference, window, cfg, window_start=now - timedelta(hours=24), window_end=now, now=now, **kwargs
    )


def hourly(tmp_path, reference, windows, *, running_at=frozenset()) -> list:
    """Check each window an hour apart through the real history; returns the retrain decisions."""
    s, cfg = settings(tmp_path), config()
    out = []
    for i, window in enumerate(windows):
        now = NOW + timedelta(hours=i)
        verdict = check(reference, window, now)
        out.append(record_decision(s, verdict, cfg, now=now, training_running=i in running_at))
    return out, s


def test_no_drift_no_retrain_over_several_windows(tmp_path, undrifted) -> None:
    before, after = undrifted
    reference = reference_from(before)
    windows = [after.sample(2500, random_state=i) for i in range(6)]
    results, s = hourly(tmp_path, reference, windows)
    assert [r.retrain for r in results] == [False] * 6 and {r.status for r in results} == {"ok"}
    kinds = [e.kind for e in history.read(s)]
    assert kinds == ["drift_checked"] * 6  # nothing requested, nothing to suppress


def test_a_drift_storm_yields_exactly_one_retrain(tmp_path, undrifted, covariate) -> None:
    reference = reference_from(undrifted[0])
    windows = [covariate.sample(2500, random_state=i) for i in range(8)]
    results, s = hourly(tmp_path, reference, windows)
    assert [r.retrain for r in results] == [True] + [False] * 7
    assert all(r.status == "drift" for r in results)
    requested = history.read(s, kinds={"retrain_requested"})
    suppressed = history.read(s, kinds={"retrain_suppressed"})
    assert len(requested) == 1 and len(suppressed) == 7
    assert requested[0].reason == ", ".join(requested[0].details["reasons"]) and requested[0].reason
    assert "amount" in requested[0].details["drifted_columns"]
    assert all("cooldown" in e.reason for e in suppressed)


def test_no_retrain_while_training_runs_then_one_after(tmp_path, undrifted, covariate) -> None:
    reference = reference_from(undrifted[0])
    windows = [covariate.sample(2500, random_state=i) for i in range(4)]
    results, s = hourly(tmp_path, reference, windows, running_at={0, 1, 2})
    assert [r.retrain for r in results] == [False, False, False, True]
    assert all("running" in e.reason for e in history.read(s, kinds={"retrain_suppressed"}))


def test_training_started_in_history_suppresses_until_it_finishes_or_goes_stale(
    tmp_path, undrifted, covariate
) -> None:
    from loopline.monitoring.decide import should_retrain

    s, cfg = settings(tmp_path), config()
    verdict = check(reference_from(undrifted[0]), covariate.iloc[:2500], NOW)
    history.record(s, "training_started", at=NOW - timedelta(hours=1))
    assert not should_retrain(verdict, history.read(s), NOW, False, cfg).retrain
    stale = NOW + timedelta(hours=cfg.retrain.training_max_age_hours)
    assert should_retrain(verdict, history.read(s), stale, False, cfg).retrain
    history.record(s, "trained", at=NOW)
    assert should_retrain(verdict, history.read(s), NOW, False, cfg).retrain


def test_cooldown_ends(tmp_path, undrifted, covariate) -> None:
    s, cfg = settings(tmp_path), config()
    reference = reference_from(undrifted[0])
    first = record_decision(
        s, check(reference, covariate.iloc[:2500], NOW), cfg, now=NOW, training_running=False
    )
    later = NOW + timedelta(hours=cfg.retrain.cooldown_hours, minutes=1)
    second = record_decision(
        s, check(reference, covariate.iloc[:2500], later), cfg, now=later, training_running=False
    )
    assert first.retrain and second.retrain


def test_empty_window_is_insufficient_data_not_a_crash(tmp_path, undrifted) -> None:
    reference = reference_from(undrifted[0])
    verdict = check(reference, pd.DataFrame(), NOW)
    assert verdict.status == INSUFFICIENT and "0 predictions" in verdict.notes[0] and not verdict.reasons
    result = record_decision(settings(tmp_path), verdict, config(), now=NOW, training_running=False)
    assert not result.retrain and "insufficient_data" in result.summary


def test_window_without_the_monitored_columns_is_invalid_input(undrifted) -> None:
    reference = reference_from(undrifted[0])
    verdict = check(reference, pd.DataFrame({"something_else": np.arange(2000.0)}), NOW)
    assert verdict.status == INVALID and "none of the monitored columns" in verdict.notes[0]
    assert {q.check for q in verdict.quality} == {"absent"}


def test_partly_missing_columns_and_quality_issues_are_reported(undrifted, new_category) -> None:
    reference = reference_from(undrifted[0])
    window = new_category.drop(columns=["cust_tx_count_24h"]).iloc[:2500].copy()
    window.loc[window.index[:1000], "amount"] = np.nan
    verdict = check(reference, window, NOW)
    issues = {(q.column, q.check) for q in verdict.quality}
    assert {
        ("cust_tx_count_24h", "absent"),
        ("amount", "missing_share"),
        ("merchant_category", "unseen_categories"),
    } <= issues
    assert "cust_tx_count_24h" not in {c.column for c in verdict.columns}
    assert any("absent" in n for n in verdict.notes)


@pytest.mark.parametrize("reason", ["prediction_drift"])
def test_prediction_drift_alone_is_a_trigger(undrifted, reason) -> None:
    reference = reference_from(undrifted[0])
    window = undrifted[1].sample(2500, random_state=0)  # a sample of the whole later days: inputs as usual
    window["score"] = np.clip(window["score"] * 3, 0, 1)  # same inputs, the model answers differently
    verdict = check(reference, window, NOW)
    assert verdict.prediction_drift and reason in verdict.reasons and not verdict.dataset_drift


def test_a_new_champion_is_not_held_back_by_the_old_champions_cooldown(
    tmp_path, undrifted, covariate
) -> None:
    s, cfg = settings(tmp_path), config()
    window = covariate.iloc[:2500]
    first = record_decision(
        s, check(reference_from(undrifted[0], version="1"), window, NOW), cfg, now=NOW, training_running=False
    )
    history.record(s, "training_started", at=NOW + timedelta(minutes=5))
    history.record(s, "trained", version="2", at=NOW + timedelta(minutes=20))
    # v2 was promoted within the hour; its own drift is its own, the v1 request's cooldown does not apply.
    soon = NOW + timedelta(hours=2)
    same = record_decision(
        s,
        check(reference_from(undrifted[0], version="1"), window, soon),
        cfg,
        now=soon,
        training_running=False,
    )
    new = record_decision(
        s,
        check(reference_from(undrifted[0], version="2"), window, soon),
        cfg,
        now=soon,
        training_running=False,
    )
    assert first.retrain and not same.retrain and "cooldown" in same.reason
    assert new.retrain and new.model_version == "2"
