"""Reads of the curated store itself, for the feature modules: its time span, its events in an interval
(and each entity's first event before a time, for the streaming tables), and the labels known at a time.

Materialisation, training sets and fresh features need the span; the aggregates' refresh, fresh features,
training sets, the skew check and the gate's holdout the events; training sets, monitoring, the canary's
label windows and the gate's holdout the labels. Which columns and folders: the use case's
(``loopline.config.use_case``). None of it reads a feature store, so it is apart from the modules that do
(fresh features read the span without importing the materialiser).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from loopline.config.use_case import UseCase, load_use_case
from loopline.data.ingest import visible_partition_files
from loopline.features.aggregates import US_PER_S, utc_timestamp
from loopline.features.feature_service import ONE_MICROSECOND, FeatureRowsMismatch
from loopline.features.frames import KEY_DTYPE, TIMESTAMP, epoch_us
from loopline.storage.files import parquet_dataset, read_parquet

if TYPE_CHECKING:
    from loopline.config import Settings


def curated_time_range(settings: Settings) -> tuple[datetime, datetime] | None:
    """[first event, last event + 1 µs) over the use case's curated events, or None when there are none."""
    use_case = load_use_case(settings.use_case)
    files = visible_partition_files(settings.state.curated / use_case.batch_names["events"])
    if not files:
        return None
    table = parquet_dataset(files).to_table(columns=[use_case.time_column])
    column = table.column(0)
    import pyarrow.compute as pc

    low, high = pc.min(column).as_py(), pc.max(column).as_py()
    return low.astimezone(UTC), high.astimezone(UTC) + ONE_MICROSECOND


def read_labels(settings: Settings, as_of: datetime) -> pd.DataFrame:
    """Curated labels known at ``as_of`` (label delay honoured: later labels do not exist yet): the use
    case's id, label and label-time columns (a classifier's label as nullable ``Int64``)."""
    use_case = load_use_case(settings.use_case)
    files = visible_partition_files(settings.state.curated / use_case.batch_names["labels"])
    if not files:
        dtypes = dict(use_case.label_columns)
        if use_case.task == "binary_classification":
            dtypes[use_case.label_column] = "Int64"
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in dtypes.items()})
    labels: pd.DataFrame = pd.concat([read_parquet(f) for f in files], ignore_index=True)
    labels = labels[labels[use_case.label_time_column] <= pd.Timestamp(as_of)]
    if labels[use_case.id_column].duplicated().any():
        raise FeatureRowsMismatch(f"an event has more than one label in the curated store ({use_case.name})")
    return labels


def _partitions(
    curated_dir: Path, folder: str, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> list[Path]:
    """Published parquet files of the ``date=YYYY-MM-DD`` partitions whose day overlaps ``[start, end)``."""
    root = (Path(curated_dir) if isinstance(curated_dir, str) else curated_dir) / folder  # or object storage
    if not root.is_dir():
        return []
    days = []
    for part in sorted(root.glob("date=*"), key=str):
        try:
            day = pd.Timestamp(part.name.removeprefix("date="), tz="UTC")
        except ValueError:
            continue
        if start is not None and day + pd.Timedelta(days=1) <= start:
            continue
        if end is not None and day >= end:
            continue
        days.append(part.name.removeprefix("date="))
    return visible_partition_files(root, days)


def read_curated_event_frame(
    curated_dir: Path,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    *,
    columns: list[str] | None = None,
    use_case: UseCase,
) -> pd.DataFrame:
    """Curated events of ``use_case`` (the caller's settings' use case: never a process-wide default) with ``start <= time < end`` (open where
    None), its time column being its ``time_column``.

    Reads only ``<curated_dir>/<events folder>/date=YYYY-MM-DD/*.parquet`` partitions whose day overlaps
    ``[start, end)`` (pruned by folder name), then keeps the rows inside it. Returns the contract's
    columns (or ``columns`` of them, in contract order) with its dtypes, sorted by time.
    """
    case = use_case
    time_column = case.time_column
    start = None if start is None else utc_timestamp(start)
    end = None if end is None else utc_timestamp(end)
    wanted = {
        c: d for c, d in case.event_columns.items() if columns is None or c in columns or c == time_column
    }
    files = _partitions(curated_dir, case.batch_names["events"], start, end)
    frames = [read_parquet(f, columns=list(wanted)) for f in files]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in wanted.items()})
    frame = pd.concat(frames, ignore_index=True)
    frame = pd.DataFrame({c: frame[c].astype(d) for c, d in wanted.items()})
    keep = np.ones(len(frame), dtype=bool)
    if start is not None:
        keep &= (frame[time_column] >= start).to_numpy()
    if end is not None:
        keep &= (frame[time_column] < end).to_numpy()
    frame = frame[keep]
    return frame.sort_values(time_column, kind="stable").reset_index(drop=True)


def first_seen(
    curated_dir: Path,
    before: pd.Timestamp,
    keys: tuple[str, ...],
    column: str,
    use_case: UseCase,
) -> pd.DataFrame:
    """Earliest event of each key (``keys``: event columns, e.g. a customer's device) among the curated events
    before ``before``, in seconds since the epoch in ``column``: what a streaming table's all-history
    first-seen feature (``streaming.StreamTable.first_seen``) needs beyond the events it keeps."""
    names = list(keys)
    old = read_curated_event_frame(curated_dir, None, before, columns=[*names, TIMESTAMP], use_case=use_case)
    old = old.dropna(subset=names)
    if not len(old):
        return pd.DataFrame(
            {
                **{k: pd.Series(dtype=KEY_DTYPE) for k in names},
                column: pd.Series(dtype="float64"),
            }
        )
    first = old.assign(s=epoch_us(old[TIMESTAMP]) / US_PER_S).groupby(names, sort=False)["s"].min()
    return first.rename(column).reset_index()
