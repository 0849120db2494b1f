"""Bad batches: each one breaks exactly the rule its name says, in parquet and in CSV."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.cli import simulate as simulate_cli
from loopline.data.batch_files import write_frame
from loopline.usecases.fraud.schema import (
    AGE_BANDS,
    AMOUNT_MAX,
    AMOUNT_MIN,
    CHANNELS,
    REGIONS,
    TRANSACTION_COLUMNS,
)
from loopline.usecases.fraud.simulator import SimulationConfig, Simulator
from loopline.usecases.fraud.simulator.bad_batches import BAD_KINDS, MAKERS, make_bad_batch, write_bad_batch

DAY = date(2026, 1, 1)

# What an independent reader of the contract finds wrong in each bad batch: the kind's own rule only.
EXPECTED = {
    "missing_column": {"missing_column"},
    "renamed_column": {"renamed_column"},
    "extra_column": {"extra_column"},
    "wrong_type": {"wrong_type"},
    "null_required": {"null_required"},
    "out_of_range_amount": {"out_of_range_amount"},
    "unknown_category": {"unknown_category"},
    "duplicate_ids": {"duplicate_ids"},
    "empty_file": {"empty_file"},
    "truncated_file": {"unreadable"},
    "future_timestamps": {"future_timestamps"},
}


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    batch = next(Simulator(SimulationConfig(days=1, n_customers=500)).days())
    return batch.transactions


def _read(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        return pd.read_parquet(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=True)
    return frame.astype({c: "string" for c in frame.columns})


def violations(path: Path, fmt: str, day: date = DAY, now: datetime | None = None) -> set[str]:
    """The rules of the transactions contract that the file at ``path`` breaks."""
    if path.stat().st_size == 0:
        return {"empty_file"}
    try:
        frame = _read(path, fmt)
    except Exception:
        return {"unreadable"}
    found: set[str] = set()
    columns = set(frame.columns)
    missing, extra = set(TRANSACTION_COLUMNS) - columns, columns - set(TRANSACTION_COLUMNS)
    if missing and extra:
        found.add("renamed_column")
    elif missing:
        found.add("missing_column")
    elif extra:
        found.add("extra_column")
    if len(frame) == 0:
        found.add("no_rows")
    typed: dict[str, pd.Series] = {}
    for name, dtype in TRANSACTION_COLUMNS.items():
        if name not in frame:
            continue
        column = frame[name]
        if fmt == "parquet":
            if str(column.dtype) != dtype:
                found.add("wrong_type")
                continue
            typed[name] = column
            continue
        text = column.dropna()
        if dtype == "float64":
            parsed = pd.to_numeric(text, errors="coerce")
            if parsed.isna().any():
                found.add("wrong_type")
                continue
            typed[name] = pd.to_numeric(column)
        elif dtype.startswith("datetime"):
            typed[name] = pd.to_datetime(column, utc=True, format="ISO8601")
        else:
            typed[name] = column
    if any(column.isna().any() for column in typed.values()):
        found.add("null_required")
    if "amount" in typed:
        amount = typed["amount"].dropna()
        if not amount.between(AMOUNT_MIN, AMOUNT_MAX).all():
            found.add("out_of_range_amount")
    for name, vocabulary in (
        ("channel", CHANNELS),
        ("customer_age_band", AGE_BANDS),
        ("customer_region", REGIONS),
    ):
        if name in typed and not typed[name].dropna().isin(vocabulary).all():
            found.add("unknown_category")
    if "transaction_id" in typed and typed["transaction_id"].dropna().duplicated().any():
        found.add("duplicate_ids")
    if "event_timestamp" in typed:
        ts = typed["event_timestamp"].dropna()
        start = pd.Timestamp(day, tz="UTC")
        if (ts >= start + pd.Timedelta(days=1)).any() or (ts > pd.Timestamp(now or datetime.now(UTC))).any():
            found.add("future_timestamps")
        if (ts < start).any():
            found.add("before_the_batch_day")
    return found


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_the_good_batch_breaks_no_rule(good: pd.DataFrame, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"transactions_2026-01-01.{fmt}"
    write_frame(good, path, fmt)
    assert violations(path, fmt, now=datetime(2026, 1, 2, tzinfo=UTC)) == set()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_each_bad_kind_breaks_exactly_its_rule(
    good: pd.DataFrame, tmp_path: Path, kind: str, fmt: str
) -> None:
    path = tmp_path / f"transactions_2026-01-01_bad-{kind}.{fmt}"
    write_bad_batch(kind, good, path, fmt, np.random.default_rng(0))
    # "now" on the batch day: every event up to its end is in the past, only the moved ones are not
    assert violations(path, fmt, now=datetime(2026, 1, 2, tzinfo=UTC)) == EXPECTED[kind]


# The columns each kind may change; every other value stays as in the good batch.
TOUCHED = {
    "wrong_type": {"amount"},
    "null_required": {"customer_id", "amount"},
    "out_of_range_amount": {"amount"},
    "unknown_category": {"channel", "customer_age_band"},
    "future_timestamps": {"event_timestamp"},
    "duplicate_ids": {"transaction_id"},
}


@pytest.mark.parametrize("kind", list(BAD_KINDS))
def test_bad_batches_are_mild_outside_their_rule(good: pd.DataFrame, kind: str) -> None:
    bad = make_bad_batch(kind, good, np.random.default_rng(1), "parquet")
    if isinstance(bad, bytes):
        assert kind in ("empty_file", "truncated_file")
        return
    if kind == "duplicate_ids":
        assert len(good) < len(bad) <= 1.02 * len(good)
        bad = bad.drop_duplicates(ignore_index=True)  # the re-sent copies
    assert len(bad) == len(good)
    common = [c for c in good.columns if c in bad.columns]
    assert len(common) >= len(good.columns) - 1
    for column in common:
        changed = (bad[column].astype(object) != good[column].astype(object)).mean()
        if column not in TOUCHED.get(kind, set()):
            assert changed == 0, column
        elif kind != "wrong_type":
            assert 0 < changed <= 0.1, column


def test_the_kinds_are_listed_with_one_line_descriptions() -> None:
    assert len(BAD_KINDS) >= 10
    assert set(MAKERS) == set(BAD_KINDS)
    for kind, description in BAD_KINDS.items():
        assert kind.isidentifier() and description and "\n" not in description


def test_details_of_some_kinds(good: pd.DataFrame) -> None:
    rng = np.random.default_rng(3)
    out = make_bad_batch("out_of_range_amount", good, rng)
    assert (out["amount"] < 0).any() and (out["amount"] > AMOUNT_MAX).any()
    wrong = make_bad_batch("wrong_type", good, rng)
    assert wrong["amount"].str.fullmatch(r"\d+,\d\d EUR").all()
    nulls = make_bad_batch("null_required", good, rng)
    assert 0.005 < nulls["customer_id"].isna().mean() < 0.06 and nulls["amount"].isna().any()
    unknown = make_bad_batch("unknown_category", good, rng)
    assert (unknown["channel"] == "telepathy").any() and (unknown["customer_age_band"] == "0-17").any()
    dup = make_bad_batch("duplicate_ids", good, rng)
    assert dup["transaction_id"].duplicated().any() and dup.duplicated().any()  # re-sent and conflicting
    missing = make_bad_batch("missing_column", good, rng)
    assert len(missing.columns) == len(TRANSACTION_COLUMNS) - 1
    assert make_bad_batch("empty_file", good, rng) == b""


def test_future_timestamps_are_in_the_future_for_the_wall_clock_too(good: pd.DataFrame) -> None:
    now = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)
    bad = make_bad_batch("future_timestamps", good, np.random.default_rng(0))
    moved = bad["event_timestamp"] > pd.Timestamp(DAY, tz="UTC") + pd.Timedelta(days=1)
    assert 0.01 < moved.mean() < 0.1
    assert (bad.loc[moved, "event_timestamp"] > pd.Timestamp(now) + pd.Timedelta(days=2)).all()
    fixed = MAKERS["future_timestamps"](good, np.random.default_rng(0), "parquet", now=now)
    again = MAKERS["future_timestamps"](good, np.random.default_rng(0), "parquet", now=now)
    pd.testing.assert_frame_equal(fixed, again)


@pytest.mark.parametrize("kind", [k for k in BAD_KINDS if k != "future_timestamps"])
def test_bad_batches_are_deterministic(good: pd.DataFrame, kind: str) -> None:
    a, b = (make_bad_batch(kind, good, np.random.default_rng(5)) for _ in range(2))
    if isinstance(a, bytes):
        assert a == b
    else:
        pd.testing.assert_frame_equal(a, b)


def test_unknown_kind_names_the_valid_ones(good: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="valid kinds: missing_column, renamed_column"):
        make_bad_batch("gremlins", good, np.random.default_rng(0))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_cli_writes_the_bad_batch_next_to_the_first_day(tmp_path: Path, fmt: str) -> None:
    parser = argparse.ArgumentParser(prog="loopline")
    simulate_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    argv = ["simulate", "--days", "2", "--customers", "100", "--out", str(tmp_path), "--bad", "duplicate_ids",
            "--format", fmt, "--quiet"]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    bad = tmp_path / "transactions" / f"transactions_2026-01-01_bad-duplicate_ids.{fmt}"
    assert violations(bad, fmt, now=datetime(2026, 1, 2, tzinfo=UTC)) == {"duplicate_ids"}
    good_file = tmp_path / "transactions" / f"transactions_2026-01-01.{fmt}"
    assert violations(good_file, fmt, now=datetime(2026, 1, 2, tzinfo=UTC)) == set()
    assert not (tmp_path / "transactions" / f"transactions_2026-01-02_bad-duplicate_ids.{fmt}").exists()
