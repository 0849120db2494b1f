"""``loopline``: set up and drive the platform from a shell.

Each sub-command is a thin shell over a function in ``loopline.platform`` (or a later stage), so the
same behaviour is reachable from tests and DAGs without going through argv.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from loopline.cli import deployment as deployment_cli
from loopline.cli import features as features_cli
from loopline.cli import gate as gate_cli
from loopline.cli import k8s as k8s_cli
from loopline.cli import serving as serving_cli
from loopline.cli import simulate as simulate_cli
from loopline.config import Settings, get_settings, telemetry_off_env
from loopline.config.use_case import available_use_cases


def _print_login(info: dict[str, Any]) -> None:
    airflow = info["airflow"]
    print(
        f"Airflow UI   {airflow['url']}  (login {airflow.get('username', '?')} / {airflow.get('password', '?')})"
    )
    if airflow.get("health_unknown"):
        print(f"             Airflow's health is unknown: {airflow['health_unknown']}")
    print(f"MLflow UI    {info['mlflow']['url']}")
    if "serving" in info:
        print(f"Predictions  {info['serving']['url']}/v1/predict  (OpenAPI {info['serving']['url']}/docs)")
    print(f"State dir    {info['state_dir']}   (logs in {info['logs']})")
    print("Stop with    loopline down")


def cmd_up(args: argparse.Namespace) -> int:
    from loopline.platform import stack

    settings = get_settings()
    stack.up(settings, profile=args.profile)
    _print_login(stack.describe(settings))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from loopline.platform import stack

    stack.down(get_settings())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from loopline.platform import stack

    settings = get_settings()
    info = stack.describe(settings)
    if args.json:
        from loopline.status import loop_state

        # The distributed profile keeps the history in Postgres and the registry behind its MLflow server.
        info.update(loop_state(stack.active_settings(settings)))
        info["approval"] = _pending_approval(settings) if info["running"] else None
        print(json.dumps(info, indent=2))
        return 0
    print(f"Loopline ({info['mode']} mode): {'running' if info['running'] else 'not running'}")
    for name, service in info["services"].items():
        line = f"  {name:<14} {'up' if service['running'] else 'down':<5} pid {service['pid']}"
        if "restarts" in service:  # supervised: restarted when it dies
            exit_code = service["last_exit_code"]
            line += (
                f"  ({service['state']}; restarts {service['restarts']}"
                + (f", last exit {exit_code} at {service['last_exit_at']}" if exit_code is not None else "")
                + ")"
            )
        print(line)
    _print_login(info)
    return 0


def _pending_approval(settings: Settings) -> dict[str, Any] | None:
    """The canary promotion waiting for a person (``loopline canary approve|reject``), if any; None when
    Airflow cannot say (status still answers, with what it knows)."""
    from loopline.deployment.approval import approval_status
    from loopline.platform.airflow_api import AirflowApiError
    from loopline.platform.stack import api_for

    try:
        return approval_status(api_for(settings))
    except AirflowApiError:
        return None


def _parse_conf(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: --conf is not valid JSON ({exc.msg} at character {exc.pos})") from exc
    if not isinstance(conf, dict):
        raise SystemExit("error: --conf must be a JSON object, e.g. '{\"epochs\": 5}'")
    return conf


def trigger_and_follow(dag_id: str, conf: dict[str, Any], wait: bool, timeout: float) -> int:
    """Trigger ``dag_id`` over REST; with ``wait``, print task progress and the final state last."""
    from loopline.platform.stack import api_for

    api = api_for(get_settings())
    run_id = api.trigger(dag_id, conf)
    print(f"triggered {dag_id} run {run_id}")
    if not wait:
        return 0

    def show(tasks: dict[str, str]) -> None:
        print("  " + "  ".join(f"{task}={state}" for task, state in sorted(tasks.items())), flush=True)

    result = api.wait(dag_id, run_id, timeout=timeout, on_change=show)
    failed = sorted(t for t, s in result.task_states.items() if s not in ("success", "skipped"))
    if failed:
        print(f"tasks not successful: {', '.join(failed)} (logs in the Airflow UI or `loopline status` logs)")
    print(f"{dag_id} {run_id}: {result.state}")
    return 0 if result.succeeded else 1


def cmd_trigger(args: argparse.Namespace) -> int:
    return trigger_and_follow(args.dag_id, _parse_conf(args.conf), args.wait, args.timeout)


def cmd_demo(args: argparse.Namespace) -> int:
    """The loop on embedded defaults, unattended (see loopline.demo for what it covers today)."""
    from loopline.demo import DemoFailed, run_demo
    from loopline.platform import stack

    if args.use_case:
        # Every process of the stack inherits it: the whole loop runs this use case.
        os.environ["LOOPLINE_USE_CASE"] = args.use_case
    settings = get_settings()
    try:
        code = run_demo(settings, trigger_and_follow, profile=args.profile)
    except DemoFailed as failed:
        print(f"demo failed: {failed}", file=sys.stderr)
        code = 1
    print()
    if args.exit:
        stack.down(settings)
    else:
        _print_login(stack.describe(settings))
    return code


def cmd_ingest(args: argparse.Namespace) -> int:
    """Audit and publish (or quarantine) one batch file now, exactly as the ingest DAG would."""
    from pathlib import Path

    from loopline.data.ingest import BatchGone, UnknownBatchKind, ingest_file

    path = Path(args.file)
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist")
    try:
        result = ingest_file(get_settings(), path, kind=args.kind)
    except BatchGone as gone:
        raise SystemExit(f"error: {gone}") from gone
    except UnknownBatchKind as unknown_kind:
        raise SystemExit(f"error: {unknown_kind}") from unknown_kind
    print(result.summary(), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        payload = {k: result.to_dict()[k] for k in ("status", "rows", "batch_id", "report", "failures")}
        payload.update(kind=result.kind, published_rows=result.published_rows, warnings=result.warnings)
        print(json.dumps(payload, default=str))
    return 1 if result.status == "quarantined" else 0


def cmd_train(args: argparse.Namespace) -> int:
    """``python -m loopline.training.train`` under the loopline command (same arguments)."""
    from loopline.training.train import main as train_main

    return train_main(args.passthrough)


def cmd_airflow(args: argparse.Namespace) -> int:
    """Run the ``airflow`` CLI against the local stack's configuration."""
    from loopline.platform.airflow_env import child_env, venv_bin
    from loopline.platform.secrets import load_or_create_secrets

    settings = get_settings()
    settings.state.ensure()
    env = child_env(settings, load_or_create_secrets(settings))
    argv = [str(venv_bin() / "airflow"), *args.passthrough]
    os.execve(argv[0], argv, env)
    return 0  # pragma: no cover - execve does not return


PASS_THROUGH = {"train": cmd_train, "airflow": cmd_airflow}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loopline", description="Loopline: the closed-loop MLOps platform.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="start the local stack (Airflow + MLflow) and wait until healthy")
    p.add_argument(
        "--profile",
        choices=["embedded", "distributed"],
        default="embedded",
        help="embedded (default): SQLite, LocalExecutor, one state dir; distributed: Postgres, Redis, "
        "an S3 object store, MLflow on them and Airflow with two Celery workers that share no "
        "disk (docs/profiles.md)",
    )
    p.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop everything `up` started (either profile)").set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="what runs, URLs and the local Airflow login")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("trigger", help="trigger a DAG through Airflow's REST API")
    p.add_argument("dag_id")
    p.add_argument("--conf", help="run configuration as a JSON object")
    p.add_argument("--wait", action="store_true", help="follow the run; exit non-zero unless it succeeds")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait with --wait (default 1800)")
    p.set_defaults(func=cmd_trigger)

    p = sub.add_parser("demo", help="start the stack and run the loop end to end")
    p.add_argument("--exit", action="store_true", help="stop the stack when the demo is done")
    p.add_argument(
        "--use-case",
        choices=available_use_cases(),
        default=None,
        help="the use case whose world the loop runs (default: LOOPLINE_USE_CASE)",
    )
    p.add_argument(
        "--profile",
        choices=["embedded", "distributed"],
        default="embedded",
        help="embedded (default) or distributed: the loop on Celery workers with no shared disk "
        "(docs/profiles.md)",
    )
    p.set_defaults(func=cmd_demo)

    simulate_cli.add_parser(sub)
    features_cli.add_parser(sub)
    k8s_cli.add_parser(sub)
    gate_cli.add_parser(sub)
    serving_cli.add_parser(sub)
    deployment_cli.add_parser(sub)

    p = sub.add_parser("ingest", help="validate one batch file and publish or quarantine it")
    p.add_argument(
        "file", help="a .parquet or .csv batch (kind from its folder: one of the use case's landing folders)"
    )
    p.add_argument(
        "--kind", help="batch kind when the folder does not say: a landing folder name of the use case"
    )
    p.add_argument("--json", action="store_true", help="last line: the outcome as JSON")
    p.set_defaults(func=cmd_ingest)

    # Listed for --help; main() hands their arguments over untouched (see PASS_THROUGH).
    sub.add_parser("train", help="train the use case's model on a training set (`loopline train --help`)")
    sub.add_parser(
        "airflow", help="run the airflow CLI against the local stack (e.g. `loopline airflow dags list`)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for key, value in telemetry_off_env().items():
        os.environ.setdefault(key, value)
    argv = list(sys.argv[1:] if argv is None else argv)
    # Pass-through commands hand every remaining argument (flags included) to their own parser.
    if argv and argv[0] in PASS_THROUGH:
        args = argparse.Namespace(func=PASS_THROUGH[argv[0]], passthrough=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    from loopline.features.feature_service import FeatureRowsMismatch
    from loopline.platform.airflow_api import AirflowApiError
    from loopline.platform.stack import StackError

    try:
        code: int = args.func(args)
        return code
    except (AirflowApiError, StackError, FeatureRowsMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: the reader left, the work itself is done.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
