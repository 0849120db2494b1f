"""The canary's human approval (policy ``approval.required``), answered over Airflow's REST API.

DAG ``deploy_canary`` asks it with ``PromotionDecisionOperator`` (plugins/loopline_airflow/canary_triggers.py);
``loopline canary approve | reject`` and ``loopline status --json`` read and answer it through these
functions, as the UI's "Required actions" page does.
"""

from __future__ import annotations

from typing import Any

# The question DAG deploy_canary asks when the canary policy has `approval.required: true`. The Airflow
# side (PromotionDecisionOperator in plugins/loopline_airflow/canary_triggers.py) imports these names,
# so the question and the answers given here cannot drift apart.
APPROVAL_DAG = "deploy_canary"
APPROVAL_TASK = "decide_promotion"
PROMOTE, ROLL_BACK = "Promote", "Roll back"
COMMENT = "comment"  # the question's one free-text field (a HITL param): why, kept with the decision
# A HITL task waits in `awaiting_input` (Airflow 3.3+; `deferred` before): only then does an answer resume it.
WAITING_STATES = ("awaiting_input", "deferred")


class NoApprovalWaiting(RuntimeError):
    """Nothing asks for an answer right now; the message names the run it looked at."""


def waiting_approvals(api: Any, run_id: str | None = None) -> list[Any]:
    """The unanswered promotion questions of ``deploy_canary`` (of one run, or of any), newest first, as
    the client's ``HITLDetail``; the DAG's ``max_active_runs=1`` makes that one at most."""
    from airflow_client.client.api.task_instance_api import TaskInstanceApi

    page = api._call(  # AirflowApi's error translation: unreachable / refused → AirflowApiError
        f"reading the approvals of {APPROVAL_DAG!r}",
        lambda: TaskInstanceApi(api.client).get_hitl_details(
            APPROVAL_DAG,
            run_id or "~",
            task_id=APPROVAL_TASK,
            response_received=False,
            order_by=["-created_at"],
            limit=10,
        ),
    )
    # Unanswered but no longer waiting (the run was failed or cleared by hand): an answer would resume nothing.
    return [
        d
        for d in page.hitl_details
        if str(getattr(d.task_instance.state, "value", d.task_instance.state)) in WAITING_STATES
    ]


def nothing_waiting(run: dict[str, Any] | None, task_state: str | None, run_id: str | None = None) -> str:
    """Why there is nothing to answer, naming the run looked at (``run``: newest, or the one asked for)."""
    if run is None:
        return (
            f"no canary is waiting for approval: {APPROVAL_DAG} has no run {run_id!r}"
            if run_id
            else f"no canary is waiting for approval: {APPROVAL_DAG} has not run yet"
        )
    where = (
        f"{APPROVAL_DAG} run {run['run_id']!r}"
        if run_id
        else f"the latest {APPROVAL_DAG} run {run['run_id']!r}"
    )
    return (
        f"no canary is waiting for approval: {where} is {run['state']} "
        f"({APPROVAL_TASK}: {task_state or 'not started'})"
    )


def _no_approval_error(api: Any, run_id: str | None) -> NoApprovalWaiting:
    from loopline.platform.airflow_api import AirflowApiError

    if run_id:
        try:
            run = {"run_id": run_id, "state": api.run_state(APPROVAL_DAG, run_id)}
        except AirflowApiError as exc:
            if "404" not in str(exc):
                raise
            run = None
    else:
        run = next(iter(api.dag_runs(APPROVAL_DAG, limit=1)), None)
    task_state = api.task_states(APPROVAL_DAG, run["run_id"]).get(APPROVAL_TASK) if run else None
    return NoApprovalWaiting(nothing_waiting(run, task_state, run_id))


def answer_approval(
    api: Any, approve: bool, run_id: str | None = None, comment: str | None = None
) -> dict[str, Any]:
    """Answer the waiting promotion question: ``approve`` → "Promote", else "Roll back". The run resumes
    at once (Airflow's answer endpoint moves the task on). Raises :class:`NoApprovalWaiting`."""
    from airflow_client.client import UpdateHITLDetailPayload
    from airflow_client.client.api.task_instance_api import TaskInstanceApi

    waiting = waiting_approvals(api, run_id)
    if not waiting:
        raise _no_approval_error(api, run_id)
    if len(waiting) > 1:  # only if deploy_canary's max_active_runs was raised: never guess which
        runs = ", ".join(repr(q.task_instance.dag_run_id) for q in waiting)
        raise NoApprovalWaiting(
            f"{len(waiting)} canaries wait for approval (runs {runs}): choose one with --run-id"
        )
    question = waiting[0]
    option = PROMOTE if approve else ROLL_BACK
    if option not in question.options:
        raise NoApprovalWaiting(
            f"{APPROVAL_DAG}.{APPROVAL_TASK} offers {' / '.join(map(str, question.options))}, not {option!r}: "
            "is the DAG Loopline's?"
        )
    params_input: dict[str, Any] = {}
    if comment is not None:
        if COMMENT not in (question.params or {}):
            raise NoApprovalWaiting(
                f"this approval question has no {COMMENT!r} field: answer without --comment"
            )
        params_input[COMMENT] = comment
    ti = question.task_instance
    payload = UpdateHITLDetailPayload(chosen_options=[option], params_input=params_input)
    answer = api._call(
        f"answering the approval of {APPROVAL_DAG} run {ti.dag_run_id!r}",
        lambda: TaskInstanceApi(api.client).update_hitl_detail(
            APPROVAL_DAG, ti.dag_run_id, APPROVAL_TASK, ti.map_index, payload
        ),
    )
    return {
        "run_id": ti.dag_run_id,
        "question": question.subject,
        "answer": option,
        "by": answer.responded_by.name,
        "at": answer.responded_at.isoformat(),
        "comment": comment,
    }


def approval_status(api: Any) -> dict[str, Any] | None:
    """The waiting promotion question for ``loopline status --json`` (None: nothing waits)."""
    waiting = waiting_approvals(api)
    if not waiting:
        return None
    question = waiting[0]
    return {
        "run_id": question.task_instance.dag_run_id,
        "question": question.subject,
        "body": question.body,
        "options": question.options,
        "default": question.defaults,
        "since": question.created_at.isoformat(),
    }


def who_decided(decision: dict[str, Any] | None) -> str:
    """``alice (HITL): 'looks good'`` from the approval task's XCom ``decision`` (PromotionDecisionOperator)."""
    if not decision:
        return "a person (HITL)"
    who = f"{decision.get('by') or 'a person'} (HITL)"
    return f"{who}: {decision['comment']!r}" if decision.get("comment") else who


def roll_back_reason(ramp: dict[str, Any] | None, decision: dict[str, Any] | None) -> str:
    """Why deploy_canary's roll-back task takes the challenger out, from the ramp's XCom and the approval
    task's ``decision``: the canary did not complete, nobody answered in time, or a person rejected it."""
    if (ramp or {}).get("outcome") != "promote":
        return "the canary did not complete (a task failed): see the deploy_canary run's logs"
    if decision and decision.get("timed_out"):
        return "promotion not approved: no answer within approval.timeout_minutes (HITL default: roll back)"
    return f"promotion rejected by {who_decided(decision)}"
