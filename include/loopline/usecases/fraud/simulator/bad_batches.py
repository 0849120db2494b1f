"""Bad batches: broken copies of a good transactions batch, each broken by exactly one rule.

Every maker takes the good batch (a DataFrame in the contract of :mod:`loopline.usecases.fraud.schema`), a numpy
generator and the file format, and returns either a DataFrame (written like a normal batch) or raw
bytes (written as they are). Each result violates the rule its name says and keeps everything else
valid, so that ingest can be tested rule by rule: an out-of-range amount batch still has the right
columns, types, vocabularies and unique ids.

Notes on two kinds: ``empty_file`` is a zero-byte file (not a valid file with zero rows: a reader
cannot even find a schema in it); ``future_timestamps`` moves some events 3-30 days beyond the later
of the batch's own day and today, so they are in the future for the batch and for the wall clock
(its content therefore depends on the date it is made, unlike every other kind).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.data.batch_files import write_frame
from loopline.usecases.fraud.schema import AMOUNT_MAX, REQUIRED_TRANSACTION_COLUMNS

BadBatch = pd.DataFrame | bytes
Maker = Callable[[pd.DataFrame, np.random.Generator, str], BadBatch]

#: kind -> one-line description (what is wrong, and which rule ingest must apply).
BAD_KINDS: dict[str, str] = {
    "missing_column": "a required column is dropped",
    "renamed_column": "a required column is renamed (e.g. amount -> amount_eur)",
    "extra_column": "an unexpected column is added (card_pan_masked)",
    "wrong_type": 'amount is text such as "12,50 EUR" instead of a number',
    "null_required": "customer_id and amount are null in a few per cent of the rows",
    "out_of_range_amount": f"some amounts are negative, some above AMOUNT_MAX ({AMOUNT_MAX:,.0f})",
    "unknown_category": "values outside the closed vocabularies (channel 'telepathy', age band '0-17')",
    "duplicate_ids": "some transaction_ids occur twice (re-sent rows and conflicting rows)",
    "empty_file": "a zero-byte file",
    "truncated_file": "a valid file cut in half: it cannot be read",
    "future_timestamps": "some event_timestamps lie 3-30 days in the future (after the batch day and today)",
}

_RENAMES = {
    "amount": "amount_eur",
    "event_timestamp": "event_time",
    "customer_id": "customerId",
    "merchant_category": "mcc_category",
    "channel": "pos_channel",
}


def _some_rows(rng: np.random.Generator, n: int, share: float, minimum: int = 1) -> np.ndarray:
    """Distinct row positions: ``share`` of ``n`` (at least ``minimum``), sorted."""
    k = min(n, max(minimum, round(n * share)))
    return np.sort(rng.choice(n, size=k, replace=False))


def missing_column(good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet") -> BadBatch:
    column = str(rng.choice(list(REQUIRED_TRANSACTION_COLUMNS)))
    return good.drop(columns=[column])


def renamed_column(good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet") -> BadBatch:
    old = str(rng.choice(list(_RENAMES)))
    return good.rename(columns={old: _RENAMES[old]})


def extra_column(good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet") -> BadBatch:
    bad = good.copy()
    last4 = rng.integers(0, 10_000, size=len(bad))
    bad["card_pan_masked"] = pd.array([f"4111 **** **** {d:04d}" for d in last4.tolist()], dtype="string")
    return bad


def wrong_type(good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet") -> BadBatch:
    bad = good.copy()
    text = bad["amount"].map(lambda a: f"{a:.2f}".replace(".", ",") + " EUR")
    bad["amount"] = text.astype("string")
    return bad


def null_required(good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet") -> BadBatch:
    bad = good.copy()
    rows = _some_rows(rng, len(bad), 0.06, minimum=2)
    half = len(rows) // 2
    bad.loc[rows[:half], "customer_id"] = pd.NA
    bad.loc[rows[half:], "amount"] = np.nan
    return bad


def out_of_range_amount(good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet") -> BadBatch:
    bad = good.copy()
    rows = _some_rows(rng, len(bad), 0.02, minimum=2)
    huge, negative = rows[::3], np.setdiff1d(rows, rows[::3])  # few huge ones: the mean stays plausible
    bad.loc[negative, "amount"] = -bad.loc[negative, "amount"]
    bad.loc[huge, "amount"] = np.round(rng.uniform(AMOUNT_MAX * 1.02, AMOUNT_MAX * 1.6, size=len(huge)), 2)
    return bad


def unknown_category(good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet") -> BadBatch:
    bad = good.copy()
    rows = _some_rows(rng, len(bad), 0.03, minimum=2)
    bad.loc[rows[::2], "channel"] = "telepathy"
    bad.loc[rows[1::2], "customer_age_band"] = "0-17"
    return bad


def duplicate_ids(good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet") -> BadBatch:
    """1 % of the rows delivered twice, and 1 % of the rows carrying another row's id."""
    bad = good.copy()
    n = len(bad)
    rows = _some_rows(rng, n, 0.02, minimum=2)
    resent, conflicting = rows[::2], rows[1::2]
    donors = rng.choice(np.setdiff1d(np.arange(n), conflicting), size=len(conflicting))
    bad.loc[conflicting, "transaction_id"] = bad["transaction_id"].to_numpy()[donors]
    bad = pd.concat([bad, bad.iloc[resent]], ignore_index=True)
    return bad.sort_values("event_timestamp", kind="stable", ignore_index=True)


def empty_file(good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet") -> BadBatch:
    return b""


def truncated_file(good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet") -> BadBatch:
    """The first half of the file: parquet loses its footer; CSV ends inside an open quoted field."""
    if fmt == "parquet":
        buffer = io.BytesIO()
        good.to_parquet(buffer, index=False)
        data = buffer.getvalue()
        return data[: len(data) // 2]
    data = good.to_csv(index=False, quoting=csv.QUOTE_ALL).encode()
    cut = data.index(b',"', len(data) // 2) + 3  # just after the opening quote of a field
    return data[:cut]


def future_timestamps(
    good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet", now: datetime | None = None
) -> BadBatch:
    """5 % of the events moved 3-30 days beyond the later of the batch's day and today (UTC): in the
    future both for the batch (its landing date) and for the wall clock of whoever ingests it."""
    bad = good.copy()
    rows = _some_rows(rng, len(bad), 0.05, minimum=1)
    batch_day_end = bad["event_timestamp"].min().normalize() + timedelta(days=1)
    today_end = pd.Timestamp(now or datetime.now(UTC)).tz_convert("UTC").normalize() + timedelta(days=1)
    seconds = rng.integers(3 * 86_400, 30 * 86_400, size=len(rows))
    shifted = max(batch_day_end, today_end) + pd.to_timedelta(seconds, unit="s")
    bad.loc[rows, "event_timestamp"] = pd.Series(shifted, index=rows).astype(bad["event_timestamp"].dtype)
    return bad


MAKERS: dict[str, Maker] = {
    "missing_column": missing_column,
    "renamed_column": renamed_column,
    "extra_column": extra_column,
    "wrong_type": wrong_type,
    "null_required": null_required,
    "out_of_range_amount": out_of_range_amount,
    "unknown_category": unknown_category,
    "duplicate_ids": duplicate_ids,
    "empty_file": empty_file,
    "truncated_file": truncated_file,
    "future_timestamps": future_timestamps,
}
assert set(MAKERS) == set(BAD_KINDS)


def make_bad_batch(kind: str, good: pd.DataFrame, rng: np.random.Generator, fmt: str = "parquet") -> BadBatch:
    if kind not in MAKERS:
        raise ValueError(f"unknown bad-batch kind {kind!r}; valid kinds: {', '.join(BAD_KINDS)}")
    if good.empty:
        raise ValueError("a bad batch is made from a non-empty good batch")
    return MAKERS[kind](good.reset_index(drop=True), rng, fmt)


def write_bad_batch(kind: str, good: pd.DataFrame, path: Path, fmt: str, rng: np.random.Generator) -> Path:
    """Write the ``kind`` bad batch made from ``good`` to ``path`` (frames in ``fmt``, bytes as they are)."""
    from loopline.storage.files import is_remote

    bad = make_bad_batch(kind, good, rng, fmt)
    path = Path(path) if isinstance(path, str) else path  # a Path, or a path on object storage
    if isinstance(bad, bytes) and is_remote(path):
        path.write_bytes(bad)  # one upload: never seen half-written
    elif isinstance(bad, bytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(bad)
        tmp.replace(path)  # a watcher never sees it half-written (only broken on purpose)
    else:
        write_frame(bad, path, fmt)
    return path
