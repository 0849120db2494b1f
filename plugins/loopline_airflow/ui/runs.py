"""Which Airflow DAG run recorded a history event that does not name its run itself.

Every event recorded inside an Airflow task names its run (``dag_id``, ``dag_run_id``: ``history.record``
reads them from the task's environment), and ``render.airflow_run_of`` links those directly. This module is
the fallback for events recorded before the history did so, whose library producers (``gating.gate``,
``deployment``, ``monitoring``) did not know their DAG run: the page finds the run in Airflow's own metadata
(the api-server serving the page has it) — only where the match is exact or unambiguous, never a guess:

| events | recorded by | matched when |
|---|---|---|
| ``drift_checked``, ``retrain_requested``, ``retrain_suppressed``, ``served_features_skew`` | ``monitor_drift``'s ``check_drift`` | the event's time equals the run's ``data_interval_end`` (or ``run_after`` of a manual run): the task records its run's moment, not the wall clock |
| ``gate_passed``, ``gate_rejected`` | ``train_model``'s ``gate_candidate`` | the same run recorded ``trained`` for the same version, and the run was in progress at the event's time |
| ``canary_started``, ``traffic_shifted``, ``promoted``, ``rolled_back`` (canary) | ``deploy_canary`` | exactly one run of it was in progress at the event's time (the DAG runs one at a time) |
| ``rolled_back`` (production) | ``rollback_production`` | likewise |

An event recorded outside Airflow (``loopline gate``, ``loopline drift``, the demo's own calls) matches no
run and gets no link. ``match_event_runs`` is pure; ``airflow_dag_runs`` is the one query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

DRIFT_DAG = "monitor_drift"
TRAIN_DAG = "train_model"
CANARY_DAG = "deploy_canary"
ROLLBACK_DAG = "rollback_production"
MATCHED_DAGS = (DRIFT_DAG, TRAIN_DAG, CANARY_DAG, ROLLBACK_DAG)
DRIFT_KINDS = frozenset({"drift_checked", "retrain_requested", "retrain_suppressed", "served_features_skew"})
GATE_KINDS = frozenset({"gate_passed", "gate_rejected"})
CANARY_KINDS = frozenset({"canary_started", "traffic_shifted", "promoted", "rolled_back"})
MAX_RUNS = 5000  # newest runs of the matched DAGs read per page view


@dataclass(frozen=True)
class DagRunTimes:
    """What the match needs of one DAG run (UTC datetimes; ``end`` None while it runs)."""

    dag_id: str
    run_id: str
    start: datetime | None
    end: datetime | None
    data_interval_end: datetime | None
    run_after: datetime | None

    def in_progress_at(self, moment: datetime) -> bool:
        return self.start is not None and self.start <= moment and (self.end is None or moment <= self.end)


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def match_event_runs(
    events: Iterable[dict[str, Any]], runs: Iterable[DagRunTimes]
) -> dict[int, tuple[str, str]]:
    """``{event id: (dag_id, run_id)}`` for the events (``loop_state``'s history) a run of ``runs``
    recorded, by the rules in the module docstring."""
    events = list(events)
    by_dag: dict[str, list[DagRunTimes]] = {}
    for run in runs:
        by_dag.setdefault(run.dag_id, []).append(run)
    drift_at: dict[datetime, list[DagRunTimes]] = {}
    for run in by_dag.get(DRIFT_DAG, []):
        for moment in {run.data_interval_end, run.run_after} - {None}:
            drift_at.setdefault(moment, []).append(run)  # type: ignore[arg-type]
    # (version, dag run id) of every trained event: the gate runs in the task that recorded it.
    trained = {
        (str(e.get("version")), str((e.get("details") or {}).get("dag_run_id")))
        for e in events
        if e.get("kind") == "trained" and (e.get("details") or {}).get("dag_run_id")
    }
    out: dict[int, tuple[str, str]] = {}
    for event in events:
        event_id, moment, kind = event.get("id"), _utc(event.get("at")), event.get("kind")
        if event_id is None or moment is None:
            continue
        details = event.get("details") or {}
        if details.get("dag_run_id"):
            continue  # it names its run itself
        if kind in DRIFT_KINDS:
            candidates = drift_at.get(moment, [])
        elif kind in GATE_KINDS:
            candidates = [
                r
                for r in by_dag.get(TRAIN_DAG, [])
                if r.in_progress_at(moment) and (str(event.get("version")), r.run_id) in trained
            ]
        elif kind in CANARY_KINDS:
            dag = (
                ROLLBACK_DAG if kind == "rolled_back" and details.get("scope") == "production" else CANARY_DAG
            )
            candidates = [r for r in by_dag.get(dag, []) if r.in_progress_at(moment)]
        else:
            continue
        if len(candidates) == 1:  # two runs at once would be a guess: no link
            out[int(event_id)] = (candidates[0].dag_id, candidates[0].run_id)
    return out


def airflow_dag_runs(events: list[dict[str, Any]]) -> list[DagRunTimes]:
    """The runs of the matched DAGs that could have recorded ``events``, from Airflow's metadata DB (in
    the api-server process). Runs that ended before the oldest event are left out."""
    moments = [m for m in (_utc(e.get("at")) for e in events) if m is not None]
    if not moments:
        return []
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import or_, select

    oldest = min(moments) - timedelta(minutes=1)
    query = (
        select(
            DagRun.dag_id,
            DagRun.run_id,
            DagRun.start_date,
            DagRun.end_date,
            DagRun.data_interval_end,
            DagRun.run_after,
        )
        .where(DagRun.dag_id.in_(MATCHED_DAGS))
        .where(or_(DagRun.end_date.is_(None), DagRun.end_date >= oldest, DagRun.run_after >= oldest))
        .order_by(DagRun.run_after.desc())
        .limit(MAX_RUNS)
    )
    with create_session() as session:
        rows = session.execute(query).all()
    return [DagRunTimes(r[0], r[1], _utc(r[2]), _utc(r[3]), _utc(r[4]), _utc(r[5])) for r in rows]


def event_runs(events: list[dict[str, Any]]) -> dict[int, tuple[str, str]]:
    """``match_event_runs`` against this Airflow's runs."""
    wanted = [
        e
        for e in events
        if e.get("kind") in DRIFT_KINDS | GATE_KINDS | CANARY_KINDS or e.get("kind") == "trained"
    ]
    return match_event_runs(wanted, airflow_dag_runs(wanted)) if wanted else {}
