"""Batch files as the landing zone takes them: parquet or CSV, written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

BATCH_FORMATS = ("parquet", "csv")


def write_frame(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    """Write ``frame`` to ``path`` as ``fmt`` (a temporary name first, so a reader never sees half a batch;
    on object storage one upload, which readers see whole or not at all)."""
    from loopline.storage.files import is_remote

    if fmt not in BATCH_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid formats: {', '.join(BATCH_FORMATS)}")
    if is_remote(path):
        with path.open("wb") as handle:
            if fmt == "parquet":
                frame.to_parquet(handle, index=False)
            else:
                handle.write(frame.to_csv(index=False).encode())
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        frame.to_parquet(tmp, index=False)
    else:
        frame.to_csv(tmp, index=False)
    tmp.replace(path)  # a reader never sees half a batch
