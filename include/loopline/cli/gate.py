"""``loopline gate VERSION [--holdout PATH] [--json]``: run the benchmark gate on a registered version."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_gate(args: argparse.Namespace) -> int:
    from loopline.config import get_settings
    from loopline.config.use_case import load_use_case
    from loopline.gating.gate import GateError, run_gate
    from loopline.gating.holdout import HoldoutError, build_holdout
    from loopline.gating.policy import GatePolicyError, load_policy

    settings = get_settings()
    model_name = args.model_name or load_use_case(settings.use_case).model_name
    try:
        policy = load_policy(args.policy or settings.policy_file("gate"))
        holdout = args.holdout
        if holdout is None:
            holdout = settings.state.reports / "gate" / str(args.version) / "holdout.parquet"
            build_holdout(settings, policy, holdout)
        verdict = run_gate(settings, args.version, holdout, model_name=model_name, policy=policy)
    except (GateError, HoldoutError, GatePolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {
        "version": str(args.version),
        "passed": verdict.passed,
        "why": verdict.why,
        "comparison": verdict.comparison.to_dict(),
        "checks": verdict.checks_passed(),
        "reasons": verdict.reasons,
        "report": str(settings.state.reports / "gate" / str(args.version) / "gate_report.json"),
    }
    human = (
        f"gate {'PASSED' if verdict.passed else 'REJECTED'} for {model_name} v{args.version}: {verdict.why}"
    )
    print(human, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(summary))
    return 0 if verdict.passed else 1


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("gate", help="benchmark gate: quality vs champion, fairness, latency, infra")
    p.add_argument("version", help="registered model version to gate")
    p.add_argument(
        "--holdout",
        type=Path,
        default=None,
        help="holdout parquet (with manifest); default: build the newest labelled days per gate.yaml",
    )
    p.add_argument("--model-name", default=None, help="registered model (default: the use case's model_name)")
    p.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="gate policy YAML (default: the use case's, else include/config/gate.yaml)",
    )
    p.add_argument("--json", action="store_true", help="last line: the verdict summary as JSON")
    p.set_defaults(func=cmd_gate)
