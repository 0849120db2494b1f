"""Drift check of a 1M-row window: Loopline's fast path vs Evidently's default DataDriftPreset, same run.

    python bench/drift.py                 # 1,000,000 rows (Evidently takes ~1 min and ~2.4 GB here)
    python bench/drift.py --quick         # 100,000 rows
    python bench/drift.py --rows 300000

Each side runs in its own process on the same parquet files (so peak RSS is its own): prints wall time,
peak RSS, the ratio, and whether the per-column verdicts agree. The window: 4 categorical + 24 numeric
columns like the fraud model's inputs, a third of them drifted. Evidently's default preset picks normed
Wasserstein (numeric, > 5 values) or Jensen-Shannon (categorical, few-valued numeric) at 0.1 for > 1000
reference rows; the fast path gets the same methods pinned, as drift.yaml pins them.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES = {
    "channel": ["chip", "contactless", "online", "atm"],
    "merchant_category": [
        "grocery",
        "restaurant",
        "fuel",
        "travel",
        "electronics",
        "fashion",
        "digital_goods",
    ],
    "merchant_country": ["DE", "FR", "NL", "US", "NG", "GB"],
    "region": ["n", "s", "e", "w"],
}
# Evidently reports a resolved default method by its display name.
DISPLAY_NAMES = {"Wasserstein distance (normed)": "wasserstein", "Jensen-Shannon distance": "jensenshannon"}
FLAGS = ["is_new_device", "is_new_channel", "has_customer_history"]


def make(rows: int, seed: int, drift: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for i, (name, values) in enumerate(CATEGORIES.items()):
        p = np.linspace(2, 1, len(values))
        if drift and i % 2 == 0:
            p = p[::-1]
        data[name] = pd.Categorical(rng.choice(values, rows, p=p / p.sum()), categories=values)
    for i in range(18):
        shift = 0.25 if drift and i % 3 == 0 else 0.0
        data[f"num_{i:02d}"] = rng.normal(shift, 1 + i / 10, rows)
    data["amount"] = np.round(np.exp(rng.normal(3.3 + (0.4 if drift else 0), 1, rows)), 2)
    data["count_24h"] = rng.poisson(3, rows).astype("float64")
    data["hour_of_day"] = rng.integers(0, 24, rows).astype("float64")
    for name in FLAGS:
        data[name] = (rng.random(rows) < (0.12 if drift and name == FLAGS[0] else 0.05)).astype("float64")
    return pd.DataFrame(data)


def methods(frame: pd.DataFrame) -> dict[str, str]:
    """What Evidently's default resolves to for > 1000 reference rows (checked against its output below)."""
    return {c: "jensenshannon" if c in CATEGORIES or c in FLAGS else "wasserstein" for c in frame.columns}


def worker(kind: str, ref_path: str, cur_path: str) -> None:
    reference, current = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
    started = time.perf_counter()
    if kind == "fast":
        from loopline.config.drift_policy import MethodSpec
        from loopline.monitoring.fast_drift import ColumnPlan, compare

        plan = {
            c: ColumnPlan(MethodSpec(method=m, threshold=0.1), c in CATEGORIES)
            for c, m in methods(reference).items()
        }
        verdicts = {r.column: [r.method, r.score, r.drifted] for r in compare(reference, current, plan)}
    else:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        definition = DataDefinition(
            categorical_columns=list(CATEGORIES),
            numerical_columns=[c for c in reference.columns if c not in CATEGORIES],
        )
        snapshot = Report([DataDriftPreset()]).run(
            current_data=Dataset.from_pandas(current, data_definition=definition),
            reference_data=Dataset.from_pandas(reference, data_definition=definition),
        )
        verdicts = {}
        for metric in snapshot.dict()["metrics"]:
            cfg = metric["config"]
            if cfg.get("type", "").endswith("ValueDrift"):
                verdicts[cfg["column"]] = [
                    DISPLAY_NAMES.get(cfg["method"], cfg["method"]),
                    float(metric["value"]),
                    float(metric["value"]) >= cfg["threshold"],
                ]
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "verdicts": verdicts}))


def run(kind: str, ref: Path, cur: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, str(ref), str(cur)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="100k rows")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "REF", "CUR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    rows = 100_000 if args.quick else args.rows
    with tempfile.TemporaryDirectory() as tmp:
        ref, cur = Path(tmp) / "ref.parquet", Path(tmp) / "cur.parquet"
        make(args.reference_rows, 0, drift=False).to_parquet(ref)
        make(rows, 1, drift=True).to_parquet(cur)
        fast, evidently = run("fast", ref, cur), run("evidently", ref, cur)
    agree = [c for c in fast["verdicts"] if fast["verdicts"][c][2] == evidently["verdicts"][c][2]]
    other_method = {
        c: (fast["verdicts"][c][0], evidently["verdicts"][c][0])
        for c in fast["verdicts"]
        if fast["verdicts"][c][0] != evidently["verdicts"][c][0]
    }
    same_method = not other_method
    worst = max(abs(fast["verdicts"][c][1] - evidently["verdicts"][c][1]) for c in fast["verdicts"])
    drifted = sum(v[2] for v in evidently["verdicts"].values())
    print(
        f"window {rows:,} rows x {len(fast['verdicts'])} columns vs reference {args.reference_rows:,} rows "
        f"({drifted} columns drifted per Evidently)"
    )
    print(f"  fast path            {fast['seconds']:7.2f} s   peak RSS {fast['peak_rss_mb']:7.0f} MB")
    print(
        f"  Evidently default    {evidently['seconds']:7.2f} s   peak RSS {evidently['peak_rss_mb']:7.0f} MB"
    )
    print(
        f"  ratio                {evidently['seconds'] / fast['seconds']:7.1f}x faster, "
        f"{evidently['peak_rss_mb'] / fast['peak_rss_mb']:.1f}x less memory"
    )
    print(
        f"  verdicts agree       {len(agree)}/{len(fast['verdicts'])} columns; same methods: {same_method}; "
        f"max |score diff| {worst:.2e}" + (f"; methods differ: {other_method}" if other_method else "")
    )
    return 0 if len(agree) == len(fast["verdicts"]) and same_method else 1


if __name__ == "__main__":
    raise SystemExit(main())
