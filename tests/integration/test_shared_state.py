"""Shared state where tasks share no disk: files in object storage (a real S3 API: moto's server) and the
ingest ledger, watermark and locks in Postgres — and the same calls on the local disk (embedded mode)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from local_servers import PG_USER, postgres_server, s3_server

from loopline.config import Settings
from loopline.data.batch_files import write_frame
from loopline.data.ingest import IngestLedger, ingest_file
from loopline.features.intervals import pending_interval
from loopline.storage.files import SharedFiles, StorageError
from loopline.storage.state_db import read_watermark, shared_lock, write_watermark
from loopline.usecases.fraud.simulator import SimulationConfig, simulate


@pytest.fixture(scope="module")
def s3_endpoint():
    with s3_server("loopline") as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as port:
        yield f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres"


# --- files ------------------------------------------------------------------------------------------


def test_on_the_local_disk_a_shared_file_is_written_in_place_and_read_from_where_it_is(tmp_path):
    files = SharedFiles.of(Settings(state_dir=tmp_path / "state"))
    assert files.is_local and files.root == (tmp_path / "state").as_uri()
    with files.writing("holdouts", "run_1", "holdout.parquet") as path:
        assert (
            path == tmp_path / "state" / "holdouts" / "run_1" / "holdout.parquet"
        )  # no copy: the file itself
        path.write_bytes(b"rows")
    uri = files.uri("holdouts", "run_1", "holdout.parquet")
    with files.reading(uri) as read:
        assert read == path
    with files.reading(str(path)) as read:  # plain paths (what older runs handed over) still read
        assert read.read_bytes() == b"rows"
    assert files.put(path, "holdouts", "run_1", "holdout.parquet") == uri  # already there: nothing copied
    assert files.files_under("holdouts", "run_1") == [uri]
    files.remove(uri)
    files.remove(uri)  # idempotent
    assert not files.exists(uri)


def test_a_local_path_written_on_another_host_fails_with_what_to_set(tmp_path):
    files = SharedFiles.of(Settings(state_dir=tmp_path / "state"))
    with (
        pytest.raises(StorageError, match="LOOPLINE_STORAGE_URL"),
        files.reading("/elsewhere/holdout.parquet"),
    ):
        pass


@pytest.mark.parametrize(("url", "why"), [("gs://bucket", "not supported"), ("s3://", "names no bucket")])
def test_an_unsupported_storage_url_is_refused_with_what_to_use(url, why):
    with pytest.raises(StorageError, match=why):
        SharedFiles(url)


def test_keys_cannot_escape_the_root(tmp_path):
    files = SharedFiles((tmp_path / "state").as_uri())
    with pytest.raises(StorageError, match=r"without '\.\.'"):
        files.uri("reports", "../../etc/passwd")


def test_in_object_storage_files_round_trip_through_the_s3_api(s3_endpoint, tmp_path):
    files = SharedFiles.of(
        Settings(
            state_dir=tmp_path / "state", storage_url="s3://loopline/team-a", storage_endpoint_url=s3_endpoint
        )
    )
    assert not files.is_local
    frame = pd.DataFrame({"transaction_id": ["t1", "t2"], "amount": [1.5, 2.5]})
    with files.writing("holdouts", "run_1", "holdout.parquet") as path:
        assert not str(path).startswith(
            str(tmp_path / "state")
        )  # a private temporary file, not the state dir
        frame.to_parquet(path)
    uri = files.uri("holdouts", "run_1", "holdout.parquet")
    assert uri == "s3://loopline/team-a/holdouts/run_1/holdout.parquet"
    assert files.exists(uri)
    assert not (tmp_path / "state").exists(), "nothing of it may be left on the writer's disk"
    with files.reading(uri) as local:
        pd.testing.assert_frame_equal(pd.read_parquet(local), frame)
    assert files.write_bytes(b"{}", "holdouts", "run_1", "manifest.json").endswith("/manifest.json")
    assert files.files_under("holdouts", "run_1") == [
        f"s3://loopline/team-a/holdouts/run_1/{n}" for n in ("holdout.parquet", "manifest.json")
    ]
    assert files.files_under("holdouts", "nothing-here") == []
    files.remove(uri)
    assert not files.exists(uri)


def test_a_failed_write_uploads_nothing(s3_endpoint):
    files = SharedFiles("s3://loopline/failed", s3_endpoint)
    with pytest.raises(RuntimeError, match="boom"), files.writing("reports", "half.json") as path:
        path.write_text("{")
        raise RuntimeError("boom")
    assert not files.exists(files.uri("reports", "half.json"))


def test_object_storage_errors_name_the_uri_and_what_to_check(s3_endpoint):
    missing_bucket = SharedFiles("s3://no-such-bucket", s3_endpoint)
    with pytest.raises(StorageError, match=r"s3://no-such-bucket/x\.json.*(not found|bucket)"):
        missing_bucket.write_bytes(b"x", "x.json")
    files = SharedFiles("s3://loopline", s3_endpoint)
    with pytest.raises(StorageError, match="not found"), files.reading("s3://loopline/missing.parquet"):
        pass


# --- ledger, watermark, locks in Postgres -----------------------------------------------------------


def _land(settings: Settings, frame: pd.DataFrame, name: str) -> Path:
    path = settings.state.landing / "transactions" / f"{name}.parquet"
    write_frame(frame, path, "parquet")
    return path


def test_ingest_records_its_ledger_in_postgres_and_stays_idempotent(pg_url, tmp_path):
    days = simulate(SimulationConfig(days=2, n_customers=60, seed=3)).days
    settings = Settings(state_dir=tmp_path / "state", state_db_url=pg_url)
    first = ingest_file(settings, _land(settings, days[0].transactions, "day1"))
    again = ingest_file(settings, _land(settings, days[0].transactions, "day1"))
    second = ingest_file(settings, _land(settings, days[1].transactions, "day2"))
    assert (first.status, again.status, second.status) == ("published", "already_published", "published")
    assert not settings.state.ingest_ledger.exists(), "the ledger lives in Postgres, not the state dir"
    ledger = IngestLedger.of(settings)
    assert [e["batch_id"] for e in ledger.history()] == [second.batch_id, again.batch_id, first.batch_id]
    positions = [position for position, _ in ledger.published_since(0, "transactions")]
    assert len(positions) == 2 and positions == sorted(positions)
    # Materialisation plans from the ledger: after the first position only the second batch is pending.
    pending = pending_interval(ledger, positions[0], "transactions")
    assert (
        pending is not None and pending["batches"] == [second.batch_id] and pending["cursor"] == positions[1]
    )
    assert ledger.unfinished() == []


def test_a_publish_intent_survives_in_postgres_until_finished(pg_url, tmp_path):
    from loopline.data.ingest import IngestResult

    ledger = IngestLedger(pg_url)
    result = IngestResult(
        status="published",
        kind="transactions",
        batch_id="b1",
        source="x.parquet",
        content_hash="h-intent",
        rows=1,
        published_rows=1,
        partitions=["transactions/date=2026-01-01"],
    )
    ledger.begin_publish(result, inside_landing=True)
    ledger.begin_publish(result, inside_landing=True)  # a retried intent replaces, never duplicates
    assert [(r.batch_id, inside) for r, inside in IngestLedger(pg_url).unfinished()] == [("b1", True)]
    ledger.finish_publish(result)
    assert ledger.unfinished() == []
    assert ledger.published("h-intent")["batch_id"] == "b1"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_watermark_round_trips(backend, pg_url, tmp_path):
    settings = Settings(state_dir=tmp_path / "state", state_db_url=pg_url if backend == "postgres" else None)
    local = tmp_path / "state" / "feast" / "wm.json"
    name = f"wm-{backend}-{os.getpid()}"
    assert read_watermark(settings, name, local) == {}
    write_watermark(settings, name, {"until": "2026-01-02T00:00:00+00:00", "ledger_cursor": 3}, local)
    write_watermark(settings, name, {"until": "2026-01-03T00:00:00+00:00", "ledger_cursor": 4}, local)
    assert read_watermark(settings, name, local) == {"until": "2026-01-03T00:00:00+00:00", "ledger_cursor": 4}
    assert local.exists() == (backend == "sqlite")


def test_the_advisory_lock_excludes_other_holders_until_released(pg_url, tmp_path):
    settings = Settings(state_dir=tmp_path / "state", state_db_url=pg_url)
    order: list[str] = []
    held = threading.Event()

    def second() -> None:
        held.wait(10)
        with shared_lock(settings, "ingest", tmp_path / "unused.lock"):
            order.append("second acquired")

    thread = threading.Thread(target=second)
    thread.start()
    with shared_lock(settings, "ingest", tmp_path / "unused.lock"):
        held.set()
        time.sleep(0.5)  # the other holder is waiting on Postgres meanwhile
        order.append("first released")
    thread.join(10)
    assert order == ["first released", "second acquired"]
    assert not (tmp_path / "unused.lock").exists(), "with a state database no lock file is used"


def _hold_forever(url: str, state: str, ready) -> None:
    with shared_lock(
        Settings(state_dir=Path(state), state_db_url=url), "materialize", Path(state) / "x.lock"
    ):
        ready.set()
        time.sleep(600)


def test_a_crashed_holder_never_leaves_the_lock_stuck(pg_url, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(pg_url, str(tmp_path), ready))
    holder.start()
    assert ready.wait(60), "the holder never got the lock"
    holder.kill()  # no release: the server drops the lock with the dead connection
    holder.join(10)
    started = time.monotonic()
    with shared_lock(Settings(state_dir=tmp_path, state_db_url=pg_url), "materialize", tmp_path / "x.lock"):
        pass
    assert time.monotonic() - started < 15
