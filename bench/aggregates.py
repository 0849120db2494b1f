"""Benchmark: computing and storing the four leak-free aggregate tables.

For each size: the full computation (``compute_aggregates``), the same restricted to the last day
(``since``: what a daily batch needs, still reading 30 days of history), the first write of the
offline store, merging one recomputed day into it, and ``refresh_aggregates`` of the last day from a
curated layout (read + compute + merge). Simulated traffic: ~6.7k transactions a day per 2,250
customers.

    .venv/bin/python bench/aggregates.py                      # 200k and 1M transactions
    .venv/bin/python bench/aggregates.py --sizes 30x2250      # days x customers
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from loopline.features.offline_refresh import refresh_aggregates
from loopline.features.offline_sink import write_aggregates
from loopline.usecases.fraud.features.aggregates import compute_aggregates
from loopline.usecases.fraud.simulator import SimulationConfig, simulate


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def write_curated(root: Path, tx: pd.DataFrame) -> None:
    days = tx["event_timestamp"].dt.strftime("%Y-%m-%d")
    for day, rows in tx.groupby(days):
        part = root / "transactions" / f"date={day}"
        part.mkdir(parents=True, exist_ok=True)
        rows.to_parquet(part / "batch.parquet", index=False)


def run(days: int, customers: int, repeats: int) -> None:
    started = time.perf_counter()
    tx = simulate(SimulationConfig(days=days, n_customers=customers, seed=5)).transactions
    print(
        f"\n{days} days x {customers:,} customers: {len(tx):,} transactions "
        f"(simulated in {time.perf_counter() - started:.1f} s)"
    )
    last_day = tx["event_timestamp"].max().normalize()

    full_s, tables = timed(lambda: compute_aggregates(tx), repeats)
    print(f"  compute_aggregates, all rows      {full_s:7.2f} s  ({len(tx) / full_s:,.0f} tx/s)")
    since_s, _ = timed(lambda: compute_aggregates(tx, since=last_day), repeats)
    print(f"  compute_aggregates, since last day {since_s:7.2f} s")

    with tempfile.TemporaryDirectory() as tmp:
        offline, curated = Path(tmp) / "offline", Path(tmp) / "curated"
        write_s, _ = timed(lambda: write_aggregates(offline, tables), 1)
        print(f"  write_aggregates, first write      {write_s:7.2f} s")
        day = {name: frame[frame["event_timestamp"] >= last_day] for name, frame in tables.items()}
        merge_s, _ = timed(lambda: write_aggregates(offline, day), repeats)
        print(f"  write_aggregates, merge one day    {merge_s:7.2f} s")
        write_curated(curated, tx)
        refresh_s, _ = timed(
            lambda: refresh_aggregates(curated, offline, last_day, last_day + pd.Timedelta(days=1)), repeats
        )
        print(f"  refresh_aggregates, one day        {refresh_s:7.2f} s  (read 30 d + compute + merge)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["30x2250", "30x11250", "150x2250"],
        help="DAYSxCUSTOMERS, e.g. 30x2250 (~200k transactions)",
    )
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for size in args.sizes:
        days, customers = (int(v) for v in size.split("x"))
        run(days, customers, args.repeats)


if __name__ == "__main__":
    main()
