"""The offline aggregate tables brought up to date for an interval: the curated history the interval's rows
need is read (``curated``), their rows computed (``aggregates``) and merged into the offline store
(``offline_sink``).

The offline half of a materialisation (``materialize``), and what the benchmarks and scenario worlds call
to fill an offline store from a curated one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from loopline.features.aggregates import HISTORY, compute_aggregates, utc_timestamp
from loopline.features.curated import device_first_seen, read_curated_transactions
from loopline.features.offline_sink import OfflineSink, ParquetSink


def refresh_aggregates(
    curated_dir: Path, offline: Path | OfflineSink, start: pd.Timestamp, end: pd.Timestamp
) -> dict[str, int]:
    """Recompute the rows of transactions in ``[start, end)`` and merge them into the offline store:
    ``offline`` is a folder of parquet tables or any ``offline_sink.OfflineSink`` (e.g. Postgres).

    Reads the curated history from ``start - 30 days`` (all any window needs) and, for
    ``dev_first_seen_epoch_s`` (all history), the device columns of the older partitions, so the rows
    equal those of a full recomputation. Returns the rows now in each table.
    """
    sink = offline if isinstance(offline, OfflineSink) else ParquetSink(Path(offline))
    start, end = utc_timestamp(start), utc_timestamp(end)
    history_start = start - HISTORY
    transactions = read_curated_transactions(curated_dir, history_start, end)
    prior = device_first_seen(curated_dir, history_start)
    tables = compute_aggregates(transactions, since=start, device_first_seen=prior)
    return sink.write(tables)
