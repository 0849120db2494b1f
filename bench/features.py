"""Benchmark: Loopline's feature store (Feast) at ~1M curated transactions.

Builds a scratch state dir with ~1M simulated transactions (and their labels) written straight into
the curated layout, then times, each against a baseline measured in the same run:

* ``materialize`` over the whole range (aggregates + ``feast apply`` + load into the online store);
* ``build_training_set`` vs the same point-in-time join done with pandas ``merge_asof`` per feature
  table (entity time = event time - 1 us, backward, 30-day tolerance = the views' TTL) on the offline
  parquet tables; the two must agree on a sample of rows;
* single-transaction online lookups, ``OnlineFeatures.lookup`` (the feature service, with the
  python-mode on-demand view) vs ``get_online_features`` of the plain feature-view features only.

Feast's duckdb offline store joins each entity row to every stored row of the same key within the TTL
and only then keeps the newest, so its time and memory grow with those candidate rows (printed), not
with the entity rows: ~223M candidates at 200k transactions (~21 GB peak RSS), ~2.0B at 1M (far more
than this 23 GB machine has; DuckDB would spill ~100+ GB). Above ``--max-join-rows`` the bench times
``build_training_set`` on the newest transactions that fit ``--slice-join-rows`` (a ``start`` bound;
full 30-day windows, so the same per-row cost as the full set) and both joins on that slice.

    .venv/bin/python bench/features.py [--rows N] [--lookups N] [--breakdown]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "FEAST_USAGE": "False"})
# Every scratch path lives under this dir; set before Loopline reads its settings anywhere.
STATE = Path(tempfile.mkdtemp(prefix="loopline-bench-features-"))
os.environ["LOOPLINE_STATE_DIR"] = str(STATE)

from loopline.config import Settings  # noqa: E402
from loopline.data.simulator import SimulationConfig, simulate  # noqa: E402
from loopline.features.aggregates import read_curated_transactions  # noqa: E402
from loopline.features.store import (  # noqa: E402
    ENTITY_COLUMNS,
    OnlineFeatures,
    build_training_set,
    curated_time_range,
    entity_rows,
    materialize,
)
from loopline.features.tables import TABLES  # noqa: E402

CUSTOMERS = 2_250  # ~6.7k transactions a day
TTL = pd.Timedelta(days=30)  # the feature views' ttl (feature_repo/features.py)
CHECKED = ("cust_tx_count_1h", "cust_tx_count_24h", "cust_amount_mean_30d", "cust_amount_std_30d",
           "merch_tx_count_24h", "dev_tx_count_30d", "dev_first_seen_epoch_s", "chan_tx_count_30d")


def write_curated(settings: Settings, rows: int) -> pd.DataFrame:
    """Simulate enough days for ``rows`` transactions, keep the first ``rows`` (by time), and write them
    and their labels into ``<state>/data/curated/{transactions,labels}/date=YYYY-MM-DD/sim.parquet``."""
    days = max(1, math.ceil(rows / (CUSTOMERS * 2.95)) + 1)
    sim = simulate(SimulationConfig(days=days, n_customers=CUSTOMERS, seed=5))
    tx = sim.transactions.iloc[:rows]
    labels = sim.labels[sim.labels["transaction_id"].isin(tx["transaction_id"])]
    curated = settings.state.curated
    for kind, frame, stamp in (("transactions", tx, "event_timestamp"), ("labels", labels, "label_timestamp")):
        for day, part in frame.groupby(frame[stamp].dt.strftime("%Y-%m-%d"), sort=True):
            folder = curated / kind / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            part.to_parquet(folder / "sim.parquet", index=False)
    return tx


def merge_asof_join(settings: Settings, transactions: pd.DataFrame) -> pd.DataFrame:
    """The point-in-time join of ``historical_features`` (without the on-demand view) in plain pandas."""
    entities = entity_rows(transactions)
    frame = entities.sort_values("event_timestamp", kind="stable")
    for table in TABLES:
        stored = read_table(settings, table)
        frame = pd.merge_asof(frame, stored, on="event_timestamp", by=list(table.keys), direction="backward",
                              tolerance=TTL, allow_exact_matches=True)
    return frame


def read_table(settings: Settings, table) -> pd.DataFrame:
    stored = pd.read_parquet(settings.state.feast_offline_dir / f"{table.name}.parquet")
    stored["event_timestamp"] = stored["event_timestamp"].astype("datetime64[us, UTC]")
    return stored.sort_values("event_timestamp", kind="stable")


def candidate_rows(settings: Settings, entities: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per entity row and view, the rows Feast's point-in-time join materialises before it keeps the
    newest: its duckdb (ibis) offline store inner-joins each entity row to *all* stored rows of the same
    key with ``entity_ts - ttl <= feature_ts <= entity_ts``, then ranks them with a window function."""
    counts = {}
    t_e = entities["event_timestamp"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    ttl_us = int(TTL / pd.Timedelta(microseconds=1))
    for table in TABLES:
        stored = read_table(settings, table)
        t_f = stored["event_timestamp"].astype("int64").to_numpy()
        keys = pd.concat([stored[list(table.keys)], entities[list(table.keys)]], ignore_index=True)
        codes = keys.groupby(list(table.keys), sort=False, dropna=False).ngroup().to_numpy().astype(np.int64)
        c_f, c_e = codes[: len(stored)], codes[len(stored):]
        stamps = np.unique(np.concatenate([t_f, t_e, t_e - ttl_us]))  # dense ranks keep the sums small
        span = np.int64(len(stamps) + 1)
        found = np.sort(c_f * span + np.searchsorted(stamps, t_f))
        hi = np.searchsorted(found, c_e * span + np.searchsorted(stamps, t_e), side="right")
        lo = np.searchsorted(found, c_e * span + np.searchsorted(stamps, t_e - ttl_us), side="left")
        counts[table.name] = hi - lo
    return counts


def feast_per_view(store, entities: pd.DataFrame) -> dict[str, float]:
    """Seconds of Feast's point-in-time join for each plain feature view alone."""
    seconds = {}
    for table in TABLES:
        view = store.get_feature_view(table.name)
        refs = [f"{table.name}:{f.name}" for f in view.features]
        seconds[table.name], _ = timed(
            lambda refs=refs: store.get_historical_features(entity_df=entities, features=refs).to_df())
    return seconds


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def agree(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Element-wise equality of two numeric columns, NaN/NA == NaN/NA."""
    x = pd.to_numeric(a, errors="coerce").astype("float64").to_numpy()
    y = pd.to_numeric(b, errors="coerce").astype("float64").to_numpy()
    return np.isclose(x, y, rtol=1e-9, atol=1e-9) | (np.isnan(x) & np.isnan(y))


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def bench_online(settings: Settings, transactions: pd.DataFrame, lookups: int, warmup: int = 50) -> None:
    online = OnlineFeatures(settings)
    store = online.store
    on_demand = {view.name for view in store.list_on_demand_feature_views()}
    refs = [f"{p.name_to_use()}:{f.name}" for p in online.service.feature_view_projections
            if p.name not in on_demand for f in p.features]
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
    plain = run(lambda tx: store.get_online_features(
        features=refs, entity_rows=[{k: tx[k] for k in ENTITY_COLUMNS}]).to_dict())
    (s50, s99), (p50, p99) = percentiles(service), percentiles(plain)
    print(f"online lookup, {len(service)} single transactions ({len(online.names)} features, "
          f"{len(refs)} of them plain)")
    print(f"  OnlineFeatures.lookup (service + python ODFV): p50 {s50:6.2f} ms  p99 {s99:6.2f} ms")
    print(f"  get_online_features (plain feature refs)     : p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    print(f"  ratio (lookup / plain): p50 {s50 / p50:.2f}x  p99 {s99 / p99:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=1_000)
    parser.add_argument("--sample", type=int, default=20_000, help="rows compared feast vs merge_asof")
    parser.add_argument("--breakdown", action="store_true", help="also time Feast's join per feature view")
    parser.add_argument("--max-join-rows", type=float, default=250e6,
                        help="above this many Feast join candidate rows, time a newest slice instead of all")
    parser.add_argument("--slice-join-rows", type=float, default=60e6, help="candidate rows of that slice")
    args = parser.parse_args()
    settings = Settings(state_dir=STATE)
    settings.state.ensure()
    previous_cwd = os.getcwd()
    os.chdir(STATE)  # DuckDB (Feast's offline store) spills into ./.tmp: keep that in the scratch dir
    try:
        write_s, tx = timed(lambda: write_curated(settings, args.rows))
        span = curated_time_range(settings)
        print(f"curated: {len(tx):,} transactions, {span[0]:%Y-%m-%d} .. {span[1]:%Y-%m-%d} "
              f"(simulated + written in {write_s:.1f} s) in {STATE}")

        mat_s, result = timed(lambda: materialize(settings, *span))
        print(f"materialize, whole range           : {mat_s:7.2f} s  offline rows {result.offline_rows}")

        # Feast's join cost (time and memory) grows with its candidate rows, not with the entity rows.
        curated = read_curated_transactions(settings.state.curated)
        entities = entity_rows(curated)
        fanout = candidate_rows(settings, entities)
        per_row = sum(fanout.values())
        total = int(per_row.sum())
        print("feast join candidate rows (entity x same-key rows within ttl): "
              + ", ".join(f"{name} {int(rows.sum()) / 1e6:,.1f}M" for name, rows in fanout.items())
              + f"; total {total / 1e6:,.1f}M for {len(entities):,} entity rows")
        start = None
        if total > args.max_join_rows:
            # Too big to run here: time the newest slice that fits (steady state: full 30-day windows).
            keep = np.cumsum(per_row[::-1])[::-1] <= args.slice_join_rows
            start = entities["event_timestamp"][keep].min() + pd.Timedelta(microseconds=1)  # = event time
            print(f"  over --max-join-rows {args.max_join_rows / 1e6:,.0f}M: timing build_training_set on the "
                  f"newest {int(keep.sum()):,} transactions (from {start:%Y-%m-%d %H:%M}), "
                  f"{int(per_row[keep].sum()) / 1e6:,.1f}M candidate rows")
            curated = curated[curated["event_timestamp"] >= start].reset_index(drop=True)
            slice_rows = int(per_row[keep].sum())

        out = STATE / "training" / "train.parquet"
        build_s, manifest = timed(lambda: build_training_set(settings, out, start=start))
        print(f"build_training_set                 : {build_s:7.2f} s  {manifest.rows / build_s:,.0f} rows/s "
              f"({manifest.rows:,} rows, {len(manifest.features)} features)")
        if start is not None:
            print(f"  estimate for all {len(entities):,} rows, linear in candidate rows: "
                  f"{build_s * total / slice_rows:,.0f} s (if it fitted in memory: it would not here)")
        asof_s, joined = timed(lambda: merge_asof_join(settings, curated))
        print(f"merge_asof join (4 tables, no ODFV) : {asof_s:7.2f} s  {len(joined) / asof_s:,.0f} rows/s "
              f"({len(joined):,} rows)")
        print(f"ratio (build_training_set / merge_asof): {build_s / asof_s:.2f}x")
        if start is not None:
            full_s, everything = timed(lambda: merge_asof_join(settings, read_curated_transactions(
                settings.state.curated)))
            print(f"merge_asof join, all rows           : {full_s:7.2f} s  {len(everything) / full_s:,.0f} rows/s "
                  f"({len(everything):,} rows); estimated ratio for all rows: "
                  f"{build_s * total / slice_rows / full_s:,.0f}x")
            del everything
        if args.breakdown:
            per_view = feast_per_view(OnlineFeatures(settings).store, entity_rows(curated))
            print("feast get_historical_features per view alone: "
                  + ", ".join(f"{name} {s:.1f} s" for name, s in per_view.items()))

        assert len(joined) == manifest.rows
        feast = pd.read_parquet(out, columns=["transaction_id", *CHECKED]).set_index("transaction_id")
        sample = joined.sample(n=min(args.sample, len(joined)), random_state=3).set_index("transaction_id")
        feast = feast.loc[sample.index]
        bad = {c: int((~agree(feast[c], sample[c])).sum()) for c in CHECKED}
        assert not any(bad.values()), f"feast and merge_asof disagree (rows per feature): {bad}"
        print(f"agreement: {len(sample):,} sampled rows x {len(CHECKED)} features identical "
              f"({int(sample['cust_tx_count_24h'].isna().sum())} with no customer history)")

        bench_online(settings, read_curated_transactions(settings.state.curated), args.lookups)
    finally:
        os.chdir(previous_cwd)
        shutil.rmtree(STATE, ignore_errors=True)


if __name__ == "__main__":
    main()
