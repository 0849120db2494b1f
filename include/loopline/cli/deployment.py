"""``loopline rollback --reason`` (production one step back), ``loopline canary`` (run a canary in this
process, as the ``deploy_canary`` DAG does across tasks; for demos and debugging) and ``loopline canary
approve | reject`` (answer the DAG's promotion question over Airflow's REST API, instead of in the UI)."""

from __future__ import annotations

import argparse
import json
import sys

from loopline.deployment.approval import APPROVAL_DAG, PROMOTE, ROLL_BACK, NoApprovalWaiting, answer_approval


def cmd_rollback(args: argparse.Namespace) -> int:
    from loopline.config import get_settings
    from loopline.deployment.actions import DeploymentError, rollback_production

    try:
        demoted, restored = rollback_production(get_settings(), args.reason)
    except (DeploymentError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    result = {"demoted": demoted, "champion": restored, "reason": args.reason}
    print(
        json.dumps(result)
        if args.json
        else f"champion is version {restored} again (version {demoted} rolled back): {args.reason}"
    )
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    from loopline.config import get_settings
    from loopline.deployment.actions import DeploymentError
    from loopline.deployment.canary import run_canary
    from loopline.deployment.policy import CanaryPolicyError, load_canary_policy

    settings = get_settings()
    try:
        policy = load_canary_policy(
            args.policy or settings.canary_policy or settings.policy_file("canary")
        ).with_overrides(
            bake_seconds=args.bake_seconds,
            min_requests=args.min_requests,
            max_bake_seconds=args.max_bake_seconds,
        )
        outcome = run_canary(
            settings, policy, args.version, metrics_url=args.metrics_url, reason="loopline canary"
        )
    except (DeploymentError, CanaryPolicyError) as exc:
        print(f"error: {exc}")
        return 2
    print(
        json.dumps(outcome.to_dict(), default=str)
        if args.json
        else f"{outcome.action}: version {outcome.version}: {outcome.reason}"
    )
    return 0 if outcome.action != "rolled_back" else 1


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
        print(
            f"{verb}: {result['question']} → {result['answer']} ({APPROVAL_DAG} run {result['run_id']}, "
            f"by {result['by']}{'; ' + result['comment'] if result['comment'] else ''})"
        )
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("rollback", help="production one step back: @previous_champion serves again")
    p.add_argument("--reason", required=True, help="why (recorded in the history and on the version)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_rollback)

    p = subparsers.add_parser(
        "canary",
        help="run the challenger's canary here (what DAG deploy_canary does); "
        "`canary approve|reject` answers deploy_canary's approval",
    )
    p.add_argument("--version", default=None, help="the challenger version (default: the @challenger alias)")
    p.add_argument("--policy", default=None, help="canary policy YAML (default: include/config/canary.yaml)")
    p.add_argument("--bake-seconds", type=float, default=None, help="override the minimum bake per step")
    p.add_argument("--max-bake-seconds", type=float, default=None, help="override the maximum bake per step")
    p.add_argument("--min-requests", type=int, default=None, help="override every minimum sample size")
    p.add_argument(
        "--metrics-url", default=None, help="the service's /metrics (default: settings' serving URL)"
    )
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=cmd_canary)

    # Optional sub-commands: plain `loopline canary [options]` still runs a canary in-process.
    answers = p.add_subparsers(
        dest="answer",
        metavar="{approve,reject}",
        help="answer the promotion question of a waiting deploy_canary run "
        "(policy approval.required) over Airflow's REST API",
    )
    for name, approve, what in (
        ("approve", True, f"{PROMOTE!r}: the challenger becomes the champion"),
        ("reject", False, f"{ROLL_BACK!r}: the challenger leaves production traffic"),
    ):
        a = answers.add_parser(
            name,
            help=what,
            description=f"Answer deploy_canary's approval with {what}. "
            "Exit status: 0 answered, 1 nothing is waiting, 2 Airflow refused or is unreachable.",
        )
        a.add_argument(
            "--run-id",
            default=None,
            help="the deploy_canary run to answer (default: the one waiting, newest first)",
        )
        a.add_argument("--comment", default=None, help="why; kept with the answer in Airflow")
        a.add_argument("--json", action="store_true", help="print the answer as JSON")
        a.set_defaults(func=cmd_answer, approve=approve)
