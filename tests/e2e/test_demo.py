"""`loopline demo --exit` (what `make demo` runs, minus leaving the stack up) on a scratch project."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scratch_stack import processes_using, scratch_env, scratch_project

pytestmark = pytest.mark.integration


def test_demo_runs_unattended_and_leaves_nothing_running(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LOOPLINE_"))}
    env.update(scratch_env(tmp_path, scratch_project(tmp_path)))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "loopline"), "demo", "--exit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    text = out.stdout
    assert ": success" in text and "platform_smoke" in text
    assert "quarantined as it should be" in text and "bad-duplicate_ids" in text
    landed = int(re.search(r"(\d+) files landed; the landing-zone watcher", text).group(1))
    published = int(re.search(r"ingest done: (\d+) batches published", text).group(1))
    assert published == landed - 1 >= 8, "every good batch (a week of transactions, some labels) publishes"
    assert "training/serving skew: 0 mismatches" in text
    rows = int(re.search(r"point-in-time training set: ([\d,]+) rows", text).group(1).replace(",", ""))
    simulated = int(re.search(r"([\d,]+) transactions, fraud rate", text).group(1).replace(",", ""))
    # The broken batch is a corrupted copy of day one, which also lands intact: nothing is missing.
    assert rows == simulated, "every simulated transaction is in the training set exactly once"
    assert re.search(
        r"fraud_detector v1 passed the benchmark gate: quality ok\s+fairness ok\s+latency ok\s+infra ok", text
    ), "the first model clears every check of the gate"
    # The loop closes: v1 promoted and serving, drift detected, retrain, v2 gated, canaried, promoted.
    assert "champion v1 serves" in text
    assert re.search(r"retrain requested \([^)]*drift[^)]*\); train_model starts", text)
    assert re.search(r"fraud_detector v2 passed the benchmark gate", text)
    assert "champion v2 serves" in text
    state = Path(env["LOOPLINE_STATE_DIR"])
    assert (state / "reports" / "gate" / "1" / "model_card.md").is_file()
    assert list((state / "reports" / "drift").glob("*/report.html"))
    assert list((state / "data" / "curated" / "transactions").glob("date=*/*.parquet"))
    assert list((state / "data" / "curated" / "labels").glob("date=*/*.parquet"))
    assert processes_using(state) == []
