"""`loopline demo --use-case delivery --exit` on a scratch project: the second use case (a regressor) closes the
same loop through the same platform code — v1 gated by MAE and fairness across tiers, live drift detected,
v2 retrained, gated and promoted through the canary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scratch_stack import processes_using, scratch_env, scratch_project

pytestmark = pytest.mark.integration


def test_delivery_demo_closes_the_loop_and_leaves_nothing_running(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LOOPLINE_"))}
    env.update(scratch_env(tmp_path, scratch_project(tmp_path)))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "loopline"), "demo", "--use-case", "delivery", "--exit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    text = out.stdout
    landed = int(re.search(r"(\d+) files landed; the landing-zone watcher", text).group(1))
    published = int(re.search(r"ingest done: (\d+) batches published", text).group(1))
    assert published == landed >= 20, "two weeks of orders and deliveries, none broken, all published"
    assert "training/serving skew: 0 mismatches" in text and "of delivery_time_v1" in text
    rows = int(re.search(r"point-in-time training set: ([\d,]+) rows", text).group(1).replace(",", ""))
    simulated = int(re.search(r"([\d,]+) orders", text).group(1).replace(",", ""))
    assert rows == simulated, "every simulated order is in the training set exactly once"
    assert re.search(
        r"delivery_time v1 passed the benchmark gate: quality ok\s+fairness ok\s+latency ok\s+infra ok", text
    )
    assert "champion v1 serves" in text
    # The injected drift is among what the monitor names, not only artefacts of replaying traffic.
    verdict = re.search(r"verdict: (.*)", text).group(1)
    assert "distance_km" in verdict, verdict
    assert re.search(r"retrain requested \([^)]*drift[^)]*\); train_model starts", text)
    assert re.search(r"delivery_time v2 passed the benchmark gate", text)
    assert "champion v2 serves" in text
    state = Path(env["LOOPLINE_STATE_DIR"])
    card = (state / "reports" / "gate" / "1" / "model_card.md").read_text()
    assert "mae" in card.lower() and "customer_tier" in card
    assert list((state / "data" / "curated" / "orders").glob("date=*/*.parquet"))
    assert list((state / "data" / "curated" / "deliveries").glob("date=*/*.parquet"))
    assert processes_using(state) == []
