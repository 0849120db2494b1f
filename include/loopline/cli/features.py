"""``loopline features ...``: materialise, build training sets, check training/serving skew (online vs offline
now, and served vs offline on live traffic)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date or time (YYYY-MM-DD[THH:MM])") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _emit(payload: dict[str, Any], human: str, as_json: bool) -> None:
    print(human, file=sys.stderr if as_json else sys.stdout)
    if as_json:
        print(json.dumps(payload, default=str))


def cmd_materialize(args: argparse.Namespace) -> int:
    from loopline.config import get_settings
    from loopline.features.curated import curated_time_range
    from loopline.features.materialize import materialize

    settings = get_settings()
    span = curated_time_range(settings)
    if span is None and (args.start is None or args.end is None):
        raise SystemExit("error: the curated store has no events yet: ingest some batches first")
    start, end = (args.start, args.end) if span is None else (args.start or span[0], args.end or span[1])
    if start >= end:
        raise SystemExit(f"error: --start ({start}) must be before --end ({end})")
    from loopline.serving.prediction_log import answered_events

    result = materialize(settings, start, end, served=answered_events(settings))
    rows = ", ".join(f"{name} {count}" for name, count in result.offline_rows.items())
    _emit(result.to_dict(), f"materialised [{result.start}, {result.end}): {rows}", args.json)
    return 0


def cmd_training_set(args: argparse.Namespace) -> int:
    from loopline.config import get_settings
    from loopline.features.training_sets import build_training_set

    manifest = build_training_set(get_settings(), args.out, args.start, args.end, args.labels_as_of)
    human = (
        f"{manifest.rows} rows ({manifest.labelled_rows} labelled, label rate {manifest.label_rate}) "
        f"with {len(manifest.features)} features of {manifest.feature_service} -> {manifest.path}"
    )
    _emit(manifest.to_dict(), human, args.json)
    return 0


def cmd_check_skew(args: argparse.Namespace) -> int:
    from loopline.config import get_settings
    from loopline.features.skew import check_skew

    report = check_skew(get_settings(), sample=args.sample)
    human = (
        f"compared {report.compared} entities x {report.features} features: {report.mismatches} mismatching"
    )
    _emit(report.to_dict(), human, args.json)
    return 0 if report.mismatches == 0 else 1


def cmd_check_served(args: argparse.Namespace) -> int:
    """Exit 0: judged and within the drift policy's ``served_features.max_mismatch_rate``, or not judged (the
    reason is printed); 1: the mismatch rate is above that limit."""
    from loopline.config import get_settings
    from loopline.config.drift_policy import load_drift_config
    from loopline.monitoring.served_check import check_served

    settings = get_settings()
    policy = load_drift_config(settings.policy_file("drift")).served_features
    if args.since and args.until and args.since >= args.until:
        raise SystemExit(f"error: --since ({args.since}) must be before --until ({args.until})")
    report = check_served(
        settings,
        since=args.since,
        until=args.until,
        sample=args.sample if args.sample is not None else policy.sample,
        seed=args.seed,
    )
    above = report.exceeds(policy.max_mismatch_rate)
    human = report.summary(policy.max_mismatch_rate)
    if above:
        human += (
            "\nexit 1: the served features differ from the offline point-in-time features above the limit"
        )
    payload = {**report.to_dict(), "max_mismatch_rate": policy.max_mismatch_rate, "alarm": above}
    _emit(payload, human, args.json)
    return 1 if above else 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    features = subparsers.add_parser("features", help="Feast: materialise, training sets, skew check")
    sub = features.add_subparsers(dest="features_command", required=True)

    p = sub.add_parser("materialize", help="compute aggregates and load the online store for an interval")
    p.add_argument("--start", type=_when, help="default: the first curated transaction")
    p.add_argument("--end", type=_when, help="default: just after the last curated transaction")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("training-set", help="labelled events + point-in-time features -> parquet")
    p.add_argument("--start", type=_when)
    p.add_argument("--end", type=_when)
    p.add_argument("--labels-as-of", type=_when, help="only labels known by then (default: now)")
    p.add_argument("--out", required=True, help="output parquet; the manifest goes beside it")
    p.add_argument("--json", action="store_true", help="last line: the manifest")
    p.set_defaults(func=cmd_training_set)

    p = sub.add_parser("check-skew", help="online vs offline features for the same entities and time")
    p.add_argument("--sample", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check_skew)

    p = sub.add_parser(
        "check-served", help="features serving logged vs offline point-in-time ones (live traffic)"
    )
    p.add_argument("--since", type=_when, help="predictions made from then (default: the whole log)")
    p.add_argument("--until", type=_when, help="predictions made before then (default: now)")
    p.add_argument(
        "--sample",
        type=_positive,
        help="events compared at most (default: drift.yaml's served_features.sample)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="last line: the report as JSON")
    p.set_defaults(func=cmd_check_served)
