"""Ingest safety (issue 19): the landing zone refuses links and escapes without reading them, and a
publish is crash-safe — killed after any of its steps, a rerun publishes exactly the batch's rows and
the ledger announces every day it touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_ingest import _curated, _land

import loopline.data.ingest as ingest
from loopline.config import Settings
from loopline.config.use_case import load_use_case
from loopline.data.batch_files import write_frame
from loopline.data.ingest import (
    BatchGone,
    IngestLedger,
    existing_keys,
    ingest_file,
    is_batch_candidate,
    landed_files,
    publish,
    staged_path,
)
from loopline.features.curated import read_curated_event_frame
from loopline.features.intervals import pending_interval
from loopline.usecases.fraud.simulator import SimulationConfig, simulate

SECRET = "hunter2-do-not-leak"


@pytest.fixture(scope="module")
def simulation():
    return simulate(SimulationConfig(days=4, n_customers=40, seed=11))


@pytest.fixture
def settings(state_dir: Path) -> Settings:
    return Settings(state_dir=state_dir)


def _days(frame: pd.DataFrame) -> set[str]:
    return set(frame["event_timestamp"].dt.strftime("%Y-%m-%d"))


def _nothing_under(root: Path, text: str) -> bool:
    return all(
        text.encode() not in f.read_bytes() for f in root.rglob("*") if f.is_file() and not f.is_symlink()
    )


# --- the landing zone takes files, not links -------------------------------------------------------


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    secret = tmp_path / "project" / ".loopline" / "run" / "secrets.json"
    secret.parent.mkdir(parents=True)
    secret.write_text(json.dumps({"airflow_password": SECRET}))
    return secret


def test_a_link_in_the_landing_zone_is_refused_unread_reported_and_taken_out_of_the_queue(
    settings, secrets_file, monkeypatch
):
    link = settings.state.landing / "transactions" / "batch.parquet"
    link.parent.mkdir(parents=True)
    link.symlink_to(secrets_file)
    assert landed_files(settings) == [link], "a link is listed, so that it is refused and reported"
    hashed: list[Path] = []
    monkeypatch.setattr(ingest, "sha256_file", lambda p: hashed.append(Path(p)) or "0" * 64)

    result = ingest_file(settings, link)
    assert result.status == "quarantined" and result.rows == 0
    assert [f["expectation"] for f in result.failures] == ["file_is_inside_the_landing_zone"]
    assert "symbolic link" in result.failures[0]["message"] and "not read" in result.failures[0]["message"]
    assert "file_is_inside_the_landing_zone" in result.summary()
    # Not read, not copied anywhere: the quarantine folder holds the reports and nothing else.
    assert hashed == [] and result.stored_at is None and result.content_hash == ""
    folder = Path(result.report).parent
    assert folder.parent == settings.state.quarantine
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json"]
    assert _nothing_under(settings.state.root, SECRET)
    # The link (only) is out of the queue; what it pointed to is untouched.
    assert not link.is_symlink() and landed_files(settings) == []
    assert SECRET in secrets_file.read_text()
    ledger = IngestLedger(settings.state.ingest_ledger).history()
    assert [(h["status"], h["failures"][0]["expectation"]) for h in ledger] == [
        ("quarantined", "file_is_inside_the_landing_zone")
    ]


def test_links_to_good_batches_dangling_links_and_links_inside_the_zone_are_refused_too(
    settings, simulation, tmp_path
):
    good = tmp_path / "elsewhere" / "good.parquet"
    good.parent.mkdir()
    write_frame(simulation.days[0].transactions, good, "parquet")
    folder = settings.state.landing / "transactions"
    folder.mkdir(parents=True)
    (folder / ".real.parquet").write_bytes(good.read_bytes())  # hidden: not a candidate itself
    (folder / "to_good.parquet").symlink_to(good)
    (folder / "dangling.parquet").symlink_to(tmp_path / "not_there.parquet")
    (folder / "inside.parquet").symlink_to(folder / ".real.parquet")
    assert all(is_batch_candidate(p) for p in folder.iterdir() if not p.name.startswith("."))
    listed = landed_files(settings)
    assert sorted(p.name for p in listed) == ["dangling.parquet", "inside.parquet", "to_good.parquet"]
    for path in listed:
        result = ingest_file(settings, path)
        assert result.status == "quarantined" and "symbolic link" in result.failures[0]["message"], path
        assert not path.is_symlink()
    assert not (settings.state.curated / "transactions").exists(), "nothing was published"
    assert good.is_file() and (folder / ".real.parquet").is_file()


def test_a_kind_folder_that_links_out_of_the_landing_zone_is_refused_and_its_files_left_alone(
    settings, simulation, secrets_file
):
    outside = secrets_file.parent
    write_frame(simulation.days[1].transactions, outside / "batch.parquet", "parquet")
    settings.state.landing.mkdir(parents=True)
    (settings.state.landing / "transactions").symlink_to(outside, target_is_directory=True)
    listed = landed_files(settings)
    assert sorted(p.name for p in listed) == ["batch.parquet", "secrets.json"]
    for path in listed:
        result = ingest_file(settings, path)
        assert result.status == "quarantined" and "outside the landing zone" in result.failures[0]["message"]
        assert result.stored_at is None and path.is_file(), "not moved, copied nor deleted"
    assert _nothing_under(settings.state.root, SECRET)
    assert not (settings.state.curated / "transactions").exists()


def test_files_named_from_outside_the_landing_zone_are_still_copied_as_before(settings, simulation, tmp_path):
    handed_in = tmp_path / "handed_in" / "transactions_2026-01-02.parquet"
    write_frame(simulation.days[1].transactions, handed_in, "parquet")
    result = ingest_file(settings, handed_in, kind="transactions")
    assert result.status == "published" and handed_in.is_file()


def test_a_source_swapped_for_a_link_is_not_followed_when_moved(tmp_path, secrets_file):
    link = tmp_path / "landing" / "b.parquet"
    link.parent.mkdir()
    link.symlink_to(secrets_file)
    with pytest.raises(ingest.UnreadableBatch, match="symbolic link"):
        ingest._move_or_copy(link, tmp_path / "quarantine" / "b.parquet", inside_landing=False)
    assert not (tmp_path / "quarantine" / "b.parquet").exists()


# --- crash-safe publish ------------------------------------------------------------------------------

# The publish steps of ``ingest_file``, in order; the batch below touches three days, so: 3 staged
# partitions, the intent, 3 renames, the archive move, the report, the ledger row.
STEPS = (
    "stage_partition",
    "begin_publish",
    "promote_partition",
    "_move_or_copy",
    "_write_reports",
    "finish_publish",
)
STEP_COUNT = 10


class Crash(BaseException):
    """Stands for the process dying: no ``except Exception`` in the code under test catches it."""


def _crash_after(monkeypatch, k: int | None, calls: list[str]) -> None:
    """Make the ``k``-th publish step (1-based) crash right after it did its work (None: never)."""
    for name in STEPS:
        owner = IngestLedger if name in ("begin_publish", "finish_publish") else ingest
        real = getattr(owner, name)

        def step(*args, _real=real, _name=name, **kwargs):
            out = _real(*args, **kwargs)
            calls.append(_name)
            if len(calls) == k:
                raise Crash(f"killed after step {k} ({_name})")
            return out

        monkeypatch.setattr(owner, name, step)


@pytest.fixture(scope="module")
def batch(simulation) -> dict:
    """Three days of transactions, 20 of whose rows are already curated (published before)."""
    frame = pd.concat([d.transactions for d in simulation.days[:3]], ignore_index=True)
    seed = frame.iloc[:20]
    return {
        "frame": frame,
        "seed": seed,
        "fresh_ids": set(frame["transaction_id"]) - set(seed["transaction_id"]),
        "days": _days(frame),
    }


def _prepare(settings: Settings, batch: dict) -> tuple[Path, str]:
    """The seed rows curated, the batch landed: its path and batch id."""
    publish(settings, batch["seed"], "transactions", "seed_batch")
    path = _land(settings, batch["frame"], "three_days")
    return path, ingest.batch_id_for("transactions", path, ingest.sha256_file(path))


def _check_published_exactly_once(settings: Settings, batch: dict, batch_id: str) -> dict:
    """Curated rows, the ledger row and materialisation's plan are those of one clean publish."""
    curated = _curated(settings)
    assert curated["transaction_id"].is_unique, "no row twice"
    assert set(curated["transaction_id"]) == set(batch["frame"]["transaction_id"]), "no row missing"
    assert not list(settings.state.curated.rglob(f"*{ingest.STAGED_SUFFIX}")), "no staged file left"
    ledger = IngestLedger(settings.state.ingest_ledger)
    assert ledger.unfinished() == []
    published = [r for _, r in ledger.published_since(0, "transactions") if r["batch_id"] == batch_id]
    assert len(published) == 1, published
    entry = published[0]
    assert entry["published_rows"] == len(batch["fresh_ids"]) and entry["duplicates_skipped"] == 20
    assert {p.split("date=")[1][:10] for p in entry["partitions"]} == batch["days"]
    assert all((settings.state.curated / p).is_file() for p in entry["partitions"])
    assert Path(entry["stored_at"]).is_file() and json.loads(Path(entry["report"]).read_text()) == entry
    interval = pending_interval(settings.state.ingest_ledger, 0, "transactions")
    assert interval["start"][:10] == min(batch["days"]) and batch_id in interval["batches"]
    assert pd.Timestamp(interval["end"]) == pd.Timestamp(max(batch["days"]), tz="UTC") + pd.Timedelta(days=1)
    return entry


def test_an_uninterrupted_publish_takes_exactly_the_steps_the_crash_tests_kill(settings, batch, monkeypatch):
    path, batch_id = _prepare(settings, batch)
    calls: list[str] = []
    _crash_after(monkeypatch, None, calls)
    result = ingest_file(settings, path)
    assert calls == ["stage_partition"] * 3 + ["begin_publish"] + ["promote_partition"] * 3 + [
        "_move_or_copy",
        "_write_reports",
        "finish_publish",
    ]
    assert len(calls) == STEP_COUNT
    assert result.to_dict() == _check_published_exactly_once(settings, batch, batch_id)


@pytest.mark.parametrize("k", range(1, STEP_COUNT + 1))
def test_killed_after_any_step_a_rerun_publishes_exactly_the_batch_and_announces_every_day(
    settings, batch, monkeypatch, k
):
    path, batch_id = _prepare(settings, batch)
    calls: list[str] = []
    _crash_after(monkeypatch, k, calls)
    with pytest.raises(Crash):
        ingest_file(settings, path)
    # Readers see none of the batch until every partition is in place (staged files are not *.parquet, and a
    # batch marked as publishing is left out whole), then all of it.
    seen = existing_keys(settings, "transactions") - set(batch["seed"]["transaction_id"])
    assert seen == (batch["fresh_ids"] if "_move_or_copy" in calls else set())
    # Until the ledger row is written, materialisation is not told about the batch.
    if calls[-1] != "finish_publish":
        assert IngestLedger(settings.state.ingest_ledger).published_since(0, "transactions") == []
    monkeypatch.undo()

    try:  # what the DAG's retry of the task does
        retried = ingest_file(settings, path)
    except BatchGone:
        retried = None
        assert calls[-1] == "finish_publish", "only a finished publish leaves nothing to retry"
    entry = _check_published_exactly_once(settings, batch, batch_id)
    if retried is not None:
        assert retried.to_dict() == entry, "the retry answers what the uninterrupted run would have"


@pytest.mark.parametrize("k", [4, 6, 8, 9])
def test_an_interrupted_publish_is_finished_by_the_next_ingest_of_any_batch(
    settings, batch, simulation, monkeypatch, k
):
    path, batch_id = _prepare(settings, batch)
    calls: list[str] = []
    _crash_after(monkeypatch, k, calls)
    with pytest.raises(Crash):
        ingest_file(settings, path)
    monkeypatch.undo()

    later = simulation.days[3].transactions
    other = ingest_file(settings, _land(settings, later, "day4"))
    assert (other.status, other.published_rows) == ("published", len(later)), "not deduplicated wrongly"
    ledger = IngestLedger(settings.state.ingest_ledger)
    order = [r["batch_id"] for _, r in ledger.published_since(0, "transactions")]
    assert order == [batch_id, other.batch_id], "the interrupted batch is recorded first"
    with pytest.raises(BatchGone):
        ingest_file(settings, path)  # the DAG's retry: the batch was taken (and published) already
    curated = _curated(settings)
    assert curated["transaction_id"].is_unique
    assert set(curated["transaction_id"]) == set(batch["frame"]["transaction_id"]) | set(
        later["transaction_id"]
    )
    interval = pending_interval(settings.state.ingest_ledger, 0, "transactions")
    days = sorted(batch["days"] | _days(later))
    assert (interval["start"][:10], set(interval["batches"])) == (days[0], set(order))
    assert pd.Timestamp(interval["end"]) == pd.Timestamp(days[-1], tz="UTC") + pd.Timedelta(days=1)


def test_a_publish_torn_while_staging_is_redone_from_the_source(settings, batch, monkeypatch):
    path, batch_id = _prepare(settings, batch)
    real = ingest.stage_partition
    staged: list[Path] = []

    def torn(frame, final):
        if staged:  # the second partition: half its bytes, then the process dies
            final.parent.mkdir(parents=True, exist_ok=True)
            staged_path(final).write_bytes(b"PAR1\x00\x01half a parquet file")
            raise Crash("killed while staging")
        real(frame, final)
        staged.append(final)

    monkeypatch.setattr(ingest, "stage_partition", torn)
    with pytest.raises(Crash):
        ingest_file(settings, path)
    monkeypatch.undo()
    assert len(list(settings.state.curated.rglob(f"*{ingest.STAGED_SUFFIX}"))) == 2
    assert existing_keys(settings, "transactions") == set(batch["seed"]["transaction_id"])
    ingest_file(settings, path)
    _check_published_exactly_once(settings, batch, batch_id)


def test_an_intent_whose_staged_files_were_deleted_is_rolled_back_and_redone(settings, batch, monkeypatch):
    path, batch_id = _prepare(settings, batch)
    calls: list[str] = []
    _crash_after(monkeypatch, 5, calls)  # the intent and one rename done
    with pytest.raises(Crash):
        ingest_file(settings, path)
    monkeypatch.undo()
    for orphan in settings.state.curated.rglob(f"*{ingest.STAGED_SUFFIX}"):
        orphan.unlink()  # someone "cleaned up"
    assert ingest_file(settings, path).status == "published"
    _check_published_exactly_once(settings, batch, batch_id)


def test_a_new_delivery_under_the_crashed_batchs_name_is_not_archived_as_that_batch(
    settings, batch, simulation, monkeypatch
):
    path, batch_id = _prepare(settings, batch)
    calls: list[str] = []
    _crash_after(monkeypatch, 7, calls)  # every partition in place, the source not yet archived
    with pytest.raises(Crash):
        ingest_file(settings, path)
    monkeypatch.undo()
    newer = simulation.days[3].transactions
    write_frame(newer, path, "parquet")  # the sender re-delivers other bytes under the same name
    delivered = path.read_bytes()
    result = ingest_file(settings, path)
    assert (result.status, result.published_rows) == ("published", len(newer)), result.summary()
    history = IngestLedger(settings.state.ingest_ledger).history()
    first = next(h for h in history if h["batch_id"] == batch_id)
    assert first["published_rows"] == len(batch["fresh_ids"]) and len(first["partitions"]) == 3
    assert first["stored_at"] is None, "the crashed batch's own bytes were gone: nothing to archive"
    assert Path(result.stored_at).read_bytes() == delivered, "the new delivery is archived as itself"
    assert set(_curated(settings)["transaction_id"]) == set(batch["frame"]["transaction_id"]) | set(
        newer["transaction_id"]
    )


def test_partitions_left_by_a_publish_interrupted_before_intents_existed_are_not_its_duplicates(
    settings, batch
):
    path, batch_id = _prepare(settings, batch)
    # What the old one-file-at-a-time publish left when it died before the ledger row: two of the
    # batch's three days in place under the batch's own name.
    fresh = batch["frame"][batch["frame"]["transaction_id"].isin(batch["fresh_ids"])]
    two_days = fresh[fresh["event_timestamp"].dt.strftime("%Y-%m-%d") < max(batch["days"])]
    columns = ingest.use_case_of(settings).columns_for("transactions")
    publish(settings, two_days[list(columns)], "transactions", batch_id)
    result = ingest_file(settings, path)
    assert result.published_rows == len(batch["fresh_ids"]) and len(result.partitions) == 3
    _check_published_exactly_once(settings, batch, batch_id)


CHILD = """
import os, sys
from pathlib import Path
import loopline.data.ingest as ingest
from loopline.config import Settings

real, done = ingest.promote_partition, []
def promote_then_die(*args):
    real(*args)
    done.append(args)
    if len(done) == 2:
        os._exit(17)  # no finally, no atexit, no flush: the process is simply gone
ingest.promote_partition = promote_then_die
ingest.ingest_file(Settings(state_dir=Path(sys.argv[1])), Path(sys.argv[2]))
"""


def test_a_process_killed_between_two_renames_is_finished_by_the_next_run(settings, batch):
    path, batch_id = _prepare(settings, batch)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(settings.state.root), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert child.returncode == 17, child.stderr[-2000:]
    ledger = IngestLedger(settings.state.ingest_ledger)
    assert ledger.published_since(0, "transactions") == [] and len(ledger.unfinished()) == 1
    # Two of the three partitions are in place, yet no reader sees any of the batch.
    assert len([p for p in settings.state.curated.rglob(f"{batch_id}.parquet")]) == 2
    assert existing_keys(settings, "transactions") == set(batch["seed"]["transaction_id"])
    curated = read_curated_event_frame(
        settings.state.curated, None, None, use_case=load_use_case(settings.use_case)
    )
    assert set(curated["transaction_id"]) == set(batch["seed"]["transaction_id"])
    assert ingest_file(settings, path).status == "published"
    _check_published_exactly_once(settings, batch, batch_id)
