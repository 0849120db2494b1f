"""Benchmark: Loopline's prediction service vs ``mlflow models serve`` — same model, machine and run.

Builds a small real world in a temporary state dir (simulated transactions, Feast online store, a fraud
model trained for a few epochs and registered in a SQLite MLflow), then starts, one after the other:

* ``mlflow models serve -m models:/fraud_detector/1 --env-manager local`` (one worker, its default): it
  gets each request's *precomputed* feature row (``dataframe_records``), so it does less work per request;
* ``python -m loopline.serving --model-uri models:/fraud_detector/1``: it gets the raw transaction and does
  the online feature lookup (Feast), scores, and commits the prediction log before answering.

Both get single-row requests from the same asyncio/aiohttp client (keep-alive, ``c`` concurrent request
loops) at concurrency 1, 8 and 32, after a warm-up; req/s counts successful answers over the timed window,
latencies are client-side. The last line is ``RESULT ratio_c32=<loopline/mlflow req/s> p99_ms_c32=<ms>``.

Every Loopline request is a new transaction (its own id, 1 ms after the previous one, customers in turn), so
with fresh features on (the shipped serving config) each one updates its entities' aggregates.
``--online-store redis`` runs the same with Feast's Redis online store (a throwaway ``redis-server`` on
127.0.0.1, no persistence) instead of SQLite: the production store. ``--prediction-log postgres`` commits the
prediction log to a throwaway Postgres on 127.0.0.1 (fsync on) instead of SQLite: with both, the
distributed profile's and production's serving path.

    .venv/bin/python bench/serving.py [--duration S] [--quick] [--concurrency 1 8 32] [--online-store redis]
                                      [--prediction-log postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

REPO = Path(__file__).resolve().parents[1]
QUICK_TRAINING = ["epochs=3", "device=cpu", "early_stopping.patience=2"]


def build_world(root: Path) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """Settings of a fresh state dir with a served model; (settings, transactions, their feature rows)."""
    import math

    from loopline.config import Settings
    from loopline.data.ingest import publish
    from loopline.features.curated import curated_time_range
    from loopline.features.materialize import materialize
    from loopline.features.online import OnlineFeatures
    from loopline.features.training_sets import build_training_set
    from loopline.features.watermark import materialized_until
    from loopline.training.config import load_config
    from loopline.training.train import train
    from loopline.usecases.fraud.simulator import SimulationConfig, simulate

    settings = Settings(state_dir=root / "state", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    settings.state.ensure()
    sim = simulate(SimulationConfig(days=10, n_customers=300, seed=3))
    publish(settings, sim.transactions, "transactions", "bench")
    publish(settings, sim.labels, "labels", "bench")
    materialize(settings, *curated_time_range(settings))
    build_training_set(settings, root / "train.parquet")
    train(
        root / "train.parquet",
        load_config(
            REPO / "include" / "loopline" / "usecases" / "fraud" / "policies" / "training.yaml",
            QUICK_TRAINING,
        ),
        tracking_uri=settings.mlflow_uri,
    )
    start = materialized_until(settings) + timedelta(minutes=1)
    latest = sim.transactions.sort_values("event_timestamp").drop_duplicates("customer_id", keep="last")
    keys = (
        "customer_id",
        "card_id",
        "merchant_id",
        "device_id",
        "channel",
        "merchant_category",
        "merchant_country",
    )
    transactions = [
        {
            **{k: str(r[k]) for k in keys},
            "amount": float(r["amount"]),
            "event_timestamp": (start + timedelta(milliseconds=i)).isoformat(),
        }
        for i, r in enumerate(latest.to_dict("records"))
    ]
    looked_up = OnlineFeatures(settings).lookup(transactions)
    feature_rows = [
        {
            **{k: tx[k] for k in ("channel", "merchant_category", "merchant_country", "amount")},
            **{
                k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v))
                for k, v in feats.items()
            },
        }
        for tx, feats in zip(transactions, looked_up, strict=True)
    ]
    return settings, transactions, feature_rows


def serving_config(root: Path, fresh: bool) -> Path:
    """The shipped serving config with ``fresh_features.enabled`` set."""
    import yaml

    config = yaml.safe_load((REPO / "include" / "config" / "serving.yaml").read_text())
    config.setdefault("fresh_features", {})["enabled"] = fresh
    path = root / "serving.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def new_transactions(transactions: list[dict[str, Any]]) -> Any:
    """Each call a new transaction (own id, 1 ms after the previous one) of the next customer in turn: with
    fresh features on, every request is an event that updates its customer's, merchant's and device's
    aggregates (a repeated id would be counted once and cost nothing)."""
    counter = itertools.count()
    start = datetime.fromisoformat(transactions[0]["event_timestamp"])

    def next_body() -> bytes:
        i = next(counter)
        tx = {
            **transactions[i % len(transactions)],
            "transaction_id": f"bench_{i}",
            "event_timestamp": (start + timedelta(milliseconds=i)).isoformat(),
        }
        return json.dumps({"transactions": [tx]}).encode()

    return next_body


REDIS_FEATURE_STORE = """project: loopline
provider: local
registry:
  registry_type: file
  path: ${{LOOPLINE_FEAST_REGISTRY}}
  cache_ttl_seconds: 60
online_store:
  type: redis
  connection_string: "127.0.0.1:{port}"
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""


def start_redis(root: Path, port: int) -> tuple[subprocess.Popen, Path]:
    """A throwaway redis-server on 127.0.0.1 (no persistence) and a feature_store.yaml using it online."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install -y redis-server")
    log = (root / "redis.log").open("w")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import redis

    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis(host="127.0.0.1", port=port).ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start: {(root / 'redis.log').read_text()[-1000:]}"
                ) from None
            time.sleep(0.1)
    yaml_path = root / "feature_store.redis.yaml"
    yaml_path.write_text(REDIS_FEATURE_STORE.format(port=port))
    return proc, yaml_path


def start_postgres(port: int) -> tuple[subprocess.Popen, Path, str]:
    """A throwaway Postgres (Debian's server binaries) on 127.0.0.1 for the prediction log, with the
    server's default durability (fsync on), as the distributed profile and production run it. Under root it
    runs as ``nobody`` (Postgres refuses root). Returns the server, its folder and the log URL."""
    import glob
    import pwd

    folders = [
        Path(f)
        for f in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
        if (Path(f) / "initdb").exists()
    ]
    if not folders:
        raise SystemExit("Postgres server binaries not found: apt-get install -y postgresql")
    binaries = folders[0]
    # Its own folder, not the (private) bench root: the server user must enter it.
    folder = Path(tempfile.mkdtemp(prefix="loopline-bench-pg-"))
    folder.chmod(0o755)
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:
        account = pwd.getpwnam("nobody")
        os.chown(folder, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    data = folder / "data"
    subprocess.run(
        [str(binaries / "initdb"), "-D", str(data), "-U", "loopline", "--auth=trust", "-E", "UTF8"]
        + ["--no-instructions"],
        check=True,
        capture_output=True,
        cwd=folder,
        **as_user,
    )
    log = (folder / "postgres.log").open("w")
    proc = subprocess.Popen(
        [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1"]
        + ["-c", "unix_socket_directories="],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=folder,
        **as_user,
    )
    url = f"postgresql://loopline@127.0.0.1:{port}/postgres"
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return proc, folder, url
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not start: {(folder / 'postgres.log').read_text()[-1000:]}"
                ) from None
            time.sleep(0.2)


def start_server(cmd: list[str], env: dict[str, str], ready_url: str, log_path: Path) -> subprocess.Popen:
    import httpx

    log = log_path.open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_server(proc)
    raise TimeoutError(f"{ready_url} not ready within 180 s; see {log_path}")


def stop_server(proc: subprocess.Popen) -> None:
    """The server and its children (mlflow starts uvicorn under it): the whole session we started."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


async def load(
    url: str, next_body: Any, concurrency: int, duration: float, warmup: float
) -> dict[str, float]:
    """``concurrency`` request loops for ``warmup + duration`` s; stats over the timed window.
    ``next_body()`` gives each request's body."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    counter = 0
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    t_end = t_measure + duration
    from loopline.serving.config import client_headers

    headers = {"Content-Type": "application/json", **client_headers()}

    async def loop(session: aiohttp.ClientSession) -> None:
        nonlocal errors, counter
        while (now := time.perf_counter()) < t_end:
            body = next_body()
            counter += 1
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            done = time.perf_counter()
            if now >= t_measure:
                if ok:
                    latencies.append(done - now)
                else:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(loop(session) for _ in range(concurrency)))
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return {
        "rps": len(latencies) / duration,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
        "n": len(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="timed seconds per concurrency level")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--quick", action="store_true", help="3 s per level, 1 s warm-up")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state dir")
    parser.add_argument("--only", choices=["loopline", "mlflow"], help="run one contender (no RESULT line)")
    parser.add_argument(
        "--fresh-features",
        choices=["on", "off"],
        default="on",
        help="serving's fresh_features.enabled (default on, as shipped)",
    )
    parser.add_argument(
        "--online-store",
        choices=["sqlite", "redis"],
        default="sqlite",
        help="Feast online store of the Loopline service (default: sqlite, the embedded one)",
    )
    parser.add_argument(
        "--prediction-log",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="where the Loopline service commits its prediction log (default: sqlite, the embedded one; "
        "postgres: a throwaway local server, as in the distributed profile and production)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    from loopline.platform.processes import free_port

    root = Path(tempfile.mkdtemp(prefix="loopline-bench-serving-"))
    redis_proc = None
    if args.online_store == "redis":
        redis_proc, yaml_path = start_redis(root, free_port())
        os.environ["FEAST_FS_YAML_FILE_PATH"] = str(yaml_path)  # the world and the server use it
    postgres = None
    if args.prediction_log == "postgres":
        postgres = start_postgres(free_port())
        os.environ["LOOPLINE_PREDICTION_LOG_URL"] = postgres[2]  # the settings the server gets read it
    print(
        f"building the world in {root} (online store: {args.online_store}, prediction log: "
        f"{args.prediction_log}) ...",
        flush=True,
    )
    t0 = time.monotonic()
    settings, transactions, feature_rows = build_world(root)
    print(f"world ready in {time.monotonic() - t0:.1f} s: {len(transactions)} customers", flush=True)
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        **settings.env(),
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    model_uri = "models:/fraud_detector/1"
    results: dict[str, dict[int, dict[str, float]]] = {}
    contenders = {
        "mlflow": (
            lambda port: [
                str(Path(bin_dir) / "mlflow"),
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            "/ping",
            "/invocations",
            [json.dumps({"dataframe_records": [row]}).encode() for row in feature_rows],
        ),
        "loopline": (
            lambda port: [
                sys.executable,
                "-m",
                "loopline.serving",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--model-uri",
                model_uri,
                "--log-level",
                "warning",
                "--config",
                str(serving_config(root, args.fresh_features == "on")),
            ],
            "/readyz",
            "/v1/predict",
            new_transactions(transactions),
        ),
    }
    try:
        for name, (command, ready, path, bodies) in contenders.items():
            if args.only and name != args.only:
                continue
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            started = time.monotonic()
            proc = start_server(command(port), env, base + ready, root / f"{name}.log")
            print(f"{name}: ready in {time.monotonic() - started:.1f} s", flush=True)
            try:
                results[name] = {}
                next_body = bodies if callable(bodies) else itertools.cycle(bodies).__next__
                for c in args.concurrency:
                    stats = asyncio.run(load(base + path, next_body, c, args.duration, args.warmup))
                    results[name][c] = stats
                    print(
                        f"  {name:8s} c={c:<3d} {stats['rps']:8.1f} req/s  p50 {stats['p50_ms']:7.2f} ms  "
                        f"p99 {stats['p99_ms']:7.2f} ms  errors {stats['errors']}",
                        flush=True,
                    )
            finally:
                stop_server(proc)
    finally:
        if redis_proc is not None:
            stop_server(redis_proc)
        if postgres is not None:
            stop_server(postgres[0])
            shutil.rmtree(postgres[1], ignore_errors=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.only:
        return 0
    print("\nconcurrency  loopline req/s  mlflow req/s  ratio  loopline p50/p99 ms  mlflow p50/p99 ms")
    for c in args.concurrency:
        lo, ml = results["loopline"][c], results["mlflow"][c]
        ratio = lo["rps"] / ml["rps"] if ml["rps"] else float("inf")
        print(
            f"{c:11d}  {lo['rps']:14.1f}  {ml['rps']:12.1f}  {ratio:5.1f}  {lo['p50_ms']:7.2f}/{lo['p99_ms']:<9.2f}  "
            f"{ml['p50_ms']:7.2f}/{ml['p99_ms']:.2f}"
        )
    top = max(args.concurrency)
    lo, ml = results["loopline"][top], results["mlflow"][top]
    ratio = lo["rps"] / ml["rps"] if ml["rps"] else float("inf")
    print(f"RESULT ratio_c{top}={ratio:.2f} p99_ms_c{top}={lo['p99_ms']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
