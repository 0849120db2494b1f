"""``loopline simulate``: write a use case's simulated batches (events and their late labels) into a landing
directory, through the use case's simulator (``UseCase.load_simulator``). The default use case is card fraud,
whose simulator also takes ``--customers`` and ``--bad``; ``--option NAME=VALUE`` reaches any simulator's own.

Only argparse and the standard library at import time: the simulator (numpy, pandas) is imported when
the command runs, so that ``loopline --help`` stays fast.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopline.config.use_case import UseCase, WorldSimulator

FORMATS = ("parquet", "csv")

_EPILOG = """\
drift: --drift KIND --drift-from DAY (DAY a 0-based day index or a date), KIND one of the use case's
  simulator's drift kinds: --list-drift shows them with what each changes
layout: the use case's landing folders, DIR/<folder>/<folder>_<YYYY-MM-DD>.<fmt>, one batch per day each
simulator options: --option NAME=VALUE (the default use case's also as --customers and --bad; --bad KIND
  writes DIR/<events folder>/<folder>_<first day>_bad-<KIND>.<fmt>, kinds listed by --list-bad)
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``simulate`` on a sub-command parser (``loopline simulate ...``)."""
    p = subparsers.add_parser(
        "simulate",
        help="write a use case's simulated events and labels (one batch per day) into a directory",
        description="Simulate a use case's world (--use-case; see --list-drift), its delayed labels,\n"
        "optional drift and bad batches (--bad, the default use case's).\n"
        "Deterministic: the same arguments give the same data.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--days", type=_positive_int, help="number of days to simulate (required unless listing)")
    p.add_argument(
        "--start", type=_date, default=date(2026, 1, 1), help="first day, YYYY-MM-DD (default 2026-01-01)"
    )
    p.add_argument("--seed", type=_seed, default=42, help="random seed (default 42)")
    p.add_argument("--out", help="output directory (required unless listing)")
    p.add_argument("--use-case", metavar="NAME", help="whose world to simulate (default: LOOPLINE_USE_CASE)")
    p.add_argument(
        "--customers", type=_positive_int, help="number of customers (the default use case's option)"
    )
    p.add_argument("--format", choices=FORMATS, default="parquet", help="file format (default parquet)")
    p.add_argument("--drift", metavar="KIND", help="inject drift of this kind (see --list-drift)")
    p.add_argument("--drift-from", metavar="DAY", help="first drifted day: 0-based index or YYYY-MM-DD")
    p.add_argument(
        "--bad", metavar="KIND", help="also write a bad batch of this kind for the first day (see --list-bad)"
    )
    p.add_argument(
        "--option",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="an option of the use case's simulator (listed by --list-drift)",
    )
    p.add_argument("--list-bad", action="store_true", help="list the bad-batch kinds and exit")
    p.add_argument(
        "--list-drift", action="store_true", help="list the use case's drift kinds and its options, and exit"
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no human summary")
    p.set_defaults(func=functools.partial(cmd_simulate, parser=p))


def _drift_day(parser: argparse.ArgumentParser, text: str, start: date, days: int) -> int:
    try:
        index = int(text)
    except ValueError:
        try:
            index = (date.fromisoformat(text) - start).days
        except ValueError:
            parser.error(f"argument --drift-from: not a day index or a date: {text!r}")
    if not 0 <= index < days:
        parser.error(f"argument --drift-from: {text} is outside the simulated days (0..{days - 1})")
    return index


def cmd_simulate(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Run ``loopline simulate``; usage errors exit with status 2 like argparse's own."""
    parser = parser or argparse.ArgumentParser(prog="loopline simulate")
    if args.list_bad:
        use_case, simulation = _simulation(parser, args.use_case)
        if not simulation.bad_kinds:
            print(f"the {use_case.name} simulator writes no bad batches")
        width = max(map(len, simulation.bad_kinds), default=0)
        for kind, description in simulation.bad_kinds.items():
            print(f"{kind:<{width}}  {description}")
        return 0

    if args.list_drift:
        use_case, simulation = _simulation(parser, args.use_case)
        width = max(map(len, [*simulation.drift_kinds, *simulation.options]), default=0)
        print(f"drift kinds of the {use_case.name} simulator (--drift):")
        for kind, description in simulation.drift_kinds.items():
            print(f"  {kind:<{width}}  {description}")
        print("its options (--option NAME=VALUE):")
        for name, description in simulation.options.items():
            print(f"  {name:<{width}}  {description}")
        return 0

    missing = [name for name, value in (("--days", args.days), ("--out", args.out)) if value is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    if (args.drift is None) != (args.drift_from is None):
        parser.error("--drift and --drift-from go together")

    from pathlib import Path

    from loopline.config.use_case import SimulationRequest

    use_case, simulation = _simulation(parser, args.use_case)
    if args.drift is not None and args.drift not in simulation.drift_kinds:
        parser.error(
            f"argument --drift: unknown kind {args.drift!r} (choose from {', '.join(simulation.drift_kinds)})"
        )
    options = _options(parser, args.option)
    options.update({k: v for k, v in (("customers", args.customers), ("bad", args.bad)) if v is not None})
    unknown = sorted(set(options) - set(simulation.options))
    if unknown:
        takes = ", ".join(simulation.options) or "none"
        parser.error(
            f"the {use_case.name} simulator does not take {', '.join(unknown)} (its options: {takes})"
        )
    if "bad" in options and options["bad"] not in simulation.bad_kinds:
        kinds = ", ".join(simulation.bad_kinds)
        parser.error(f"argument --bad: unknown kind {options['bad']!r} (choose from {kinds})")
    drift_from = _drift_day(parser, args.drift_from, args.start, args.days) if args.drift is not None else 0
    request = SimulationRequest(
        out=Path(args.out),
        days=args.days,
        start=args.start,
        seed=args.seed,
        drift=args.drift,
        drift_from=drift_from,
        fmt=args.format,
        options=options,
    )
    progress = not args.quiet and sys.stderr.isatty()
    summary = simulation.write(request, progress=progress)

    if not args.quiet:
        print(simulation.describe(summary))
    if args.json:
        print(json.dumps(summary))
    return 0


def _simulation(parser: argparse.ArgumentParser, name: str | None) -> tuple[UseCase, WorldSimulator]:
    """The use case named (default: the settings') and its simulator; a usage error naming what is wrong."""
    from loopline.config import Settings
    from loopline.config.use_case import UseCaseError, load_use_case

    try:
        use_case = load_use_case(name or Settings().use_case)
        return use_case, use_case.load_simulator()
    except UseCaseError as exc:
        parser.error(f"argument --use-case: {exc}")


def _options(parser: argparse.ArgumentParser, pairs: list[str]) -> dict[str, Any]:
    """``--option NAME=VALUE`` pairs; a value that is a whole number is passed as one."""
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            parser.error(f"argument --option: expected NAME=VALUE, got {pair!r}")
        options[name] = int(value) if value.isdigit() else value
    return options
