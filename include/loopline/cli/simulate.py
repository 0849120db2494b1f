"""``loopline simulate``: write simulated transaction and label batches into a landing directory.

Only argparse and the standard library at import time: the simulator (numpy, pandas) is imported when
the command runs, so that ``loopline --help`` stays fast.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from datetime import date
from typing import Any

DRIFT_KIND_NAMES = ("covariate", "new_category", "concept", "prior")
FORMATS = ("parquet", "csv")

_EPILOG = """\
drift kinds (--drift KIND --drift-from DAY, DAY a 0-based day index or a date):
  covariate      more online payments, higher amounts
  new_category   a new merchant category (crypto_exchange) appears
  concept        fraud moves to another segment and pattern; only labels show it
  prior          the fraud rate triples

layout: DIR/transactions/transactions_<YYYY-MM-DD>.<fmt>, DIR/labels/labels_<YYYY-MM-DD>.<fmt>
bad batches (--bad KIND, see --list-bad): DIR/transactions/transactions_<first day>_bad-<KIND>.<fmt>
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
        help="write simulated card transactions and labels (one batch per day) into a directory",
        description="Simulate card traffic with fraud, delayed labels, optional drift and bad batches.\n"
        "Deterministic: the same arguments give the same data.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--days", type=_positive_int, help="number of days to simulate (required unless --list-bad)"
    )
    p.add_argument(
        "--start", type=_date, default=date(2026, 1, 1), help="first day, YYYY-MM-DD (default 2026-01-01)"
    )
    p.add_argument("--seed", type=_seed, default=42, help="random seed (default 42)")
    p.add_argument("--out", help="output directory (required unless --list-bad)")
    p.add_argument("--customers", type=_positive_int, default=2000, help="number of customers (default 2000)")
    p.add_argument("--format", choices=FORMATS, default="parquet", help="file format (default parquet)")
    p.add_argument("--drift", metavar="KIND", help=f"inject drift: {', '.join(DRIFT_KIND_NAMES)}")
    p.add_argument("--drift-from", metavar="DAY", help="first drifted day: 0-based index or YYYY-MM-DD")
    p.add_argument("--bad", metavar="KIND", help="also write a bad batch of this kind for the first day")
    p.add_argument("--list-bad", action="store_true", help="list the bad-batch kinds and exit")
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
        from loopline.usecases.fraud.simulator import BAD_KINDS

        width = max(map(len, BAD_KINDS))
        for kind, description in BAD_KINDS.items():
            print(f"{kind:<{width}}  {description}")
        return 0

    missing = [name for name, value in (("--days", args.days), ("--out", args.out)) if value is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    if (args.drift is None) != (args.drift_from is None):
        parser.error("--drift and --drift-from go together")
    if args.drift is not None and args.drift not in DRIFT_KIND_NAMES:
        parser.error(
            f"argument --drift: unknown kind {args.drift!r} (choose from {', '.join(DRIFT_KIND_NAMES)})"
        )

    from loopline.usecases.fraud.simulator import BAD_KINDS, Drift, SimulationConfig, write_run

    if args.bad is not None and args.bad not in BAD_KINDS:
        parser.error(f"argument --bad: unknown kind {args.bad!r} (choose from {', '.join(BAD_KINDS)})")
    drift = None
    if args.drift is not None:
        drift = Drift(args.drift, _drift_day(parser, args.drift_from, args.start, args.days))
    config = SimulationConfig(
        days=args.days, start=args.start, seed=args.seed, n_customers=args.customers, drift=drift
    )
    progress = not args.quiet and sys.stderr.isatty()
    summary = write_run(config, args.out, fmt=args.format, bad=args.bad, progress=progress)

    if not args.quiet:
        _print_summary(summary)
    if args.json:
        print(json.dumps(summary))
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    print(
        f"Simulated {summary['days']} days ({summary['start']} .. {summary['end']}, seed {summary['seed']}): "
        f"{summary['transactions']:,} transactions, fraud rate {summary['fraud_rate']:.2%}"
    )
    print(f"  {len(summary['transaction_files'])} transaction batches in {summary['out']}/transactions")
    print(
        f"  {summary['label_files']} label batches ({summary['label_rows']:,} labels) in {summary['out']}/labels"
    )
    if summary["drift"]:
        drift = summary["drift"]
        print(
            f"  drift: {drift['kind']} from day {drift['from_day']} ({drift['from_date']}): {drift['description']}"
        )
    if summary["bad_file"]:
        print(f"  bad batch: {summary['bad_file']}")
