"""What the DAGs hand each other through asset events: the producer's extra and the consumer's reading of it
(``loopline_airflow.assets``), so the DAG files only wire them."""

from __future__ import annotations

from types import SimpleNamespace

from loopline_airflow.assets import (
    CHALLENGER,
    MANUAL_RUN,
    RETRAIN_REQUESTED,
    challenger_extra,
    challenger_from_events,
    retrain_extra,
    trigger_reason,
)

TRAINED = {"version": "7", "run_id": "run-7", "reason": "drift: 6 of 10 features drifted", "metrics": {}}


def _event(extra: dict | None) -> SimpleNamespace:
    return SimpleNamespace(extra=extra)


def _context(version: str | None = None, **events: list) -> dict:
    by_name = {"challenger": CHALLENGER, "retrain": RETRAIN_REQUESTED}
    return {
        "params": {"version": version},
        "triggering_asset_events": {by_name[k]: v for k, v in events.items()},
    }


def test_a_canary_started_by_the_gate_deploys_the_newest_challenger_event():
    older = _event(challenger_extra({**TRAINED, "version": "6", "reason": "scheduled"}))
    newest = _event(challenger_extra(TRAINED))
    assert challenger_from_events(_context(challenger=[older, newest])) == (
        "7",
        "gate passed (drift: 6 of 10 features drifted)",
    )


def test_the_version_param_wins_and_a_missing_reason_is_said():
    assert challenger_from_events(_context("5", challenger=[_event({"version": "7"})])) == (
        "5",
        "gate passed (no reason given)",
    )
    assert challenger_from_events(_context(challenger=[_event(None)])) == (
        None,
        "gate passed (no reason given)",
    )


def test_a_manual_run_deploys_the_param_or_the_current_challenger():
    assert challenger_from_events(_context("5")) == ("5", MANUAL_RUN)
    assert challenger_from_events({"params": {"version": None}}) == (None, MANUAL_RUN)
    assert challenger_from_events({"params": {}, "triggering_asset_events": None}) == (None, MANUAL_RUN)


def test_a_retrain_request_carries_its_reason_to_the_training_run():
    check = {
        "reason": "6 of 10 features drifted",
        "summary": "drift in 60 % of the features",
        "report_dir": "/state/reports/drift/x",
        "mlflow_run_id": "drift-run",
        "model_version": "4",
    }
    extra = retrain_extra(check)
    assert extra["reason"] == "drift: 6 of 10 features drifted" and extra["model_version"] == "4"
    assert trigger_reason(_context(retrain=[_event(None), _event(extra)])) == extra["reason"]
    assert trigger_reason(_context(retrain=[_event({})])) is None
    assert trigger_reason({"params": {}}) is None
