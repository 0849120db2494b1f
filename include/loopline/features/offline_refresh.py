"""The offline aggregate tables brought up to date for an interval: the use case computes the interval's rows
from its curated events (``FeatureDefinitions.compute``, reading the history its windows need) and they are
merged into the offline store (``offline_sink``).

The offline half of a materialisation (``materialize``), and what the benchmarks and scenario worlds call
to fill an offline store from a curated one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from loopline.features.aggregates import utc_timestamp
from loopline.features.offline_sink import OfflineSink, ParquetSink

if TYPE_CHECKING:
    from loopline.features.definitions import FeatureDefinitions


def refresh_aggregates(
    curated_dir: Path,
    offline: Path | OfflineSink,
    start: pd.Timestamp,
    end: pd.Timestamp,
    definitions: FeatureDefinitions | None = None,
) -> dict[str, int]:
    """Recompute the rows of the events in ``[start, end)`` and merge them into the offline store:
    ``offline`` is a folder of parquet tables or any ``offline_sink.OfflineSink`` (e.g. Postgres).

    ``definitions``: the use case's (default: the configured use case's), whose ``compute`` reads the curated
    history its windows need, so the rows equal those of a full recomputation. Returns the rows now in each
    table.
    """
    if definitions is None:
        from loopline.config import Settings
        from loopline.features.definitions import definitions_for

        definitions = definitions_for(Settings())[1]
    sink = offline if isinstance(offline, OfflineSink) else ParquetSink(Path(offline))
    tables = definitions.compute(curated_dir, utc_timestamp(start), utc_timestamp(end))
    return sink.write(dict(tables))
