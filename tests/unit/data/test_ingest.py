"""Write–audit–publish on simulated batches: good data publishes once, every bad kind is quarantined."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.config import Settings
from loopline.data.batch_files import write_frame
from loopline.data.ingest import (
    BatchGone,
    IngestLedger,
    existing_keys,
    ingest_file,
    landed_files,
)
from loopline.usecases.fraud.simulator import BAD_KINDS, SimulationConfig, simulate, write_bad_batch


@pytest.fixture(scope="module")
def simulation():
    # 10 days so that label batches (genuine labels mature after ~7 days) exist too.
    return simulate(SimulationConfig(days=10, n_customers=300, seed=7))


@pytest.fixture
def settings(state_dir: Path) -> Settings:
    return Settings(state_dir=state_dir)


def _land(
    settings: Settings, frame: pd.DataFrame, name: str, kind: str = "transactions", fmt: str = "parquet"
):
    path = settings.state.landing / kind / f"{name}.{fmt}"
    write_frame(frame, path, fmt)
    return path


def _curated(settings: Settings, kind: str = "transactions") -> pd.DataFrame:
    files = sorted((settings.state.curated / kind).glob("date=*/*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def test_a_good_batch_is_published_partitioned_by_day_and_archived(settings, simulation):
    day = simulation.days[0].transactions
    path = _land(settings, day, "transactions_2026-01-01")
    result = ingest_file(settings, path)
    assert result.status == "published", result.summary()
    assert result.rows == result.published_rows == len(day)
    assert result.failures == []
    curated = _curated(settings)
    assert sorted(curated["transaction_id"]) == sorted(day["transaction_id"])
    # Contract types survive the round trip.
    assert str(curated["event_timestamp"].dtype) == "datetime64[us, UTC]"
    days = {p.split("/")[1] for p in result.partitions}
    assert days == {f"date={d}" for d in day["event_timestamp"].dt.strftime("%Y-%m-%d").unique()}
    assert not path.exists(), "a processed file must leave the landing zone"
    assert Path(result.stored_at).read_bytes(), "the landed bytes are archived"
    assert json.loads(Path(result.report).read_text())["status"] == "published"


def test_redelivery_and_overlapping_batches_never_duplicate_rows(settings, simulation):
    day = simulation.days[1].transactions
    first = ingest_file(settings, _land(settings, day, "day2"))
    again = ingest_file(settings, _land(settings, day, "day2"))  # the very same bytes again
    assert (first.status, again.status) == ("published", "already_published")
    # Different bytes, overlapping rows: half old, half new.
    nxt = simulation.days[2].transactions
    mixed = pd.concat([day.iloc[: len(day) // 2], nxt], ignore_index=True)
    third = ingest_file(settings, _land(settings, mixed, "mixed"))
    assert third.status == "published"
    assert third.duplicates_skipped == len(day) // 2
    assert third.published_rows == len(nxt)
    assert any(w["expectation"] == "rows_not_yet_published" for w in third.warnings)
    curated = _curated(settings)
    assert curated["transaction_id"].is_unique
    assert len(curated) == len(day) + len(nxt)
    ledger = IngestLedger(settings.state.ingest_ledger).history()
    assert [h["status"] for h in ledger] == ["published", "already_published", "published"]


def test_csv_batches_publish_with_contract_types(settings, simulation):
    day = simulation.days[3].transactions
    result = ingest_file(settings, _land(settings, day, "as_csv", fmt="csv"))
    assert result.status == "published", result.summary()
    curated = _curated(settings)
    assert str(curated["event_timestamp"].dtype).startswith("datetime64")
    assert curated["amount"].dtype == np.float64
    assert np.allclose(np.sort(curated["amount"]), np.sort(day["amount"]))


def test_label_batches_publish_into_the_labels_table(settings, simulation):
    labels = next(d.labels for d in simulation.days if len(d.labels))
    result = ingest_file(settings, _land(settings, labels, "labels_x", kind="labels"))
    assert result.status == "published", result.summary()
    assert result.kind == "labels"
    assert existing_keys(settings, "labels") == set(labels["transaction_id"])


@pytest.mark.parametrize("bad_kind", sorted(BAD_KINDS))
def test_every_bad_kind_is_quarantined_and_nothing_reaches_the_curated_store(settings, simulation, bad_kind):
    good = simulation.days[0].transactions
    path = settings.state.landing / "transactions" / f"transactions_2026-01-01_bad-{bad_kind}.parquet"
    write_bad_batch(bad_kind, good, path, "parquet", np.random.default_rng(3))
    original = path.read_bytes()
    result = ingest_file(settings, path)
    assert result.status == "quarantined", f"{bad_kind} was not caught: {result.summary()}"
    assert result.failures and all(f["severity"] == "critical" for f in result.failures)
    assert all(f["message"] for f in result.failures)
    assert not (settings.state.curated / "transactions").exists() or _curated(settings).empty
    kept = Path(result.stored_at)
    assert kept.read_bytes() == original, "the quarantined file must be kept byte for byte"
    assert not path.exists()
    folder = kept.parent
    report = json.loads((folder / "report.json").read_text())
    assert report["status"] == "quarantined" and report["failures"] == result.failures
    assert "quarantined" in (folder / "report.html").read_text()


@pytest.mark.parametrize(
    ("bad_kind", "expectation", "column"),
    [
        ("missing_column", "expect_table_columns_to_match_set", None),
        ("wrong_type", "expect_column_values_to_be_in_type_list", "amount"),
        ("null_required", "expect_column_values_to_not_be_null", "customer_id"),
        ("out_of_range_amount", "expect_column_values_to_be_between", "amount"),
        ("unknown_category", "expect_column_values_to_be_in_set", "channel"),
        ("duplicate_ids", "expect_column_values_to_be_unique", "transaction_id"),
        ("future_timestamps", "expect_column_max_to_be_between", "event_timestamp"),
        ("empty_file", "file_is_a_readable_batch", None),
        ("truncated_file", "file_is_a_readable_batch", None),
    ],
)
def test_failures_name_the_expectation_column_count_and_sample(
    settings, simulation, bad_kind, expectation, column
):
    path = settings.state.landing / "transactions" / f"bad-{bad_kind}.parquet"
    write_bad_batch(bad_kind, simulation.days[0].transactions, path, "parquet", np.random.default_rng(5))
    result = ingest_file(settings, path)
    matching = [f for f in result.failures if f["expectation"] == expectation and f["column"] == column]
    assert matching, f"{bad_kind}: expected a failure of {expectation} on {column}, got {result.failures}"
    failure = matching[0]
    if expectation in (
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_unique",
    ):
        assert failure["count"] and failure["count"] > 0
    if expectation in ("expect_column_values_to_be_between", "expect_column_values_to_be_in_set"):
        assert failure["sample"], "a sample of the bad values helps a person fix the source"
    summary = result.summary()
    assert expectation in summary and (column is None or column in summary)


def test_a_new_merchant_category_is_a_warning_not_a_block(settings, simulation):
    day = simulation.days[4].transactions.copy()
    day.loc[day.index[:25], "merchant_category"] = "crypto_exchange"
    result = ingest_file(settings, _land(settings, day, "new_category"))
    assert result.status == "published", result.summary()
    warned = [w for w in result.warnings if w["column"] == "merchant_category"]
    assert warned and warned[0]["count"] == 25 and "crypto_exchange" in warned[0]["sample"]


def test_a_file_outside_a_kind_folder_or_of_unknown_type_is_quarantined_not_a_crash(settings, tmp_path):
    stray = settings.state.landing / "transactions" / "notes.txt"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("hello")
    result = ingest_file(settings, stray)
    assert result.status == "quarantined" and "deliver .parquet or .csv" in result.failures[0]["message"]
    elsewhere = tmp_path / "somewhere" / "batch.parquet"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"PAR1")
    result = ingest_file(settings, elsewhere)
    assert result.status == "quarantined" and "landing/transactions" in result.failures[0]["message"]
    assert elsewhere.exists(), "a file handed in from outside the landing zone is copied, never taken"


def test_a_vanished_file_is_reported_as_gone(settings):
    with pytest.raises(BatchGone):
        ingest_file(settings, settings.state.landing / "transactions" / "never_there.parquet")


def test_landed_files_ignores_in_flight_and_hidden_files(settings, simulation):
    folder = settings.state.landing / "transactions"
    folder.mkdir(parents=True)
    for name in ("a.parquet", ".hidden.parquet", "b.parquet.tmp", "c.csv.part", "d.csv"):
        (folder / name).write_text("x")
    assert sorted(p.name for p in landed_files(settings)) == ["a.parquet", "d.csv"]


def test_deduplication_reads_only_the_day_partitions_a_transaction_batch_touches(
    settings, simulation, monkeypatch
):
    import pyarrow.parquet as pq

    first, second = simulation.days[4].transactions, simulation.days[6].transactions
    assert ingest_file(settings, _land(settings, first, "day5")).status == "published"
    first_days = {f"date={d}" for d in first["event_timestamp"].dt.strftime("%Y-%m-%d")}
    opened: list[str] = []  # the day partitions of curated files read
    real_read = pq.read_table

    def read_table(source, *args, **kwargs):
        if isinstance(source, str | Path) and "curated" in Path(source).parts:
            opened.append(Path(source).parent.name)
        return real_read(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", read_table)
    # A later day, re-sending a few rows of the first: the duplicates are still caught...
    resend = pd.concat([second, first.iloc[:7]], ignore_index=True)
    result = ingest_file(settings, _land(settings, resend, "day7_plus_resend"))
    assert (result.status, result.duplicates_skipped, result.published_rows) == (
        "published",
        7,
        len(second),
    ), result.summary()
    assert _curated(settings)["transaction_id"].is_unique
    # ...while only the partitions of the batch's own days were read for ids.
    batch_days = {f"date={d}" for d in resend["event_timestamp"].dt.strftime("%Y-%m-%d")}
    assert opened and set(opened) <= batch_days
    opened.clear()
    unrelated = simulation.days[8].transactions
    assert not ({f"date={d}" for d in unrelated["event_timestamp"].dt.strftime("%Y-%m-%d")} & first_days)
    assert ingest_file(settings, _land(settings, unrelated, "day9")).published_rows == len(unrelated)
    assert not set(opened) & first_days, "a batch of other days never reads the first day's partitions"


def test_a_resent_label_is_skipped_even_when_its_label_day_changed(settings, simulation):
    labels = max((d.labels for d in simulation.days), key=len)
    assert len(labels) >= 3
    assert ingest_file(settings, _land(settings, labels, "labels_a", kind="labels")).status == "published"
    later = labels.iloc[:3].assign(label_timestamp=labels["label_timestamp"].iloc[:3] + pd.Timedelta(days=3))
    result = ingest_file(settings, _land(settings, later, "labels_b", kind="labels"))
    assert result.duplicates_skipped == 3 and result.published_rows == 0
    assert _curated(settings, "labels")["transaction_id"].is_unique
