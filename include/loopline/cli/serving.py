"""``loopline serve``: the prediction service (see ``python -m loopline.serving``); ``loopline traffic``:
replay events against it as production clients."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable


def cmd_serve(args: argparse.Namespace) -> int:
    from loopline.serving.__main__ import serve

    return serve(args)


def cmd_traffic(args: argparse.Namespace) -> int:
    from loopline.config import get_settings
    from loopline.serving.traffic import NoEvents, run_traffic

    try:
        report = run_traffic(
            get_settings(), args.rps, args.duration, url=args.url, batch=args.batch, recorded=args.recorded
        )
    except NoEvents as exc:
        print(f"error: {exc}")
        return 2
    print(report.describe())
    if args.json:
        print(json.dumps(report.to_dict()))  # last line: machine-readable
    return 0 if report.ok == report.sent else 1


def _positive(kind: type) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        value: float | int = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from loopline.serving.__main__ import add_arguments

    p = subparsers.add_parser("serve", help="run the prediction service (POST /v1/predict)")
    add_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("traffic", help="replay events against the prediction service (open loop)")
    p.add_argument("--rps", type=_positive(float), default=20.0, help="requests per second (default 20)")
    p.add_argument("--duration", type=_positive(float), default=30.0, help="seconds (default 30)")
    p.add_argument("--url", default=None, help="the service's base URL (default: the settings' serving URL)")
    p.add_argument("--batch", type=_positive(int), default=1, help="events per request (default 1)")
    p.add_argument(
        "--recorded",
        action="store_true",
        help="replay the newest day as it happened: each event at its recorded time, so the hour of day and "
        "fresh window counts are the day's (default: every event re-stamped to when it is sent, a load test)",
    )
    p.add_argument("--json", action="store_true", help="also print the report as JSON (last line)")
    p.set_defaults(func=cmd_traffic)
