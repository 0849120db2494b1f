"""The leak-free aggregate tables of ``tables.py``, computed from curated transactions.

Every table holds one row per transaction, keyed by its entity, stamped with the transaction's
``event_timestamp`` and holding the state **after** it: a window ``w`` covers that key's transactions
in ``(t - w, t]``. Nothing after ``t`` is ever read, so a row never changes when later data arrives.

Same-timestamp ties: two transactions of the same key at exactly the same ``event_timestamp`` give
**one** row for that ``(keys, event_timestamp)`` holding the state after both (both are in
``(t - w, t]``). A training row joins at ``T - 1 µs`` and so sees neither, which is still leak-free.

How (vectorised, no Python loop per group or row): a table's rows are sorted by (entity, time);
for a window ``w`` each row's window is then the contiguous slice ``[left, i]`` of its entity's rows,
found for all rows at once with one ``searchsorted`` on a monotone (entity, time rank) key. Counts are
slice lengths, sums and means come from per-entity prefix sums, the population std from prefix sums of
amounts centred on the entity's mean, the max from a sparse table, and distinct counts from each row's
link to the previous row of the same value, turned into range additions and one cumulative sum.

Missing values: rows with a missing key or ``event_timestamp`` are left out of that table (the curated
contract never has them); a missing ``merchant_country`` counts as foreign, a missing ``channel`` as not
online, and a missing merchant or card as one value of its own in distinct counts. A missing ``amount``
is an error.

Pure: frames in, frames out, no I/O. Reading curated transactions is ``curated``'s job, and recomputing
an interval into the offline store (read, compute, merge) is ``offline_refresh``'s.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from loopline.features.frames import KEY_DTYPE, TIMESTAMP, entity_codes, epoch_us
from loopline.features.tables import (
    CUSTOMER_CHANNEL,
    CUSTOMER_DEVICE,
    CUSTOMER_VELOCITY,
    MERCHANT_STATS,
    TABLES,
    AggregateTable,
)

HOME_COUNTRY = "DE"
ONLINE = "online"

US_PER_S = 1_000_000
HOUR_US = 3_600 * US_PER_S
WINDOW_US: dict[str, int] = {
    "1h": HOUR_US,
    "24h": 24 * HOUR_US,
    "7d": 7 * 24 * HOUR_US,
    "30d": 30 * 24 * HOUR_US,
}
HISTORY = timedelta(days=30)
"""The longest window: a row at ``t`` needs the transactions in ``(t - 30 d, t]``."""

TABLES_BY_NAME: dict[str, AggregateTable] = {table.name: table for table in TABLES}


# --- the computation -------------------------------------------------------------------------------


def compute_aggregates(
    transactions: pd.DataFrame,
    since: pd.Timestamp | None = None,
    *,
    device_first_seen: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """Table name -> rows for every transaction with ``event_timestamp >= since`` (all if None).

    The rows are computed with the full history in ``transactions`` (windows look back up to 30 days),
    so for ``t >= since`` they equal those of a computation without ``since``. Each frame has exactly
    the table's columns, in order, with its dtypes, sorted by keys then ``event_timestamp``.

    ``device_first_seen`` optionally extends ``dev_first_seen_epoch_s`` past the history given: a frame
    of ``customer_id``, ``device_id``, ``dev_first_seen_epoch_s`` (the earliest earlier use, e.g. from
    partitions older than the history read); a value is used only where it is at or before the row.
    """
    tx = _usable(transactions)
    t_us = epoch_us(tx[TIMESTAMP])
    since_us = None if since is None else int(epoch_us(pd.Series([utc_timestamp(since)]))[0])
    return {
        CUSTOMER_VELOCITY.name: _customer_velocity(tx, t_us, since_us),
        MERCHANT_STATS.name: _merchant_stats(tx, t_us, since_us),
        CUSTOMER_DEVICE.name: _customer_device(tx, t_us, since_us, device_first_seen),
        CUSTOMER_CHANNEL.name: _customer_channel(tx, t_us, since_us),
    }


class _Windows:
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


def _customer_velocity(tx: pd.DataFrame, t_us: np.ndarray, since_us: int | None) -> pd.DataFrame:
    table = CUSTOMER_VELOCITY
    tx, t_us = _with_keys(tx, t_us, table)
    win = _Windows(entity_codes(tx, table.keys), t_us)
    o = win.order
    amount = tx["amount"].to_numpy(dtype=np.float64)[o]
    merchant = _value_codes(tx["merchant_id"])[o]
    online = tx["channel"].eq(ONLINE).fillna(False).to_numpy(dtype=np.int64)[o]
    foreign = (~tx["merchant_country"].eq(HOME_COUNTRY).fillna(False)).to_numpy(dtype=np.int64)[o]
    h1, d1, d7, d30 = (WINDOW_US[w] for w in ("1h", "24h", "7d", "30d"))

    amount_prefix = win.prefix(amount)
    count_30d = win.count(d30)
    # Population std over 30 d from sums of amounts centred on the customer's mean (small magnitudes,
    # little cancellation); exactly 0.0 when the window holds one distinct amount (e.g. one transaction).
    centred = amount - _group_mean(win, amount)
    s1 = win.window_sum(centred, d30)
    s2 = win.window_sum(centred * centred, d30)
    variance = np.maximum(s2 / count_30d - (s1 / count_30d) ** 2, 0.0)
    std = np.sqrt(variance)
    std[_value_codes_window_single(win, amount, d30)] = 0.0

    features = {
        "cust_tx_count_1h": win.count(h1),
        "cust_tx_count_24h": win.count(d1),
        "cust_tx_count_7d": win.count(d7),
        "cust_tx_count_30d": count_30d,
        "cust_amount_sum_24h": win.window_sum(amount, d1, amount_prefix),
        "cust_amount_mean_24h": win.window_sum(amount, d1, amount_prefix) / win.count(d1),
        "cust_amount_mean_7d": win.window_sum(amount, d7, amount_prefix) / win.count(d7),
        "cust_amount_mean_30d": win.window_sum(amount, d30, amount_prefix) / count_30d,
        "cust_amount_std_30d": std,
        "cust_amount_max_7d": win.window_max(amount, d7),
        "cust_distinct_merchants_24h": win.window_distinct(merchant, d1),
        "cust_distinct_merchants_7d": win.window_distinct(merchant, d7),
        "cust_online_share_30d": win.window_sum(online, d30) / count_30d,
        "cust_foreign_share_30d": win.window_sum(foreign, d30) / count_30d,
        "cust_last_tx_epoch_s": win.t / US_PER_S,
    }
    return _emit(table, tx, win, features, since_us)


def _merchant_stats(tx: pd.DataFrame, t_us: np.ndarray, since_us: int | None) -> pd.DataFrame:
    table = MERCHANT_STATS
    tx, t_us = _with_keys(tx, t_us, table)
    win = _Windows(entity_codes(tx, table.keys), t_us)
    amount = tx["amount"].to_numpy(dtype=np.float64)[win.order]
    card = _value_codes(tx["card_id"])[win.order]
    d1, d7 = WINDOW_US["24h"], WINDOW_US["7d"]
    features = {
        "merch_tx_count_24h": win.count(d1),
        "merch_tx_count_7d": win.count(d7),
        "merch_amount_mean_7d": win.window_sum(amount, d7) / win.count(d7),
        "merch_distinct_cards_24h": win.window_distinct(card, d1),
    }
    return _emit(table, tx, win, features, since_us)


def _customer_device(
    tx: pd.DataFrame, t_us: np.ndarray, since_us: int | None, prior: pd.DataFrame | None
) -> pd.DataFrame:
    table = CUSTOMER_DEVICE
    tx, t_us = _with_keys(tx, t_us, table)
    win = _Windows(entity_codes(tx, table.keys), t_us)
    features = {
        "dev_tx_count_30d": win.count(WINDOW_US["30d"]),
        "dev_first_seen_epoch_s": win.t[win.group_start()] / US_PER_S,
    }
    frame = _emit(table, tx, win, features, since_us)
    if prior is not None and len(prior) and len(frame):
        frame = _apply_prior_first_seen(frame, prior)
    return frame


def _customer_channel(tx: pd.DataFrame, t_us: np.ndarray, since_us: int | None) -> pd.DataFrame:
    table = CUSTOMER_CHANNEL
    tx, t_us = _with_keys(tx, t_us, table)
    win = _Windows(entity_codes(tx, table.keys), t_us)
    features = {"chan_tx_count_30d": win.count(WINDOW_US["30d"])}
    return _emit(table, tx, win, features, since_us)


def _apply_prior_first_seen(frame: pd.DataFrame, prior: pd.DataFrame) -> pd.DataFrame:
    """``dev_first_seen_epoch_s`` = min(own history, earlier uses in ``prior`` at or before the row)."""
    keys = list(CUSTOMER_DEVICE.keys)
    earliest = (
        prior.dropna(subset=[*keys, "dev_first_seen_epoch_s"])
        .astype({key: KEY_DTYPE for key in keys})
        .groupby(keys, sort=False)["dev_first_seen_epoch_s"]
        .min()
    )
    index = pd.MultiIndex.from_frame(frame[keys])
    known = earliest.reindex(index).to_numpy(dtype=np.float64)
    own = frame["dev_first_seen_epoch_s"].to_numpy()
    row_s = epoch_us(frame[TIMESTAMP]) / US_PER_S
    usable = ~np.isnan(known) & (known <= row_s)
    frame = frame.copy()
    frame["dev_first_seen_epoch_s"] = np.where(usable, np.fmin(own, known), own)
    return frame


def _group_mean(win: _Windows, x: np.ndarray) -> np.ndarray:
    if not win.n:
        return np.zeros(0)
    start_idx = np.flatnonzero(win.starts)
    sizes = np.diff(np.append(start_idx, win.n))
    means = np.add.reduceat(x, start_idx) / sizes
    return np.repeat(means, sizes)


def _value_codes_window_single(win: _Windows, x: np.ndarray, w_us: int) -> np.ndarray:
    """Rows whose window holds a single distinct value of ``x``."""
    codes, _ = pd.factorize(x)
    single: np.ndarray = win.window_distinct(codes.astype(np.int64), w_us) == 1
    return single


# --- frames in and out ----------------------------------------------------------------------------


def _usable(transactions: pd.DataFrame) -> pd.DataFrame:
    missing = [
        c
        for c in (
            "event_timestamp",
            "amount",
            "customer_id",
            "merchant_id",
            "card_id",
            "channel",
            "merchant_country",
            "device_id",
        )
        if c not in transactions.columns
    ]
    if missing:
        raise ValueError(f"transactions lack column(s) {missing}")
    tx = transactions[transactions[TIMESTAMP].notna()].reset_index(drop=True)
    if tx["amount"].isna().any():
        raise ValueError("transactions with a missing amount: the curated contract forbids them")
    return tx


def utc_timestamp(ts: pd.Timestamp | str) -> pd.Timestamp:
    """``ts`` as a UTC timestamp (a naive one is taken to be UTC)."""
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _with_keys(tx: pd.DataFrame, t_us: np.ndarray, table: AggregateTable) -> tuple[pd.DataFrame, np.ndarray]:
    present = tx[list(table.keys)].notna().all(axis=1).to_numpy()
    if present.all():
        return tx, t_us
    return tx[present].reset_index(drop=True), t_us[present]


def _value_codes(values: pd.Series) -> np.ndarray:
    codes, _ = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64)


def _emit(
    table: AggregateTable,
    tx: pd.DataFrame,
    win: _Windows,
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
