"""Training sets: the curated transactions of an interval with their labels (as known at a time) and
their point-in-time features, written as parquet with a manifest (content hash, counts, feature service).

What the training DAG, ``loopline features build-training-set`` and the gate's holdout build; apart from
the point-in-time join itself (``features.historical``), which the skew check uses too.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.features.curated import curated_time_range, read_curated_transactions, read_labels
from loopline.features.feature_service import (
    ENTITY_COLUMNS,
    FEATURE_SERVICE,
    PASSTHROUGH_COLUMNS,
    FeatureRowsMismatch,
    feature_names,
    service,
)
from loopline.features.historical import historical_features
from loopline.platform.feast_store import feature_store
from loopline.storage.file_helpers import sha256_file

if TYPE_CHECKING:
    from loopline.config import Settings


@dataclass(frozen=True)
class TrainingSetManifest:
    path: str
    content_hash: str
    rows: int
    labelled_rows: int
    fraud_rows: int
    label_rate: float | None
    start: str
    end: str
    labels_as_of: str
    feature_service: str
    feature_service_version: str
    features: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_training_set(
    settings: Settings,
    out: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    labels_as_of: datetime | None = None,
    name: str = FEATURE_SERVICE,
) -> TrainingSetManifest:
    """Transactions in [start, end) with their labels (as known at ``labels_as_of``, default now) and
    point-in-time features → ``out`` (parquet) + ``out.manifest.json``. Every transaction yields one
    row; unlabelled ones keep an empty label so counts reconcile."""
    import pandas as pd

    span = curated_time_range(settings)
    if span is None:
        raise FeatureRowsMismatch("the curated store has no transactions yet: ingest some batches first")
    start, end = start or span[0], end or span[1]
    labels_as_of = labels_as_of or datetime.now(UTC)
    transactions = read_curated_transactions(settings.state.curated, pd.Timestamp(start), pd.Timestamp(end))
    stamps = transactions["event_timestamp"]
    transactions = transactions[(stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))]
    if transactions.empty:
        raise FeatureRowsMismatch(f"no curated transactions in [{start}, {end})")
    store = feature_store(settings)
    features = historical_features(store, transactions, name)  # one row per transaction, ids unique
    feature_cols = feature_names(store, name)
    # Align by id (no merges: on 1M string ids their one-to-one checks cost seconds, and both sides
    # are already known unique — labels by read_labels, transactions by historical_features).
    transactions = transactions.reset_index(drop=True)
    ids = transactions["transaction_id"]
    labels = read_labels(settings, labels_as_of).set_index("transaction_id")[["is_fraud", "label_timestamp"]]
    features = features.reset_index(drop=True)
    if not features["transaction_id"].equals(ids):  # Feast's engine returns rows in its own order
        features = features.set_index("transaction_id").reindex(ids).reset_index()
    frame = pd.concat(
        [
            transactions[
                ["transaction_id", "event_timestamp", *ENTITY_COLUMNS, "amount", *PASSTHROUGH_COLUMNS]
            ],
            labels.reindex(ids).reset_index(drop=True),
            features[feature_cols],
        ],
        axis=1,
    )
    if len(frame) != len(transactions):
        raise FeatureRowsMismatch(f"{len(transactions)} transactions became {len(frame)} training rows")
    frame["is_fraud"] = frame["is_fraud"].astype("Int64")
    frame = frame.sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out)
    digest = sha256_file(out)
    labelled_rows = int(frame["is_fraud"].notna().sum())
    fraud_rows = int(frame["is_fraud"].fillna(0).sum())
    svc = service(store, name)
    manifest = TrainingSetManifest(
        path=str(out),
        content_hash=digest,
        rows=len(frame),
        labelled_rows=labelled_rows,
        fraud_rows=fraud_rows,
        label_rate=round(fraud_rows / labelled_rows, 6) if labelled_rows else None,
        start=pd.Timestamp(start).isoformat(),
        end=pd.Timestamp(end).isoformat(),
        labels_as_of=labels_as_of.isoformat(),
        feature_service=svc.name,
        feature_service_version=svc.tags.get("version", ""),
        features=feature_cols,
        columns=list(frame.columns),
        created_at=datetime.now(UTC).isoformat(),
    )
    out.with_name(out.name + ".manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    return manifest
