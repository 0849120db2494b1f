"""Typed frames of the aggregate tables (``tables.py``): their dtypes, empty and conformed frames, the
sort order the offline tables are stored in, and the vectorised helpers shared by the computation
(``aggregates``) and the offline stores (``offline_sink``)."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import pandas as pd

from loopline.features.tables import TIMESTAMP as TIMESTAMP
from loopline.features.tables import AggregateTable

TIMESTAMP_DTYPE: Final = "datetime64[us, UTC]"
KEY_DTYPE = "string"


def epoch_us(timestamps: pd.Series) -> np.ndarray:
    """Microseconds since the epoch of each timestamp (UTC)."""
    ts = pd.to_datetime(timestamps, utc=True)
    return ts.dt.tz_localize(None).to_numpy().astype("datetime64[us]").astype(np.int64)


def entity_codes(tx: pd.DataFrame, keys: tuple[str, ...]) -> np.ndarray:
    """Dense codes of the key tuple, ordered like the keys (lexicographically)."""
    combined = np.zeros(len(tx), dtype=np.int64)
    for key in keys:
        codes, uniques = pd.factorize(tx[key], sort=True)
        combined = combined * np.int64(len(uniques)) + codes
        if len(keys) > 1:  # keep the code range at most the row count (no overflow with more keys)
            _, combined = np.unique(combined, return_inverse=True)
            combined = combined.astype(np.int64)
    return combined


def empty_table(table: AggregateTable) -> pd.DataFrame:
    """A frame with no rows and the table's columns and dtypes."""
    dtypes = {**dict.fromkeys(table.keys, KEY_DTYPE), TIMESTAMP: TIMESTAMP_DTYPE, **table.features}
    return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in table.columns})


def conform_table(frame: pd.DataFrame, table: AggregateTable) -> pd.DataFrame:
    """``frame`` with exactly the table's columns, in order, with its dtypes."""
    # Any: pandas-stubs type astype by literal dtype names, these are str from the table
    dtypes: dict[str, Any] = {**dict.fromkeys(table.keys, KEY_DTYPE), **table.features}
    data = {c: frame[c].astype(dtypes[c]) for c in table.keys}
    data[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True).astype(TIMESTAMP_DTYPE)
    data.update({c: frame[c].astype(dtypes[c]) for c in table.features})
    return pd.DataFrame(data, columns=table.columns).reset_index(drop=True)


def sort_table(frame: pd.DataFrame, table: AggregateTable) -> pd.DataFrame:
    """Sorted by keys then event_timestamp (codes of sorted keys; no string sort)."""
    if len(frame) < 2:
        return frame.reset_index(drop=True)
    codes = entity_codes(frame, table.keys)
    order = np.lexsort((epoch_us(frame[TIMESTAMP]), codes))
    return frame.iloc[order].reset_index(drop=True)
