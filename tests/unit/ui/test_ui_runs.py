"""Which Airflow run recorded a history event: exact or unambiguous matches only, never a guess."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loopline_airflow.ui.runs import DagRunTimes, match_event_runs

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _event(event_id: int, kind: str, at: datetime, version: str | None = "3", **details) -> dict:
    return {
        "id": event_id,
        "kind": kind,
        "at": at.isoformat(),
        "version": version,
        "reason": "",
        "details": details,
    }


def _run(
    dag_id: str,
    run_id: str,
    start: datetime | None,
    end: datetime | None = None,
    *,
    interval_end: datetime | None = None,
    run_after: datetime | None = None,
) -> DagRunTimes:
    return DagRunTimes(dag_id, run_id, start, end, interval_end, run_after or start)


def test_a_drift_event_matches_the_monitor_run_whose_moment_it_records():
    # check_drift records at its run's data_interval_end (scheduled) or run_after (manual): exact, not a window.
    scheduled = _run(
        "monitor_drift",
        "scheduled__12",
        T0 + timedelta(seconds=5),
        T0 + timedelta(seconds=40),
        interval_end=T0,
        run_after=T0,
    )
    manual = _run(
        "monitor_drift",
        "manual__13",
        T0 + timedelta(hours=1, seconds=1),
        interval_end=None,
        run_after=T0 + timedelta(hours=1),
    )
    events = [
        _event(1, "drift_checked", T0),
        _event(2, "retrain_requested", T0),
        _event(3, "drift_checked", T0 + timedelta(hours=1)),
        _event(4, "drift_checked", T0 + timedelta(seconds=20)),
    ]  # the CLI's wall clock: no run
    assert match_event_runs(events, [scheduled, manual]) == {
        1: ("monitor_drift", "scheduled__12"),
        2: ("monitor_drift", "scheduled__12"),
        3: ("monitor_drift", "manual__13"),
    }


def test_a_gate_verdict_matches_the_training_run_that_recorded_trained_for_that_version():
    run = _run("train_model", "manual__7", T0, T0 + timedelta(minutes=10))
    other = _run("train_model", "manual__8", T0 + timedelta(hours=2))  # still running
    events = [
        _event(1, "trained", T0 + timedelta(minutes=8), version="7", dag_run_id="manual__7", run_id="r7"),
        _event(2, "gate_rejected", T0 + timedelta(minutes=9), version="7"),
        # `loopline gate 7` re-run by hand while another training runs: not that run's verdict.
        _event(3, "gate_passed", T0 + timedelta(hours=2, minutes=1), version="7"),
        # a gate outside any run
        _event(4, "gate_passed", T0 + timedelta(days=1), version="7"),
    ]
    assert match_event_runs(events, [run, other]) == {2: ("train_model", "manual__7")}


def test_canary_events_match_the_one_deploy_canary_run_in_progress():
    canary = _run("deploy_canary", "asset_triggered__1", T0, T0 + timedelta(minutes=30))
    rollback = _run(
        "rollback_production", "manual__2", T0 + timedelta(hours=1), T0 + timedelta(hours=1, seconds=9)
    )
    events = [
        _event(1, "canary_started", T0 + timedelta(seconds=2)),
        _event(2, "traffic_shifted", T0 + timedelta(minutes=5)),
        _event(3, "promoted", T0 + timedelta(minutes=29)),
        _event(4, "rolled_back", T0 + timedelta(hours=1, seconds=3), scope="production"),
        _event(5, "rolled_back", T0 + timedelta(hours=1, seconds=3), scope="canary"),  # no canary run then
        _event(6, "promoted", T0 + timedelta(hours=3)),
    ]  # the demo/CLI, outside Airflow
    assert match_event_runs(events, [canary, rollback]) == {
        1: ("deploy_canary", "asset_triggered__1"),
        2: ("deploy_canary", "asset_triggered__1"),
        3: ("deploy_canary", "asset_triggered__1"),
        4: ("rollback_production", "manual__2"),
    }


def test_two_runs_in_progress_at_once_is_ambiguous_and_gets_no_link():
    runs = [_run("deploy_canary", "a", T0), _run("deploy_canary", "b", T0 + timedelta(seconds=1))]
    assert match_event_runs([_event(1, "traffic_shifted", T0 + timedelta(minutes=1))], runs) == {}


def test_events_that_name_their_run_or_have_no_id_are_left_to_the_renderer():
    run = _run("train_model", "manual__7", T0, T0 + timedelta(minutes=10))
    events = [
        _event(1, "training_started", T0 + timedelta(seconds=1), dag_run_id="manual__7"),
        {"kind": "drift_checked", "at": T0.isoformat(), "details": {}},
        _event(2, "drift_checked", T0, dag_run_id="x"),
    ]
    assert match_event_runs(events, [run]) == {}
