"""Benchmark: rows/s validating a 1M-row transactions batch with Loopline's GX suite.

Compares Loopline's validator (the whole suite in one GX validation definition, so expectations share
their metric computations) with the simplest GX usage, ``batch.validate(expectation)`` once per
expectation, on the same 1M simulated rows in the same run, and prints both and their ratio.

    make bench            # or: .venv/bin/python bench/validation.py [--rows N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from loopline.config import Settings
from loopline.data import validation
from loopline.data.ingest import use_case_of
from loopline.usecases.fraud.simulator import SimulationConfig, simulate


def batch_of(rows: int) -> pd.DataFrame:
    """Simulated traffic tiled to ``rows`` rows with fresh, unique transaction ids."""
    base = simulate(SimulationConfig(days=14, n_customers=2000, seed=5)).transactions
    reps = int(np.ceil(rows / len(base)))
    frame = pd.concat([base] * reps, ignore_index=True).iloc[:rows].copy()
    frame["transaction_id"] = pd.array([f"tx_{i:012d}" for i in range(rows)], dtype="string")
    return frame


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    suites_dir = use_case_of(Settings()).expectations_dir
    frame = batch_of(rows)
    print(f"batch: {len(frame):,} rows x {frame.shape[1]} columns")

    outcome = validation.validate_frame(frame, "transactions", suites_dir)  # warm the cached validator
    assert outcome.passed, outcome.blocking

    def one_at_a_time() -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch = (
            context.data_sources.add_pandas("bench")
            .add_dataframe_asset("frame")
            .add_batch_definition_whole_dataframe("whole")
            .get_batch(batch_parameters={"dataframe": validation._naive_utc(frame)})
        )
        latest = pd.Timestamp.now(tz="UTC").tz_localize(None)
        for item in validation.load_suite_spec(suites_dir, "transactions")["expectations"]:
            config = ExpectationConfiguration(type=item["type"], kwargs=item["kwargs"])
            batch.validate(config.to_domain_obj(), expectation_parameters={"latest_allowed_time": latest})

    loopline_s = timed(lambda: validation.validate_frame(frame, "transactions", suites_dir))
    baseline_s = timed(one_at_a_time, repeats=1)
    print(f"loopline (one suite run)    : {loopline_s:.2f} s  {rows / loopline_s:,.0f} rows/s")
    print(f"one expectation at a time   : {baseline_s:.2f} s  {rows / baseline_s:,.0f} rows/s")
    print(f"ratio (one-at-a-time / loopline): {baseline_s / loopline_s:.2f}x")


if __name__ == "__main__":
    main()
