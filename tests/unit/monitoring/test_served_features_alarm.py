"""The drift check's served-features part: its policy, its alarm in history (never a retrain), and a check
that fails or cannot judge recorded as such instead of breaking the drift check."""

from __future__ import annotations

from datetime import timedelta

import pytest
from monitoring_testkit import CONFIG, NOW, config, reference_from, settings

from loopline.config.drift_policy import DriftConfigError, drift_config_from_dict, load_drift_config
from loopline.lineage import history
from loopline.monitoring import monitor
from loopline.monitoring.decide import decide
from loopline.monitoring.monitor import SERVED_SKEW, record_decision, served_features_check
from loopline.monitoring.served_check import ServedSkewReport

START = NOW - timedelta(hours=24)


def _report(compared: int, mismatches: int, **overrides) -> ServedSkewReport:
    fields = {
        "judged": True,
        "reason": "",
        "since": START.isoformat(),
        "until": NOW.isoformat(),
        "served": compared,
        "waiting": 7,
        "eligible": compared,
        "sampled": compared,
        "inputs_differ": 0,
        "compared": compared,
        "mismatches": mismatches,
        "mismatch_rate": mismatches / compared if compared else None,
        "features": 30,
        "worst_features": {"cust_tx_count_24h": mismatches} if mismatches else {},
        "examples": [{"transaction_id": "tx_1", "feature": "cust_tx_count_24h", "served": 2, "offline": 3}]
        if mismatches
        else [],
    }
    return ServedSkewReport(**{**fields, **overrides})


@pytest.fixture
def known_kind(monkeypatch):
    """``served_features_skew`` as a history kind (lineage.history's EVENT_KINDS may not list it yet)."""
    monkeypatch.setattr(history, "EVENT_KINDS", history.EVENT_KINDS | {SERVED_SKEW})


def _verdict(undrifted, served: dict | None):
    before, after = undrifted
    verdict = decide(
        reference_from(before),
        after.sample(2500, random_state=0),
        config(),
        window_start=START,
        window_end=NOW,
        now=NOW,
    )
    assert verdict.status == "ok" and not verdict.reasons
    from dataclasses import replace

    return replace(verdict, served_features=served)


def test_the_shipped_policy_has_the_served_features_limit_and_it_is_validated_strictly():
    served = load_drift_config(CONFIG).served_features
    assert served.max_mismatch_rate == 0.01 and served.sample == 500
    with pytest.raises(DriftConfigError, match="served_features.max_mismatch_rate"):
        drift_config_from_dict({"served_features": {"max_mismatch_rate": 1.5}})
    with pytest.raises(DriftConfigError, match="served_features.sample"):
        drift_config_from_dict({"served_features": {"sample": 0}})
    with pytest.raises(DriftConfigError, match="served_features.max_mismatches"):
        drift_config_from_dict({"served_features": {"max_mismatches": 3}})


def test_a_mismatch_rate_above_the_limit_is_an_alarm_of_its_own_never_a_retrain(
    tmp_path, monkeypatch, known_kind, undrifted
):
    monkeypatch.setattr("loopline.monitoring.served_check.check_served", lambda *a, **k: _report(500, 12))
    served = served_features_check(settings(tmp_path), config(), START, NOW)
    assert served["alarm"] and served["max_mismatch_rate"] == 0.01 and served["mismatch_rate"] == 0.024
    assert "SKEW" in served["summary"] and "cust_tx_count_24h" in served["summary"]
    s = settings(tmp_path)
    result = record_decision(s, _verdict(undrifted, served), config(), now=NOW, training_running=False)
    assert not result.retrain and result.served_features_alarm and "SKEW" in result.served_features
    events = history.read(s)
    assert [e.kind for e in events] == ["drift_checked", SERVED_SKEW]
    checked, alarm = events
    assert checked.details["served_features"]["alarm"] is True and "served features: 12/500" in checked.reason
    assert alarm.reason == served["summary"] and alarm.details["worst_features"] == {"cust_tx_count_24h": 12}
    assert alarm.details["mismatch_rate"] == 0.024 and alarm.details["examples"][0]["offline"] == 3


def test_within_the_limit_or_not_judged_there_is_no_alarm(tmp_path, monkeypatch, known_kind, undrifted):
    s = settings(tmp_path)
    for report in (
        _report(500, 5),
        _report(0, 0, judged=False, reason="no served transaction is ingested and materialised yet"),
    ):
        monkeypatch.setattr("loopline.monitoring.served_check.check_served", lambda *a, r=report, **k: r)
        served = served_features_check(s, config(), START, NOW)
        assert not served["alarm"]
        record_decision(s, _verdict(undrifted, served), config(), now=NOW, training_running=False)
    assert [e.kind for e in history.read(s)] == ["drift_checked", "drift_checked"]
    within, unjudged = history.read(s)
    assert "<= limit 1.00%" in within.reason
    assert "served features not judged: no served transaction is ingested" in unjudged.reason


def test_a_failing_served_check_is_recorded_as_not_judged_and_the_drift_check_goes_on(
    tmp_path, monkeypatch, undrifted
):
    def broken(*args, **kwargs):
        raise OSError("the curated store is unreadable")

    monkeypatch.setattr("loopline.monitoring.served_check.check_served", broken)
    s = settings(tmp_path)
    served = served_features_check(s, config(), START, NOW)
    assert served == {
        "judged": False,
        "reason": "OSError: the curated store is unreadable",
        "since": START.isoformat(),
        "until": NOW.isoformat(),
        "max_mismatch_rate": 0.01,
        "alarm": False,
        "summary": "served features not judged: OSError: the curated store is unreadable",
    }
    result = record_decision(s, _verdict(undrifted, served), config(), now=NOW, training_running=False)
    assert result.status == "ok" and not result.served_features_alarm
    assert "not judged: OSError" in history.read(s)[0].reason


def test_with_an_empty_log_the_real_check_says_why_it_did_not_judge(tmp_path):
    served = served_features_check(settings(tmp_path), config(), START, NOW)
    assert served["judged"] is False and "no answered prediction" in served["reason"] and not served["alarm"]


def test_an_alarm_without_the_history_kind_stays_in_the_drift_check(tmp_path, monkeypatch, undrifted):
    monkeypatch.setattr(history, "EVENT_KINDS", history.EVENT_KINDS - {SERVED_SKEW})
    monkeypatch.setattr("loopline.monitoring.served_check.check_served", lambda *a, **k: _report(100, 50))
    s = settings(tmp_path)
    served = served_features_check(s, config(), START, NOW)
    record_decision(s, _verdict(undrifted, served), config(), now=NOW, training_running=False)
    (checked,) = history.read(s)
    assert checked.kind == "drift_checked" and checked.details["served_features"]["alarm"] is True
    assert monitor.SERVED_SKEW == "served_features_skew"
