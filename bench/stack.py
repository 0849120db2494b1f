"""Benchmark: how fast the local stack starts and hands one task to the next.

Starts two scratch stacks in turn — Loopline's tuning, and the same stack with Airflow's default
scheduler idle sleep (1 s) — runs a chain of no-op tasks on each, and prints the median
task-to-task hop of each and their ratio. Also prints warm start-up time and how long a new DAG
file takes to appear (Loopline's setting; Airflow's default refresh interval is 300 s).

    make bench            # or: .venv/bin/python bench/stack.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from loopline.config import Settings
from loopline.platform import stack
from loopline.platform.processes import free_port

# The scratch project helper is shared with the integration tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scratch_stack import scratch_project  # noqa: E402

CHAIN = 6
HOP_DAG = f'''"""Benchmark DAG: {CHAIN} no-op tasks in a row."""
from airflow.sdk import chain, dag, task
from loopline_airflow.defaults import START_DATE, default_args


@dag(schedule=None, start_date=START_DATE, catchup=False, tags=["loopline", "bench"], doc_md=__doc__,
     default_args=default_args(retries=0))
def bench_hop():
    chain(*[task(task_id=f"step_{{i}}")(lambda: None)() for i in range({CHAIN})])


bench_hop()
'''
PICKUP_DAG = HOP_DAG.replace("def bench_hop", "def bench_pickup").replace("bench_hop()", "bench_pickup()")


def measure(idle_sleep: float, runs: int = 3) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="loopline-bench-") as tmp:
        root = Path(tmp)
        project = scratch_project(root)
        (project / "dags" / "bench_hop.py").write_text(HOP_DAG)
        settings = Settings(
            project_dir=project,
            state_dir=root / "state",
            airflow_port=free_port(),
            mlflow_port=free_port(),
            airflow_scheduler_idle_sleep=idle_sleep,
        )
        stack.up(settings, log=lambda *_: None)  # cold: migrates the DB
        stack.down(settings, log=lambda *_: None)
        started = time.monotonic()
        stack.up(settings, log=lambda *_: None)
        warm_up_s = time.monotonic() - started
        try:
            api = stack.api_for(settings)
            hops: list[float] = []
            for _ in range(runs):
                run_id = api.trigger("bench_hop")
                result = api.wait("bench_hop", run_id, timeout=300)
                assert result.succeeded, result
                timings = api.task_timings("bench_hop", run_id)
                for i in range(CHAIN - 1):
                    end = timings[f"step_{i}"][1]
                    start = timings[f"step_{i + 1}"][0]
                    hops.append((start - end).total_seconds())
            (project / "dags" / "bench_pickup.py").write_text(PICKUP_DAG)
            written = time.monotonic()
            while "bench_pickup" not in api.list_dags() and time.monotonic() - written < 400:
                time.sleep(0.25)
            pickup_s = time.monotonic() - written
        finally:
            stack.down(settings, log=lambda *_: None)
    return {
        "hop_median_s": statistics.median(hops),
        "hop_max_s": max(hops),
        "warm_up_s": warm_up_s,
        "pickup_s": pickup_s,
    }


def main() -> None:
    tuned = measure(Settings().airflow_scheduler_idle_sleep)
    print(
        f"loopline tuning : hop median {tuned['hop_median_s']:.3f} s (max {tuned['hop_max_s']:.3f} s), "
        f"warm up {tuned['warm_up_s']:.1f} s, new DAG file visible after {tuned['pickup_s']:.1f} s"
    )
    baseline = measure(1.0)
    print(
        f"airflow default : hop median {baseline['hop_median_s']:.3f} s (max {baseline['hop_max_s']:.3f} s), "
        f"warm up {baseline['warm_up_s']:.1f} s"
    )
    print(f"hop ratio (airflow default / loopline): {baseline['hop_median_s'] / tuned['hop_median_s']:.2f}x")


if __name__ == "__main__":
    main()
