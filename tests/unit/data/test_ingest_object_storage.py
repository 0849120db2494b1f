"""Write–audit–publish with the landing zone, curated store, archive, quarantine and reports on object
storage (``LOOPLINE_STORAGE_URL=s3://...``; a real S3 API: moto's server): the same outcomes as on the
local disk, nothing of it on the ingesting worker's disk, and the publish still crash-safe."""

from __future__ import annotations

import itertools
import json

import pandas as pd
import pytest
from local_servers import s3_server
from test_ingest_safety import STEP_COUNT, Crash, _crash_after

from loopline.config import Settings
from loopline.data.ingest import (
    BatchGone,
    IngestLedger,
    existing_keys,
    ingest_file,
    landed_files,
    publish,
    visible_partition_files,
)
from loopline.storage.files import as_path, is_remote, read_parquet
from loopline.usecases.fraud.simulator import SimulationConfig, simulate

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def endpoint():
    with s3_server("loopline") as url:
        yield url


@pytest.fixture(scope="module")
def simulation():
    return simulate(SimulationConfig(days=3, n_customers=40, seed=5))


@pytest.fixture
def settings(endpoint, state_dir) -> Settings:
    # A fresh prefix per test: the bucket is shared by the module's tests.
    return Settings(
        state_dir=state_dir, storage_url=f"s3://loopline/t{next(_prefixes)}", storage_endpoint_url=endpoint
    )


def _land(settings: Settings, frame: pd.DataFrame, name: str, kind: str = "transactions"):
    path = settings.state.landing / kind / f"{name}.parquet"
    with path.open("wb") as handle:
        frame.to_parquet(handle, index=False)
    return path


def _curated(settings: Settings) -> pd.DataFrame:
    files = visible_partition_files(settings.state.curated / "transactions")
    return pd.concat([read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def _local_files(settings: Settings) -> list[str]:
    return [str(p) for p in (settings.state.root / "data").rglob("*") if p.is_file() and p.suffix != ".db"]


def test_a_batch_landed_in_object_storage_is_published_there_and_nothing_stays_on_the_worker(
    settings, simulation
):
    assert is_remote(settings.state.curated) and str(settings.state.curated).startswith("s3://loopline/t")
    day = pd.concat([d.transactions for d in simulation.days[:2]], ignore_index=True)
    path = _land(settings, day, "two_days")
    assert landed_files(settings) == [path]
    result = ingest_file(settings, str(path))  # as the DAG hands it over: text
    assert result.status == "published", result.summary()
    assert sorted(_curated(settings)["transaction_id"]) == sorted(day["transaction_id"])
    assert len(result.partitions) == 2
    assert landed_files(settings) == [] and not path.exists(), "the landing zone is a queue"
    assert as_path(settings, result.stored_at).read_bytes(), "the landed bytes are archived in object storage"
    assert (
        result.report.startswith("s3://")
        and json.loads(as_path(settings, result.report).read_text()) == result.to_dict()
    )
    assert _local_files(settings) == [], "curated, archive and reports are not on the worker's disk"

    again = ingest_file(settings, _land(settings, day, "two_days"))
    assert again.status == "already_published"
    assert len(_curated(settings)) == len(day)


def test_a_bad_batch_is_quarantined_in_object_storage_with_its_report(settings, simulation):
    bad = simulation.days[0].transactions.drop(columns=["amount"])
    path = _land(settings, bad, "no_amount")
    result = ingest_file(settings, path)
    assert result.status == "quarantined"
    assert [f["expectation"] for f in result.failures] == ["expect_table_columns_to_match_set"], (
        result.failures
    )
    kept = as_path(settings, result.stored_at)
    assert str(kept).startswith(str(settings.state.quarantine)) and kept.exists()
    report = as_path(settings, result.report)
    assert json.loads(report.read_text())["status"] == "quarantined"
    assert report.with_name("report.html").exists()
    assert _curated(settings).empty and not path.exists()


@pytest.mark.parametrize("k", range(1, STEP_COUNT + 1))
def test_killed_after_any_publish_step_a_rerun_publishes_exactly_the_batch(
    settings, simulation, monkeypatch, k
):
    frame = pd.concat([d.transactions for d in simulation.days[:3]], ignore_index=True)
    seed = frame.iloc[:20]
    publish(settings, seed, "transactions", "seed_batch")
    path = _land(settings, frame, "three_days")
    calls: list[str] = []
    _crash_after(monkeypatch, k, calls)
    with pytest.raises(Crash):
        ingest_file(settings, path)
    # Renames on object storage are copies then deletes: the batch stays hidden until all are in place.
    seen = existing_keys(settings, "transactions") - set(seed["transaction_id"])
    fresh = set(frame["transaction_id"]) - set(seed["transaction_id"])
    assert seen == (fresh if "_move_or_copy" in calls else set())
    monkeypatch.undo()
    try:
        ingest_file(settings, path)
    except BatchGone:
        assert calls[-1] == "finish_publish"
    curated = _curated(settings)
    assert curated["transaction_id"].is_unique and set(curated["transaction_id"]) == set(
        frame["transaction_id"]
    )
    assert not list(settings.state.curated.rglob("*.staged")), "no staged object left"
    ledger = IngestLedger.of(settings)
    assert ledger.unfinished() == []
    entries = [r for _, r in ledger.published_since(0, "transactions") if r["source"] == str(path)]
    assert len(entries) == 1 and entries[0]["duplicates_skipped"] == 20
    assert all((settings.state.curated / p).exists() for p in entries[0]["partitions"])


def test_simulated_days_and_a_bad_batch_land_in_object_storage_and_ingest_from_there(settings):
    from loopline.usecases.fraud.simulator import write_run

    summary = write_run(
        SimulationConfig(days=2, n_customers=30, seed=9),
        settings.state.landing,
        fmt="csv",
        bad="missing_column",
    )
    landed = landed_files(settings)
    assert {str(p) for p in landed} >= {*summary["transaction_files"], summary["bad_file"]}
    assert len(landed) == len(summary["transaction_files"]) + 1 + summary["label_files"]
    assert all(str(p).startswith("s3://") for p in landed)
    results = {str(p): ingest_file(settings, p) for p in landed}
    assert results[summary["bad_file"]].status == "quarantined"
    assert all(r.status == "published" for k, r in results.items() if k != summary["bad_file"])
    assert landed_files(settings) == []


def test_with_a_folder_per_task_a_local_file_another_task_wrote_is_refused(settings, monkeypatch, tmp_path):
    """The guard the distributed profile relies on: inside a task, a local path outside the task's own folder
    (what another task left on its disk) is refused with what to do instead, whichever worker ran the writer."""
    from loopline.config import get_settings
    from loopline.storage.files import StorageError, check_local_read
    from loopline.training.data import TrainingError, read_training_set

    for key, value in {
        "LOOPLINE_STATE_DIR": str(settings.state.root),
        "LOOPLINE_STORAGE_URL": settings.storage_url,
        "LOOPLINE_STORAGE_ENDPOINT_URL": settings.storage_endpoint_url,
        "LOOPLINE_TASK_SCRATCH": "per-task",
        "AIRFLOW_CTX_DAG_ID": "train_model",
        "AIRFLOW_CTX_DAG_RUN_ID": "manual__1",
        "AIRFLOW_CTX_TRY_NUMBER": "1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "build_holdout")
    written = get_settings().state.root / "training" / "holdout.parquet"
    written.parent.mkdir(parents=True)
    written.write_bytes(b"PAR1")
    check_local_read(written)  # the writer may read its own file
    monkeypatch.setenv("AIRFLOW_CTX_TASK_ID", "gate_candidate")
    with pytest.raises(StorageError, match="another task wrote it.*LOOPLINE_STORAGE_URL"):
        check_local_read(written)
    with pytest.raises(TrainingError, match="outside this task's own folder"):
        read_training_set(written)
    with pytest.raises(StorageError, match="another task wrote it"):
        ingest_file(get_settings(), str(written))
    monkeypatch.delenv("AIRFLOW_CTX_TASK_ID")
    check_local_read(written)  # outside a task (the CLI) nothing is refused
