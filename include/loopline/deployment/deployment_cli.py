"""``loopline rollback --reason`` (production one step back), ``loopline canary`` (run a canary in this
process, as the ``deploy_canary`` DAG does across tasks; for demos and debugging) and ``loopline canary
approve | reject`` (answer the DAG's promotion question over Airflow's REST API, instead of in the UI)."""

from __future__ import annotations

import argparse
import json
import sys
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


def cmd_rollback(args: argparse.Namespace) -> int:
    from loopline.config import get_settings
    from loopline.deployment.actions import DeploymentError, rollback_production

    try:
        demoted, restored = rollback_production(get_settings(), args.reason)
    except (DeploymentError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    result = {"demoted": demoted, "champion": restored, "reason": args.reason}
    print(json.dumps(result) if args.json else f"champion is version {restored} again (version {demoted} "
                                                 f"rolled back): {args.reason}")
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    from loopline.config import get_settings
    from loopline.deployment.actions import DeploymentError
    from loopline.deployment.canary import run_canary
    from loopline.deployment.policy import CanaryPolicyError, load_canary_policy

    settings = get_settings()
    try:
        policy = load_canary_policy(args.policy or settings.canary_policy, config_dir=settings.config_dir).with_overrides(
            bake_seconds=args.bake_seconds, min_requests=args.min_requests, max_bake_seconds=args.max_bake_seconds)
        outcome = run_canary(settings, policy, args.version, metrics_url=args.metrics_url, reason="loopline canary")
    except (DeploymentError, CanaryPolicyError) as exc:
        print(f"error: {exc}")
        return 2
    print(json.dumps(outcome.to_dict(), default=str) if args.json
          else f"{outcome.action}: version {outcome.version}: {outcome.reason}")
    return 0 if outcome.action != "rolled_back" else 1


def waiting_approvals(api: Any, run_id: str | None = None) -> list[Any]:
    """The unanswered promotion questions of ``deploy_canary`` (of one run, or of any), newest first, as
    the client's ``HITLDetail``; the DAG's ``max_active_runs=1`` makes that one at most."""
    from airflow_client.client.api.task_instance_api import TaskInstanceApi

    page = api._call(  # AirflowApi's error translation: unreachable / refused → AirflowApiError
        f"reading the approvals of {APPROVAL_DAG!r}",
        lambda: TaskInstanceApi(api.client).get_hitl_details(
            APPROVAL_DAG, run_id or "~", task_id=APPROVAL_TASK, response_received=False,
            order_by=["-created_at"], limit=10),
    )
    # Unanswered but no longer waiting (the run was failed or cleared by hand): an answer would resume nothing.
    return [d for d in page.hitl_details
            if str(getattr(d.task_instance.state, "value", d.task_instance.state)) in WAITING_STATES]


def nothing_waiting(run: dict[str, Any] | None, task_state: str | None, run_id: str | None = None) -> str:
    """Why there is nothing to answer, naming the run looked at (``run``: newest, or the one asked for)."""
    if run is None:
        return (f"no canary is waiting for approval: {APPROVAL_DAG} has no run {run_id!r}" if run_id
                else f"no canary is waiting for approval: {APPROVAL_DAG} has not run yet")
    where = f"{APPROVAL_DAG} run {run['run_id']!r}" if run_id else f"the latest {APPROVAL_DAG} run {run['run_id']!r}"
    return (f"no canary is waiting for approval: {where} is {run['state']} "
            f"({APPROVAL_TASK}: {task_state or 'not started'})")


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


def answer_approval(api: Any, approve: bool, run_id: str | None = None, comment: str | None = None) -> dict[str, Any]:
    """Answer the waiting promotion question: ``approve`` → "Promote", else "Roll back". The run resumes
    at once (Airflow's answer endpoint moves the task on). Raises :class:`NoApprovalWaiting`."""
    from airflow_client.client import UpdateHITLDetailPayload
    from airflow_client.client.api.task_instance_api import TaskInstanceApi

    waiting = waiting_approvals(api, run_id)
    if not waiting:
        raise _no_approval_error(api, run_id)
    if len(waiting) > 1:  # only if deploy_canary's max_active_runs was raised: never guess which
        runs = ", ".join(repr(q.task_instance.dag_run_id) for q in waiting)
        raise NoApprovalWaiting(f"{len(waiting)} canaries wait for approval (runs {runs}): choose one with --run-id")
    question = waiting[0]
    option = PROMOTE if approve else ROLL_BACK
    if option not in question.options:
        raise NoApprovalWaiting(f"{APPROVAL_DAG}.{APPROVAL_TASK} offers {question.options}, not {option!r}: "
                                "is the DAG Loopline's?")
    params_input: dict[str, Any] = {}
    if comment is not None:
        if COMMENT not in (question.params or {}):
            raise NoApprovalWaiting(f"this approval question has no {COMMENT!r} field: answer without --comment")
        params_input[COMMENT] = comment
    ti = question.task_instance
    payload = UpdateHITLDetailPayload(chosen_options=[option], params_input=params_input)
    answer = api._call(
        f"answering the approval of {APPROVAL_DAG} run {ti.dag_run_id!r}",
        lambda: TaskInstanceApi(api.client).update_hitl_detail(APPROVAL_DAG, ti.dag_run_id, APPROVAL_TASK,
                                                               ti.map_index, payload),
    )
    return {"run_id": ti.dag_run_id, "question": question.subject, "answer": option,
            "by": answer.responded_by.name, "at": answer.responded_at.isoformat(), "comment": comment}


def approval_status(api: Any) -> dict[str, Any] | None:
    """The waiting promotion question for ``loopline status --json`` (None: nothing waits)."""
    waiting = waiting_approvals(api)
    if not waiting:
        return None
    question = waiting[0]
    return {"run_id": question.task_instance.dag_run_id, "question": question.subject, "body": question.body,
            "options": question.options, "default": question.defaults, "since": question.created_at.isoformat()}


def cmd_answer(args: argparse.Namespace) -> int:
    from loopline.config import get_settings
    from loopline.platform.stack import api_for

    if args.comment is not None and not args.comment.strip():
        print("error: --comment is empty: give the reason in words, or leave --comment out", file=sys.stderr)
        return 2
    try:
        result = answer_approval(api_for(get_settings()), args.approve, args.run_id, args.comment)
    except NoApprovalWaiting as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        verb = "approved" if args.approve else "rejected"
        print(f"{verb}: {result['question']} → {result['answer']} ({APPROVAL_DAG} run {result['run_id']}, "
              f"by {result['by']}{'; ' + result['comment'] if result['comment'] else ''})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("rollback", help="production one step back: @previous_champion serves again")
    p.add_argument("--reason", required=True, help="why (recorded in the history and on the version)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_rollback)

    p = subparsers.add_parser(
        "canary", help="run the challenger's canary here (what DAG deploy_canary does); "
                       "`canary approve|reject` answers deploy_canary's approval")
    p.add_argument("--version", default=None, help="the challenger version (default: the @challenger alias)")
    p.add_argument("--policy", default=None, help="canary policy YAML (default: include/config/canary.yaml)")
    p.add_argument("--bake-seconds", type=float, default=None, help="override the minimum bake per step")
    p.add_argument("--max-bake-seconds", type=float, default=None, help="override the maximum bake per step")
    p.add_argument("--min-requests", type=int, default=None, help="override every minimum sample size")
    p.add_argument("--metrics-url", default=None, help="the service's /metrics (default: settings' serving URL)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=cmd_canary)

    # Optional sub-commands: plain `loopline canary [options]` still runs a canary in-process.
    answers = p.add_subparsers(dest="answer", metavar="{approve,reject}",
                               help="answer the promotion question of a waiting deploy_canary run "
                                    "(policy approval.required) over Airflow's REST API")
    for name, approve, what in (("approve", True, f"{PROMOTE!r}: the challenger becomes the champion"),
                                ("reject", False, f"{ROLL_BACK!r}: the challenger leaves production traffic")):
        a = answers.add_parser(name, help=what, description=f"Answer deploy_canary's approval with {what}. "
                               "Exit status: 0 answered, 1 nothing is waiting, 2 Airflow refused or is unreachable.")
        a.add_argument("--run-id", default=None,
                       help="the deploy_canary run to answer (default: the one waiting, newest first)")
        a.add_argument("--comment", default=None, help="why; kept with the answer in Airflow")
        a.add_argument("--json", action="store_true", help="print the answer as JSON")
        a.set_defaults(func=cmd_answer, approve=approve)
