"""Batch files as the landing zone takes them: parquet or CSV, written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

BATCH_FORMATS = ("parquet", "csv")


def write_frame(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    """Write ``frame`` to ``path`` as ``fmt`` (a temporary name first, so a reader never sees half a batch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        frame.to_parquet(tmp, index=False)
    elif fmt == "csv":
        frame.to_csv(tmp, index=False)
    else:
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(BATCH_FORMATS)}")
    tmp.replace(path)  # a reader never sees half a batch
