"""What the canary reads: per-variant windows of the prediction log, error counters from the service's
``/metrics``, and the labels that have arrived.

Errors, and why from ``/metrics``: the prediction log holds only answered predictions, so a failure
leaves no row there. The service counts failed transactions per variant and version
(``loopline_prediction_errors_total``); the canary snapshots that counter when a step starts and
takes the difference at analysis (a counter that went down means the process restarted: the new value
is the count since then). One process answers locally; behind several replicas point ``metrics_url`` at
each replica or at a Prometheus federation endpoint that sums them. Unreadable counters block promotion.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopline.config import Settings

ERRORS_METRIC = "loopline_prediction_errors"
Key = tuple[str, str]  # (variant, version)


def _connect_ro(path: Path) -> sqlite3.Connection | None:
    if not Path(path).exists():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def logged_counts(log_path: Path, since: float, until: float | None = None) -> dict[Key, int]:
    """Answered predictions per (variant, version) in [since, until) — cheap enough to poll while baking."""
    conn = _connect_ro(log_path)
    if conn is None:
        return {}
    try:
        sql = "SELECT variant, model_version, COUNT(*) FROM predictions WHERE ts >= ?"
        params: list[float] = [since]
        if until is not None:
            sql += " AND ts < ?"
            params.append(until)
        rows = conn.execute(sql + " GROUP BY variant, model_version", params).fetchall()
    except sqlite3.OperationalError:  # the service has not created its table yet
        return {}
    finally:
        conn.close()
    return {(str(v), str(m)): int(n) for v, m, n in rows}


def read_predictions(log_path: Path, since: float, until: float, variant: str, version: str) -> Any:
    """The window's rows of one variant and version (only the columns the analysis needs), as a DataFrame."""
    import pandas as pd

    columns = ["transaction_id", "customer_id", "score", "decision", "latency_ms"]
    conn = _connect_ro(log_path)
    if conn is None:
        return pd.DataFrame({c: [] for c in columns})
    try:
        return pd.read_sql_query(
            f"SELECT {', '.join(columns)} FROM predictions WHERE ts >= ? AND ts < ? AND variant = ? "
            "AND model_version = ? ORDER BY ts, id", conn, params=[since, until, variant, str(version)])
    finally:
        conn.close()


def parse_errors(text: str) -> dict[Key, float]:
    """``loopline_prediction_errors_total`` by (variant, version) from Prometheus exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != ERRORS_METRIC:
            continue
        for sample in family.samples:
            if sample.name == f"{ERRORS_METRIC}_total":
                key = (sample.labels.get("variant", ""), sample.labels.get("version", ""))
                out[key] = out.get(key, 0.0) + sample.value
    return out


def scrape_errors(metrics_url: str, timeout: float = 5.0) -> dict[Key, float]:
    """The service's error counters now; raises ``ConnectionError`` saying which URL failed."""
    import httpx

    try:
        response = httpx.get(metrics_url, timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ConnectionError(f"cannot read the prediction service's metrics at {metrics_url}: {exc}") from exc
    return parse_errors(response.text)


def error_delta(before: dict[Key, float], after: dict[Key, float], key: Key) -> int:
    """Errors of ``key`` between two scrapes; a counter that went down was reset (restart): count from 0."""
    start, end = before.get(key, 0.0), after.get(key, 0.0)
    return int(end - start if end >= start else end)


def encode_counters(counters: dict[Key, float]) -> dict[str, float]:
    """JSON-safe (XCom, trigger kwargs): ``variant|version`` keys."""
    return {f"{v}|{m}": n for (v, m), n in counters.items()}


def decode_counters(data: dict[str, float] | None) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for key, value in (data or {}).items():
        variant, _, version = key.partition("|")
        out[(variant, version)] = float(value)
    return out


def arrived_labels(settings: Settings, transaction_ids: Iterable[str]) -> dict[str, int]:
    """Labels known now (curated store, label delay honoured) for these transactions: id → 0/1."""
    from loopline.features.store import read_labels

    wanted = set(transaction_ids)
    if not wanted:
        return {}
    labels = read_labels(settings, datetime.now(UTC))
    labels = labels[labels["transaction_id"].isin(wanted)]
    return {str(t): int(y) for t, y in zip(labels["transaction_id"], labels["is_fraud"], strict=True)}
