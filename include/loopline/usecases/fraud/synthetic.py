"""Synthetic training sets in the layout of ``build_training_set`` (parquet + manifest), for tests and
benchmarks: a learnable fraud signal that lives in the model inputs, never in the fairness group columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.storage.file_helpers import sha256_file

# The numeric features the manifest lists (the feature service's, by name); ``amount`` comes from config.
FEATURES = ["customer_txn_count_24h", "amount_zscore", "new_device", "seconds_since_last_txn"]


def extra_feature_names(count: int) -> list[str]:
    """Names of the ``count`` noise features that widen a set to a realistic width."""
    return [f"noise_feature_{i:02d}" for i in range(count)]


def synthetic_training_set(
    n: int = 3000, seed: int = 0, labelled: bool = True, fraud: bool = True, extra_features: int = 0
) -> pd.DataFrame:
    """``n`` transactions over ten days with ids, group columns, labels and ``FEATURES``.

    ``extra_features`` adds that many standard-normal columns (no signal) so a benchmark can train at
    the feature service's real width (~30 numerics). The newest 200 rows stay unlabelled, as in a real
    set built before their labels arrived."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    stamps = start + pd.to_timedelta(np.sort(rng.uniform(0, 10 * 86400, n)), unit="s")
    channel = rng.choice(["contactless", "online", "chip", "atm"], n, p=[0.45, 0.32, 0.21, 0.02])
    category = rng.choice(["grocery", "restaurant", "digital_goods", "electronics", "fuel", "travel"], n)
    country = rng.choice(["DE", "FR", "NL", "US", "NG"], n, p=[0.85, 0.05, 0.04, 0.04, 0.02])
    amount = np.round(np.exp(rng.normal(3.3, 1.0, n)), 2)
    new_device = rng.random(n) < 0.05
    count_24h = rng.poisson(2, n)
    zscore = rng.normal(0, 1, n)
    logit = (
        -5.0
        + 1.6 * (channel == "online")
        + 1.5 * new_device
        + 1.2 * (country != "DE")
        + 0.6 * np.log1p(amount)
        - 1.0
        + 0.8 * zscore
        + 1.0 * np.isin(category, ["electronics", "travel"])
    )
    is_fraud = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    if not fraud:
        is_fraud[:] = 0
    zscore[rng.random(n) < 0.1] = np.nan  # missing features happen (first transaction of a customer)
    frame = pd.DataFrame(
        {
            "transaction_id": [f"tx{i:06d}" for i in range(n)],
            "event_timestamp": stamps.astype("datetime64[us, UTC]"),
            "customer_id": [f"c{v}" for v in rng.integers(0, 300, n)],
            "merchant_id": [f"m{v}" for v in rng.integers(0, 80, n)],
            "device_id": [f"d{v}" for v in rng.integers(0, 400, n)],
            "channel": channel,
            "amount": amount,
            "merchant_category": category,
            "merchant_country": country,
            "customer_age_band": rng.choice(["18-25", "26-40", "41-60", "60+"], n),
            "customer_region": rng.choice(["north", "south", "east", "west"], n),
            "is_fraud": pd.array(is_fraud, dtype="Int64"),
            "label_timestamp": (stamps + pd.Timedelta(days=3)).astype("datetime64[us, UTC]"),
            "customer_txn_count_24h": count_24h.astype("int64"),
            "amount_zscore": zscore,
            "new_device": new_device,
            "seconds_since_last_txn": rng.exponential(3600, n),
        }
    )
    for name in extra_feature_names(extra_features):
        frame[name] = rng.normal(0, 1, n)
    if not labelled:
        frame["is_fraud"] = pd.array([pd.NA] * n, dtype="Int64")
    else:
        frame.loc[frame.index[-200:], "is_fraud"] = pd.NA  # the newest rows are not labelled yet
    return frame


def write_training_set(frame: pd.DataFrame, out: Path, features: list[str] | None = None) -> Path:
    """Write ``frame`` as parquet at ``out`` plus ``<out>.manifest.json`` as ``build_training_set`` does.

    ``features`` (default: ``FEATURES`` and any noise columns in the frame) is what the trainer reads as
    the numeric inputs."""
    out = Path(out)
    if features is None:
        features = [*FEATURES, *[c for c in frame.columns if c.startswith("noise_feature_")]]
    frame.to_parquet(out, index=False)
    labelled = int(frame["is_fraud"].notna().sum())
    fraud = int(frame["is_fraud"].fillna(0).sum())
    manifest = {
        "path": str(out),
        "content_hash": sha256_file(out),
        "rows": len(frame),
        "labelled_rows": labelled,
        "positive_rows": fraud,
        "label_rate": fraud / labelled if labelled else None,
        "feature_service": "fraud_detection_v1",
        "feature_service_version": "1",
        "features": list(features),
        "columns": list(frame.columns),
    }
    out.with_name(out.name + ".manifest.json").write_text(json.dumps(manifest))
    return out
