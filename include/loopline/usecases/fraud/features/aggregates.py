"""Fraud's leak-free aggregate tables (``loopline.features.tables``), computed from curated transactions.

Every table holds one row per transaction, keyed by its entity, stamped with the transaction's
``event_timestamp`` and holding the state **after** it (see ``loopline.features.aggregates`` for the windows,
the ties and how they are computed vectorised).

Missing values: rows with a missing key or ``event_timestamp`` are left out of that table (the curated
contract never has them); a missing ``merchant_country`` counts as foreign, a missing ``channel`` as not
online, and a missing merchant or card as one value of its own in distinct counts. A missing ``amount``
is an error.

``compute_aggregates`` is pure (frames in, frames out); ``compute_offline`` reads the curated history an
interval's rows need (the platform's ``offline_refresh`` merges them into the offline store).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.features.aggregates import (
    US_PER_S,
    WINDOW_US,
    Windows,
    emit,
    group_mean,
    since_us,
    single_value_windows,
    utc_timestamp,
    value_codes,
    with_keys,
)
from loopline.features.curated import first_seen, read_curated_event_frame
from loopline.features.frames import KEY_DTYPE, TIMESTAMP, entity_codes, epoch_us
from loopline.features.tables import AggregateTable
from loopline.usecases.fraud import USE_CASE
from loopline.usecases.fraud.features.tables import (
    CUSTOMER_CHANNEL,
    CUSTOMER_DEVICE,
    CUSTOMER_VELOCITY,
    MERCHANT_STATS,
    TABLES,
)

HOME_COUNTRY = "DE"
ONLINE = "online"
HISTORY = timedelta(days=30)
"""The longest window: a row at ``t`` needs the transactions in ``(t - 30 d, t]``."""

TABLES_BY_NAME: dict[str, AggregateTable] = {table.name: table for table in TABLES}


def compute_offline(curated_dir: Path, start: pd.Timestamp, end: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """The rows of the transactions in ``[start, end)``, equal to those of a full recomputation.

    Reads the curated history from ``start - 30 days`` (all any window needs) and, for
    ``dev_first_seen_epoch_s`` (all history), the device columns of the older partitions.
    """
    start, end = utc_timestamp(start), utc_timestamp(end)
    history_start = start - HISTORY
    transactions = read_curated_event_frame(curated_dir, history_start, end, use_case=USE_CASE)
    prior = device_first_seen(curated_dir, history_start)
    return compute_aggregates(transactions, since=start, device_first_seen=prior)


def device_first_seen(curated_dir: Path, before: pd.Timestamp) -> pd.DataFrame:
    """Each customer's device's first use among the curated transactions before ``before``: a frame of
    ``customer_id``, ``device_id``, ``dev_first_seen_epoch_s``."""
    return first_seen(curated_dir, before, CUSTOMER_DEVICE.keys, "dev_first_seen_epoch_s", use_case=USE_CASE)


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
    start_us = since_us(since)
    return {
        CUSTOMER_VELOCITY.name: _customer_velocity(tx, t_us, start_us),
        MERCHANT_STATS.name: _merchant_stats(tx, t_us, start_us),
        CUSTOMER_DEVICE.name: _customer_device(tx, t_us, start_us, device_first_seen),
        CUSTOMER_CHANNEL.name: _customer_channel(tx, t_us, start_us),
    }


def _customer_velocity(tx: pd.DataFrame, t_us: np.ndarray, since_us: int | None) -> pd.DataFrame:
    table = CUSTOMER_VELOCITY
    tx, t_us = with_keys(tx, t_us, table)
    win = Windows(entity_codes(tx, table.keys), t_us)
    o = win.order
    amount = tx["amount"].to_numpy(dtype=np.float64)[o]
    merchant = value_codes(tx["merchant_id"])[o]
    online = tx["channel"].eq(ONLINE).fillna(False).to_numpy(dtype=np.int64)[o]
    foreign = (~tx["merchant_country"].eq(HOME_COUNTRY).fillna(False)).to_numpy(dtype=np.int64)[o]
    h1, d1, d7, d30 = (WINDOW_US[w] for w in ("1h", "24h", "7d", "30d"))

    amount_prefix = win.prefix(amount)
    count_30d = win.count(d30)
    # Population std over 30 d from sums of amounts centred on the customer's mean (small magnitudes,
    # little cancellation); exactly 0.0 when the window holds one distinct amount (e.g. one transaction).
    centred = amount - group_mean(win, amount)
    s1 = win.window_sum(centred, d30)
    s2 = win.window_sum(centred * centred, d30)
    variance = np.maximum(s2 / count_30d - (s1 / count_30d) ** 2, 0.0)
    std = np.sqrt(variance)
    std[single_value_windows(win, amount, d30)] = 0.0

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
    return emit(table, tx, win, features, since_us)


def _merchant_stats(tx: pd.DataFrame, t_us: np.ndarray, since_us: int | None) -> pd.DataFrame:
    table = MERCHANT_STATS
    tx, t_us = with_keys(tx, t_us, table)
    win = Windows(entity_codes(tx, table.keys), t_us)
    amount = tx["amount"].to_numpy(dtype=np.float64)[win.order]
    card = value_codes(tx["card_id"])[win.order]
    d1, d7 = WINDOW_US["24h"], WINDOW_US["7d"]
    features = {
        "merch_tx_count_24h": win.count(d1),
        "merch_tx_count_7d": win.count(d7),
        "merch_amount_mean_7d": win.window_sum(amount, d7) / win.count(d7),
        "merch_distinct_cards_24h": win.window_distinct(card, d1),
    }
    return emit(table, tx, win, features, since_us)


def _customer_device(
    tx: pd.DataFrame, t_us: np.ndarray, since_us: int | None, prior: pd.DataFrame | None
) -> pd.DataFrame:
    table = CUSTOMER_DEVICE
    tx, t_us = with_keys(tx, t_us, table)
    win = Windows(entity_codes(tx, table.keys), t_us)
    features = {
        "dev_tx_count_30d": win.count(WINDOW_US["30d"]),
        "dev_first_seen_epoch_s": win.t[win.group_start()] / US_PER_S,
    }
    frame = emit(table, tx, win, features, since_us)
    if prior is not None and len(prior) and len(frame):
        frame = _apply_prior_first_seen(frame, prior)
    return frame


def _customer_channel(tx: pd.DataFrame, t_us: np.ndarray, since_us: int | None) -> pd.DataFrame:
    table = CUSTOMER_CHANNEL
    tx, t_us = with_keys(tx, t_us, table)
    win = Windows(entity_codes(tx, table.keys), t_us)
    features = {"chan_tx_count_30d": win.count(WINDOW_US["30d"])}
    return emit(table, tx, win, features, since_us)


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
