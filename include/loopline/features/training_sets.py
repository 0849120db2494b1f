"""Training sets: the curated events of an interval with their labels (as known at a time) and their
point-in-time features, written as parquet with a manifest (content hash, counts, feature service). Which
columns: the use case's (``loopline.config.use_case``) and its feature definitions' (``features.definitions``).

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

from loopline.features.curated import curated_time_range, read_curated_event_frame, read_labels
from loopline.features.definitions import definitions_for
from loopline.features.feature_service import FeatureRowsMismatch, feature_names, service
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
    positive_rows: int  # a classifier's positive labels (0 for a regressor)
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
    name: str | None = None,
) -> TrainingSetManifest:
    """The use case's events in [start, end) with their labels (as known at ``labels_as_of``, default now)
    and point-in-time features (of its FeatureService, or ``name``) → ``out`` (parquet) +
    ``out.manifest.json``. Every event yields one row; unlabelled ones keep an empty label so counts
    reconcile. ``positive_rows``: a classifier's positive labels (0 for a regressor)."""
    import pandas as pd

    use_case, definitions = definitions_for(settings)
    name = name or definitions.service
    ids, time, label = use_case.id_column, use_case.time_column, use_case.label_column
    span = curated_time_range(settings)
    if span is None:
        raise FeatureRowsMismatch(
            f"the curated store has no {use_case.batch_names['events']} yet: ingest some batches first"
        )
    start, end = start or span[0], end or span[1]
    labels_as_of = labels_as_of or datetime.now(UTC)
    events = read_curated_event_frame(
        settings.state.curated, pd.Timestamp(start), pd.Timestamp(end), use_case=use_case
    )
    stamps = events[time]
    events = events[(stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))]
    if events.empty:
        raise FeatureRowsMismatch(f"no curated {use_case.batch_names['events']} in [{start}, {end})")
    store = feature_store(settings)
    features = historical_features(store, events, name)  # one row per event, ids unique
    feature_cols = feature_names(store, name)
    # Align by id (no merges: on 1M string ids their one-to-one checks cost seconds, and both sides
    # are already known unique — labels by read_labels, events by historical_features).
    events = events.reset_index(drop=True)
    event_ids = events[ids]
    labels = read_labels(settings, labels_as_of).set_index(ids)[[label, use_case.label_time_column]]
    features = features.reset_index(drop=True)
    if not features[ids].equals(event_ids):  # Feast's engine returns rows in its own order
        features = features.set_index(ids).reindex(event_ids).reset_index()
    frame = pd.concat(
        [
            events[definitions.event_columns(use_case)],
            labels.reindex(event_ids).reset_index(drop=True),
            features[feature_cols],
        ],
        axis=1,
    )
    if len(frame) != len(events):
        raise FeatureRowsMismatch(f"{len(events)} events became {len(frame)} training rows")
    classifier = use_case.task == "binary_classification"
    frame[label] = frame[label].astype("Int64" if classifier else "float64")
    frame = frame.sort_values([time, ids], kind="stable").reset_index(drop=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out)
    digest = sha256_file(out)
    labelled_rows = int(frame[label].notna().sum())
    positive_rows = int(frame[label].fillna(0).sum()) if classifier else 0
    svc = service(store, name)
    manifest = TrainingSetManifest(
        path=str(out),
        content_hash=digest,
        rows=len(frame),
        labelled_rows=labelled_rows,
        positive_rows=positive_rows,
        label_rate=round(positive_rows / labelled_rows, 6) if labelled_rows and classifier else None,
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
