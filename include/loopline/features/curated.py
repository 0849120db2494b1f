"""What the feature modules read from the curated store itself: its time span and the labels known at a time.

Materialisation, training sets and fresh features need the span; training sets, monitoring, the canary's
label windows and the gate's holdout need the labels. Neither reads a feature store, so they are apart
from the modules that do (fresh features read the span without importing the materialiser).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from loopline.features.feature_service import ONE_MICROSECOND, FeatureRowsMismatch

if TYPE_CHECKING:
    import pandas as pd

    from loopline.config import Settings


def curated_time_range(settings: Settings) -> tuple[datetime, datetime] | None:
    """[first event, last event + 1 µs) over the curated transactions, or None when there are none."""

    from loopline.data.ingest import visible_partition_files

    files = visible_partition_files(settings.state.curated / "transactions")
    if not files:
        return None
    from loopline.storage.files import parquet_dataset

    table = parquet_dataset(files).to_table(columns=["event_timestamp"])
    column = table.column(0)
    import pyarrow.compute as pc

    low, high = pc.min(column).as_py(), pc.max(column).as_py()
    return low.astimezone(UTC), high.astimezone(UTC) + ONE_MICROSECOND


def read_labels(settings: Settings, as_of: datetime) -> pd.DataFrame:
    """Curated labels known at ``as_of`` (label delay honoured: later labels do not exist yet)."""
    import pandas as pd

    from loopline.data.ingest import visible_partition_files

    files = visible_partition_files(settings.state.curated / "labels")
    if not files:
        return pd.DataFrame(
            {
                "transaction_id": pd.Series(dtype="string"),
                "is_fraud": pd.Series(dtype="Int64"),
                "label_timestamp": pd.Series(dtype="datetime64[us, UTC]"),
            }
        )
    from loopline.storage.files import read_parquet

    labels: pd.DataFrame = pd.concat([read_parquet(f) for f in files], ignore_index=True)
    labels = labels[labels["label_timestamp"] <= pd.Timestamp(as_of)]
    if labels["transaction_id"].duplicated().any():
        raise FeatureRowsMismatch("a transaction has more than one label in the curated store")
    return labels
