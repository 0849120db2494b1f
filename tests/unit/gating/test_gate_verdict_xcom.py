"""The gate's verdict as the gate task's XCom: decision, reasons, checks and metrics, small and strict JSON."""

from __future__ import annotations

import json
import math

from loopline.gating.decide import Comparison, decide
from loopline.gating.metrics import LatencyStats
from loopline.gating.policy import policy_from_dict
from loopline.gating.verdict import MAX_REASONS, verdict_summary

GOOD = {"roc_auc": 0.93123456, "pr_auc": 0.40, "recall_at_fpr": 0.50, "brier": 0.05, "expected_cost": 0.8}


def policy(**sections) -> object:
    base = {"operating_point": {"threshold": 0.5}, "infra": {"enabled": False}, "latency": {"enabled": False}}
    return policy_from_dict({**base, **sections})


def _strict_json(value: dict) -> dict:
    """What an API client parses: json.dumps refuses NaN/inf here, as strict JSON parsers do."""
    return json.loads(json.dumps(value, allow_nan=False))


def test_a_rejection_carries_its_reasons_checks_and_metrics_against_the_champion() -> None:
    p = policy(
        quality={"roc_auc": {"min": 0.5, "max_regression": 0.01}}, latency={"enabled": True, "p95_ms": 5.0}
    )
    champion = {**GOOD, "roc_auc": 0.96}
    verdict = decide(
        p,
        GOOD,
        champion,
        None,
        LatencyStats(100, 2.0, 4.123456, 6.0, 7.0),
        None,
        comparison=Comparison("vs_champion", "3"),
    )
    summary = _strict_json(verdict_summary(verdict, model_name="fraud_detector", version=7, run_id="abc"))
    assert summary["decision"] == "rejected" and summary["version"] == "7" and summary["run_id"] == "abc"
    assert summary["reasons"] == verdict.reasons and summary["reasons"][0].startswith(
        "quality: roc_auc 0.9312"
    )
    assert summary["why"] == verdict.why
    assert summary["checks"] == {
        "quality": "failed",
        "fairness": "skipped",
        "latency": "passed",
        "infra": "skipped",
    }
    assert summary["comparison"] == {"kind": "vs_champion", "champion_version": "3"}
    assert summary["metrics"] == {"roc_auc": {"candidate": 0.9312, "champion": 0.96}}
    assert summary["latency_ms"] == {"p95": 4.123, "p99": 6.0}
    assert summary["report"] == "runs:/abc/gate/gate_report.json"
    assert summary["model_card"] == "runs:/abc/gate/model_card.md"


def test_a_pass_says_passed_with_no_reasons_and_nan_metrics_become_null() -> None:
    p = policy(quality={"roc_auc": {"min": 0.5}, "brier": {"max_regression": 0.0}})
    verdict = decide(p, {**GOOD, "brier": math.nan}, None, None, None, None)
    assert verdict.passed, verdict.why
    summary = _strict_json(verdict_summary(verdict, model_name="fraud_detector", version="2"))
    assert summary["decision"] == "passed" and summary["reasons"] == []
    assert summary["metrics"]["brier"] == {"candidate": None, "champion": None}
    assert summary["comparison"]["kind"] == "value_only_no_champion"
    assert summary["latency_ms"] is None and summary["report"] is None  # no run id given


def test_the_summary_stays_small_however_many_reasons() -> None:
    p = policy(quality={"roc_auc": {"min": 0.5}})
    verdict = decide(p, None, None, None, None, None, candidate_error="x" * 10_000)
    summary = verdict_summary(verdict, model_name="fraud_detector", version="9", run_id="r")
    assert summary["decision"] == "rejected" and len(summary["reasons"][0]) <= 500
    many = type(verdict)(
        False,
        {
            "quality": type(verdict.checks["quality"])(
                "quality", False, reasons=[f"reason {i}" for i in range(100)]
            )
        },
        "Rejected: many",
        verdict.comparison,
    )
    listed = verdict_summary(many, model_name="fraud_detector", version="9")["reasons"]
    assert len(listed) == MAX_REASONS + 1 and listed[-1] == "… and 80 more (see the gate report)"
    assert len(json.dumps(verdict_summary(verdict, model_name="fraud_detector", version="9"))) < 8_000
