from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "FEAST_USAGE": "False"})
# Every scratch path lives under this dir; set before Loopline reads its settings anywhere.
STATE = Path(tempfile.mkdtemp(prefix="loopline-bench-features-"))
os.environ["LOOPLINE_STATE_DIR"] = str(STATE)

from loopline.config import Settings  # noqa: E402
from loopline.config.use_case import load_use_case  # noqa: E402
from loopline.features.curated import curated_time_range, read_curated_event_frame  # noqa: E402
from loopline.features.feature_service import feature_names  # noqa: E402
from loopline.features.historical import entity_rows, historical_features  # noqa: E402
from loopline.features.materialize import materialize  # noqa: E402
from loopline.features.online import OnlineFeatures  # noqa: E402
from loopline.features.pit import file_table, service_plan  # noqa: E402
from loopline.features.training_sets import build_training_set  # noqa: E402
from loopline.platform.feast_store import feature_store  # noqa: E402
from loopline.usecases.fraud.features import ENTITY_COLUMNS, FEATURE_SERVICE  # noqa: E402
from loopline.usecases.fraud.simulator import SimulationConfig, simulate  # noqa: E402

CUSTOMERS = 2_250  # ~6.7k transactions a day
PAGE = os.sysconf("SC_PAGE_SIZE")


def write_curated(settings: Settings, rows: int) -> pd.DataFrame:
    """Simulate enough days for ``rows`` transactions, keep the first ``rows`` (by time), and write them
    and their labels into ``<state>/data/curated/{transactions,labels}/date=YYYY-MM-DD/sim.parquet``."""
    days = max(1, math.ceil(rows / (CUSTOMERS * 2.95)) + 1)
    sim = simulate(SimulationConfig(days=days, n_customers=CUSTOMERS, seed=5))
    tx = sim.transactions.iloc[:rows]
    labels = sim.labels[sim.labels["transaction_id"].isin(tx["transaction_id"])]
    curated = settings.state.curated
    for kind, frame, stamp in (
        ("transactions", tx, "event_timestamp"),
        ("labels", labels, "label_timestamp"),
    ):
        for day, part in frame.groupby(frame[stamp].dt.strftime("%Y-%m-%d"), sort=True):
            folder = curated / kind / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            part.to_parquet(folder / "sim.parquet", index=False)
    return tx


def candidate_rows(store, entities: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per entity row and view, the rows Feast's point-in-time join materialises before it keeps the
    newest: its duckdb (ibis) offline store inner-joins each entity row to *all* stored rows of the same
    key with ``entity_ts - ttl <= feature_ts <= entity_ts``, then ranks them with a window function.
    Views, keys, TTLs and tables come from the registry, as in the join itself."""
    counts = {}
    t_e = entities["event_timestamp"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    for view in service_plan(store, FEATURE_SERVICE).views:
        table = file_table(store, view)
        stored = pd.read_parquet(table.path, columns=[*view.keys, table.timestamp_field])
        t_f = stored[table.timestamp_field].astype("datetime64[us, UTC]").astype("int64").to_numpy()
        ttl_us = int(view.ttl / pd.Timedelta(microseconds=1)) if view.ttl else 10**18
        entity_keys = entities[list(view.keys.values())].set_axis(list(view.keys), axis=1)
        keys = pd.concat([stored[list(view.keys)], entity_keys], ignore_index=True)
        codes = keys.groupby(list(view.keys), sort=False, dropna=False).ngroup().to_numpy().astype(np.int64)
        c_f, c_e = codes[: len(stored)], codes[len(stored) :]
        stamps = np.unique(np.concatenate([t_f, t_e, t_e - ttl_us]))  # dense ranks keep the sums small
        span = np.int64(len(stamps) + 1)
        found = np.sort(c_f * span + np.searchsorted(stamps, t_f))
        hi = np.searchsorted(found, c_e * span + np.searchsorted(stamps, t_e), side="right")
        lo = np.searchsorted(found, c_e * span + np.searchsorted(stamps, t_e - ttl_us), side="left")
        counts[view.name] = hi - lo
    return counts


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def with_peak_rss(fn):
    """(seconds, result, peak RSS in bytes while ``fn`` ran), RSS sampled every 20 ms."""
    peak, done = [rss_bytes()], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        seconds, result = timed(fn)
    finally:
        done.set()
        sampler.join()
    return seconds, result, max(peak[0], rss_bytes())


def disagreements(ours: pd.DataFrame, feast: pd.DataFrame, names: list[str]) -> dict[str, int]:
    """Rows per feature where the two joins differ (NaN/NA equal NaN/NA; dtypes must match too)."""
    bad = {}
    for name in names:
        x, y = ours[name], feast[name]
        if x.dtype != y.dtype:
            bad[name] = len(x)
            continue
        a, b = x.to_numpy(dtype="float64", na_value=np.nan), y.to_numpy(dtype="float64", na_value=np.nan)
        bad[name] = int((~((a == b) | (np.isnan(a) & np.isnan(b)))).sum())
    return {name: n for name, n in bad.items() if n}


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def bench_online(settings: Settings, transactions: pd.DataFrame, lookups: int, warmup: int = 50) -> None:
    online = OnlineFeatures(settings)
    store = online.store
    on_demand = {view.name for view in store.list_on_demand_feature_views()}
    refs = [
        f"{p.name_to_use()}:{f.name}"
        for p in online.service.feature_view_projections
        if p.name not in on_demand
        for f in p.features
    ]
    picks = transactions.sample(n=min(lookups + warmup, len(transactions)), random_state=7, replace=False)
    records = picks[[*ENTITY_COLUMNS, "amount", "event_timestamp"]].to_dict("records")

    def run(fn) -> list[float]:
        samples = []
        for i, record in enumerate(records):
            started = time.perf_counter()
            fn(record)
            if i >= warmup:
                samples.append(time.perf_counter() - started)
        return samples

    service = run(lambda tx: online.lookup([tx]))
    plain = run(
        lambda tx: store.get_online_features(
            features=refs, entity_rows=[{k: tx[k] for k in ENTITY_COLUMNS}]
        ).to_dict()
    )
    (s50, s99), (p50, p99) = percentiles(service), percentiles(plain)
    print(
        f"online lookup, {len(service)} single transactions ({len(online.names)} features, "
        f"{len(refs)} of them plain)"
    )
    print(f"  OnlineFeatures.lookup (service + python ODFV): p50 {s50:6.2f} ms  p99 {s99:6.2f} ms")
    print(f"  get_online_features (plain feature refs)     : p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    print(f"  ratio (lookup / plain): p50 {s50 / p50:.2f}x  p99 {s99 / p99:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=1_000)
    parser.add_argument(
        "--max-join-rows",
        type=float,
        default=250e6,
        help="above this many Feast join candidate rows, run Feast on a newest slice only",
    )
    parser.add_argument("--slice-join-rows", type=float, default=30e6, help="candidate rows of that slice")
    args = parser.parse_args()
    settings = Settings(state_dir=STATE)
    settings.state.ensure()
    previous_cwd = os.getcwd()
    os.chdir(STATE)  # DuckDB (Feast's offline store) spills into ./.tmp: keep that in the scratch dir
    try:
        write_s, tx = timed(lambda: write_curated(settings, args.rows))
        span = curated_time_range(settings)
        print(
            f"curated: {len(tx):,} transactions, {span[0]:%Y-%m-%d} .. {span[1]:%Y-%m-%d} "
            f"(simulated + written in {write_s:.1f} s) in {STATE}"
        )
        del tx

        mat_s, result = timed(lambda: materialize(settings, *span))
        print(f"materialize, whole range           : {mat_s:7.2f} s  offline rows {result.offline_rows}")

        out = STATE / "training" / "train.parquet"
        base = rss_bytes()
        build_s, manifest, peak = with_peak_rss(lambda: build_training_set(settings, out))
        print(
            f"build_training_set, all rows       : {build_s:7.2f} s  {manifest.rows / build_s:,.0f} rows/s "
            f"({manifest.rows:,} rows, {len(manifest.features)} features); peak RSS {peak / 2**30:.2f} GiB "
            f"({(peak - base) / 2**30:+.2f} GiB over the {base / 2**30:.2f} GiB before)"
        )

        # Feast's join cost (time and memory) grows with its candidate rows, not with the entity rows.
        store = feature_store(settings)
        curated = read_curated_event_frame(settings.state.curated, use_case=load_use_case(settings.use_case))
        fanout = candidate_rows(store, entity_rows(curated))
        per_row = sum(fanout.values())
        total = int(per_row.sum())
        print(
            "feast join candidate rows (entity x same-key rows within ttl): "
            + ", ".join(f"{name} {int(rows.sum()) / 1e6:,.1f}M" for name, rows in fanout.items())
            + f"; total {total / 1e6:,.1f}M for {len(curated):,} entity rows"
        )
        rows = curated
        if total > args.max_join_rows:
            keep = np.cumsum(per_row[::-1])[::-1] <= args.slice_join_rows
            rows = curated[keep].reset_index(drop=True)
            print(
                f"  over --max-join-rows {args.max_join_rows / 1e6:,.0f}M: comparing on the newest "
                f"{len(rows):,} transactions ({int(per_row[keep].sum()) / 1e6:,.1f}M candidate rows)"
            )
        del curated
        feast_s, feast, feast_peak = with_peak_rss(lambda: historical_features(store, rows, engine="feast"))
        ours_s, ours, ours_peak = with_peak_rss(lambda: historical_features(store, rows, engine="pandas"))
        print(
            f"same rows, feast get_historical_features: {feast_s:7.2f} s (peak RSS {feast_peak / 2**30:.2f} GiB); "
            f"merge_asof + ODFV: {ours_s:7.2f} s (peak RSS {ours_peak / 2**30:.2f} GiB); "
            f"ratio {feast_s / ours_s:.1f}x"
        )
        if len(rows) < manifest.rows:
            print(
                f"  feast estimate for all {manifest.rows:,} rows, linear in candidate rows: "
                f"{feast_s * total / per_row[keep].sum():,.0f} s (if it fitted in memory: it does not here)"
            )
        names = feature_names(store)
        feast = feast.set_index("transaction_id").loc[ours["transaction_id"]].reset_index()
        bad = disagreements(ours, feast, names)
        assert not bad, f"feast and merge_asof disagree (rows per feature): {bad}"
        print(
            f"agreement: {len(ours):,} rows x {len(names)} features identical, dtypes too "
            f"({int(ours['cust_tx_count_24h'].isna().sum()):,} without customer history, "
            f"{int(ours['merch_tx_count_7d'].isna().sum()):,} with merchant state past its TTL or none)"
        )
        del feast, ours

        bench_online(
            settings,
            read_curated_event_frame(settings.state.curated, use_case=load_use_case(settings.use_case)),
            args.lookups,
        )
        print(
            f"process peak RSS (all stages): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
        )
    finally:
        os.chdir(previous_cwd)
        shutil.rmtree(STATE, ignore_errors=True)


if __name__ == "__main__":
    main()
