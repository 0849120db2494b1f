"""Time windows over events, vectorised: the machinery behind every use case's aggregate tables.

A table (``tables.AggregateTable``) holds one row per event, keyed by its entity, stamped with the event's time
(``event_timestamp``) and holding the state **after** it: a window ``w`` covers that key's events in
``(t - w, t]``. Nothing after ``t`` is ever read, so a row never changes when later data arrives.

Same-timestamp ties: two events of the same key at exactly the same time give **one** row for that
``(keys, event_timestamp)`` holding the state after both (both are in ``(t - w, t]``). A training row joins at
``T - 1 µs`` and so sees neither, which is still leak-free.

How (vectorised, no Python loop per group or row): a table's rows are sorted by (entity, time); for a window
``w`` each row's window is then the contiguous slice ``[left, i]`` of its entity's rows, found for all rows at
once with one ``searchsorted`` on a monotone (entity, time rank) key. Counts are slice lengths, sums and means
come from per-entity prefix sums, the max from a sparse table, and distinct counts from each row's link to the
previous row of the same value, turned into range additions and one cumulative sum.

Pure: frames in, frames out, no I/O. What a use case computes with it is the use case's (fraud's:
``loopline.usecases.fraud.features.aggregates``); reading curated events is ``curated``'s job, and merging an
interval into the offline store ``offline_refresh``'s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loopline.features.frames import KEY_DTYPE, TIMESTAMP, entity_codes
from loopline.features.tables import AggregateTable

US_PER_S = 1_000_000
HOUR_US = 3_600 * US_PER_S
WINDOW_US: dict[str, int] = {
    "1h": HOUR_US,
    "24h": 24 * HOUR_US,
    "7d": 7 * 24 * HOUR_US,
    "30d": 30 * 24 * HOUR_US,
}


def since_us(since: pd.Timestamp | None) -> int | None:
    """``since`` in µs since the epoch (None stays None)."""
    from loopline.features.frames import epoch_us

    return None if since is None else int(epoch_us(pd.Series([utc_timestamp(since)]))[0])


class Windows:
    """One table's rows sorted by (entity, time) and the time windows over them.

    ``codes`` are entity codes whose order is the keys' order; arrays given to the methods, and all
    they return, are in the sorted order (``self.order`` maps it back to the input rows).
    """

    def __init__(self, codes: np.ndarray, t_us: np.ndarray) -> None:
        times, rank = np.unique(t_us, return_inverse=True)
        self._times = times
        self._stride = np.int64(len(times) + 1)
        composite = codes.astype(np.int64) * self._stride + rank.astype(np.int64)
        self.order = np.argsort(composite, kind="stable")
        self._key = composite[self.order]
        self.group = codes[self.order].astype(np.int64)
        self.t = t_us[self.order]
        n = len(self.order)
        self.n = n
        self.pos = np.arange(n, dtype=np.int64)
        self.starts = np.ones(n, dtype=bool)
        self.starts[1:] = self.group[1:] != self.group[:-1]
        self.last = np.ones(n, dtype=bool)  # the last row of each (entity, timestamp): the emitted rows
        self.last[:-1] = self._key[1:] != self._key[:-1]
        self._left: dict[int, np.ndarray] = {}
        self._counts: dict[int, np.ndarray] = {}

    def left(self, w_us: int) -> np.ndarray:
        """Index of the first row of the window ``(t - w, t]`` of each row (nondecreasing)."""
        if w_us not in self._left:
            first_rank = np.searchsorted(self._times, self.t - w_us, side="right")  # first time > t - w
            target = self.group * self._stride + first_rank
            self._left[w_us] = np.searchsorted(self._key, target, side="left")
        return self._left[w_us]

    def count(self, w_us: int) -> np.ndarray:
        if w_us not in self._counts:
            self._counts[w_us] = self.pos - self.left(w_us) + 1
        return self._counts[w_us]

    def group_start(self) -> np.ndarray:
        """Index of the first row of each row's entity."""
        start: np.ndarray = np.maximum.accumulate(np.where(self.starts, self.pos, 0))
        return start

    def prefix(self, x: np.ndarray) -> np.ndarray:
        """Per-entity exclusive prefix sums: ``out[i]`` = sum of ``x`` over the entity's rows before i.

        Integer input: one global cumulative sum (exact). Float input: restarted at every entity, so the
        rounding error scales with the entity's total, not with the whole table's.
        """
        if np.issubdtype(x.dtype, np.integer):
            inclusive = np.cumsum(x)
            exclusive: np.ndarray = inclusive - x
            return exclusive
        inclusive = pd.Series(x).groupby(self.group, sort=False).cumsum().to_numpy()
        exclusive = np.empty_like(inclusive)
        exclusive[0:1] = 0.0
        exclusive[1:] = inclusive[:-1]
        exclusive[self.starts] = 0.0
        return exclusive

    def window_sum(self, x: np.ndarray, w_us: int, prefix: np.ndarray | None = None) -> np.ndarray:
        """Sum of ``x`` over each row's window (pass ``prefix`` to reuse ``self.prefix(x)``)."""
        before = self.prefix(x) if prefix is None else prefix
        total: np.ndarray = before + x - before[self.left(w_us)]
        return total

    def window_max(self, x: np.ndarray, w_us: int) -> np.ndarray:
        """Max of ``x`` over each row's window: a sparse table, one level at a time."""
        left = self.left(w_us)
        length = self.count(w_us)
        level_of = np.zeros(self.n, dtype=np.int64)  # floor(log2(length))
        top = int(length.max()).bit_length() if self.n else 0
        for k in range(1, top):
            level_of[length >= (1 << k)] = k
        out = np.empty(self.n, dtype=np.float64)
        level = x.astype(np.float64)  # level[j] = max(x[j : j + 2**k])
        for k in range(top):
            chosen = np.flatnonzero(level_of == k)
            if chosen.size:
                out[chosen] = np.maximum(level[left[chosen]], level[chosen - (1 << k) + 1])
            span = 1 << k
            if k + 1 < top and span < self.n:
                upper = level.copy()
                np.maximum(level[:-span], level[span:], out=upper[:-span])
                level = upper
        return out

    def window_distinct(self, values: np.ndarray, w_us: int) -> np.ndarray:
        """Number of distinct ``values`` (non-negative int codes) in each row's window.

        Row ``j`` whose previous row of the same entity and value is ``p`` is a repeat in the window of
        row ``i`` exactly when ``j <= i`` and ``left[i] <= p``; ``left`` is nondecreasing, so those ``i``
        are the range ``[j, last_i]`` with ``last_i`` = the last row whose window starts at or before ``p``.
        """
        left = self.left(w_us)
        composite = self.group * np.int64(int(values.max(initial=0)) + 1) + values.astype(np.int64)
        by_value = np.argsort(composite, kind="stable")  # entity, value, then position
        same = composite[by_value[1:]] == composite[by_value[:-1]]
        repeat = by_value[1:][same]
        previous = by_value[:-1][same]
        last_i = np.searchsorted(left, previous, side="right") - 1
        live = last_i >= repeat
        diff = np.bincount(repeat[live], minlength=self.n + 1) - np.bincount(
            last_i[live] + 1, minlength=self.n + 1
        )
        repeats_in_window = np.cumsum(diff[: self.n])
        return self.count(w_us) - repeats_in_window


def group_mean(win: Windows, x: np.ndarray) -> np.ndarray:
    if not win.n:
        return np.zeros(0)
    start_idx = np.flatnonzero(win.starts)
    sizes = np.diff(np.append(start_idx, win.n))
    means = np.add.reduceat(x, start_idx) / sizes
    return np.repeat(means, sizes)


def single_value_windows(win: Windows, x: np.ndarray, w_us: int) -> np.ndarray:
    """Rows whose window holds a single distinct value of ``x``."""
    codes, _ = pd.factorize(x)
    single: np.ndarray = win.window_distinct(codes.astype(np.int64), w_us) == 1
    return single


# --- frames in and out ----------------------------------------------------------------------------


def utc_timestamp(ts: pd.Timestamp | str) -> pd.Timestamp:
    """``ts`` as a UTC timestamp (a naive one is taken to be UTC)."""
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def with_keys(tx: pd.DataFrame, t_us: np.ndarray, table: AggregateTable) -> tuple[pd.DataFrame, np.ndarray]:
    present = tx[list(table.keys)].notna().all(axis=1).to_numpy()
    if present.all():
        return tx, t_us
    return tx[present].reset_index(drop=True), t_us[present]


def value_codes(values: pd.Series) -> np.ndarray:
    codes, _ = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64)


def emit(
    table: AggregateTable,
    tx: pd.DataFrame,
    win: Windows,
    features: dict[str, np.ndarray],
    since_us: int | None,
) -> pd.DataFrame:
    keep = win.last if since_us is None else win.last & (win.t >= since_us)
    rows = win.order[keep]
    data: dict[str, object] = {}
    for key in table.keys:
        column = tx[key].iloc[rows].reset_index(drop=True)
        data[key] = column if column.dtype == KEY_DTYPE else column.astype(KEY_DTYPE)  # type: ignore[call-overload]
    data[TIMESTAMP] = _timestamps(win.t[keep])
    for name, dtype in table.features.items():
        data[name] = pd.Series(features[name][keep]).astype(dtype)  # type: ignore[call-overload]
    return pd.DataFrame(data, columns=table.columns)


def _timestamps(us: np.ndarray) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(us.astype("datetime64[us]")).tz_localize("UTC"))


def count_table(
    events: pd.DataFrame, t_us: np.ndarray, table: AggregateTable, windows: dict[str, int], since: int | None
) -> pd.DataFrame:
    """``table``'s rows when each feature is a count of the key's events in a window: feature -> window in µs."""
    events, t_us = with_keys(events, t_us, table)
    win = Windows(entity_codes(events, table.keys), t_us)
    return emit(table, events, win, {name: win.count(w) for name, w in windows.items()}, since)
