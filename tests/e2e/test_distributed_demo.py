"""`loopline demo --profile distributed --exit`: the whole loop (v1 → drift → retrain → gate → canary → v2) on
Celery workers with no shared disk — Postgres, Redis, an S3 object store (moto's server) and MLflow on them.

Every task try runs in a fresh folder of its own inside its worker's private scratch dir, and a task that opens
a local path outside its folder is refused (`LOOPLINE_TASK_SCRATCH=per-task`): so this run fails if any task
reads a file another task wrote on local disk, whichever worker ran it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from local_servers import APT_LINE, postgres_bin
from scratch_stack import processes_using, scratch_env, scratch_project

pytestmark = pytest.mark.integration


def test_the_loop_closes_on_workers_that_share_no_disk():
    if postgres_bin() is None or shutil.which("redis-server") is None:
        pytest.skip(f"the distributed profile needs Postgres and Redis: {APT_LINE}")
    # Not pytest's tmp_path: its parents are private to this user, and Postgres may run as `nobody`.
    root = Path(tempfile.mkdtemp(prefix="loopline-distributed-demo-"))
    root.chmod(0o755)
    try:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "LOOPLINE_", "FEAST_", "AWS_"))
        }
        env.update(scratch_env(root, scratch_project(root)))
        out = subprocess.run(
            [str(Path(sys.executable).parent / "loopline"), "demo", "--profile", "distributed", "--exit"],
            env=env,
            capture_output=True,
            text=True,
            timeout=3000,
        )
        text = out.stdout
        assert out.returncode == 0, f"{text}\n{out.stderr}"
        assert "starting the local stack (distributed profile)" in text
        assert "platform_smoke" in text and "quarantined as it should be" in text
        # Ingest published into the object store and the features agree online (Redis) and offline (Postgres).
        assert re.search(r"ingest done: \d+ batches published into s3://loopline/data/curated", text)
        assert "training/serving skew: 0 mismatches" in text
        assert re.search(
            r"fraud_detector v1 passed the benchmark gate: quality ok\s+fairness ok\s+latency ok\s+infra ok",
            text,
        )
        assert "model card s3://loopline/reports/gate/1/model_card.md" in text
        assert "champion v1 serves" in text
        assert re.search(r"retrain requested \([^)]*drift[^)]*\); train_model starts", text)
        assert re.search(r"fraud_detector v2 passed the benchmark gate", text)
        assert "champion v2 serves" in text

        state = Path(env["LOOPLINE_STATE_DIR"])
        # Tasks ran on both workers, each try in a folder of its own, and shared nothing through a disk: no
        # curated partition, landed batch, holdout or report lies in any of them.
        workers = state / "distributed" / "workers"
        for worker in ("worker-1", "worker-2"):
            assert list((workers / worker / "tasks").glob("*/*/*")), f"{worker} ran no task"
        local = [
            p
            for p in workers.rglob("*")
            if p.is_file()
            and (
                "date=" in str(p) or p.suffix in (".csv",) or p.name in ("model_card.md", "gate_report.json")
            )
        ]
        assert local == [], f"shared files on a worker's disk: {local[:5]}"
        assert not (state / "data" / "curated").exists() or not any(
            (state / "data" / "curated").rglob("*.parquet")
        )
        assert processes_using(state) == []
    finally:
        shutil.rmtree(root, ignore_errors=True)
