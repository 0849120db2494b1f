"""`loopline ingest FILE [--json]`: exit 0 when published, non-zero when quarantined, JSON last line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loopline.cli.main import main
from loopline.config import Settings
from loopline.data.batch_files import write_frame
from loopline.usecases.fraud.simulator import SimulationConfig, simulate, write_bad_batch


def _day():
    return simulate(SimulationConfig(days=1, n_customers=150, seed=3)).days[0].transactions


def test_ingest_json_published_then_already_published(state_dir, capsys):
    settings = Settings(state_dir=state_dir)
    path = settings.state.landing / "transactions" / "day.parquet"
    day = _day()
    write_frame(day, path, "parquet")
    assert main(["ingest", str(path), "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["status"] == "published" and first["rows"] == len(day) and first["failures"] == []
    assert {"batch_id", "report"} <= set(first)
    write_frame(day, path, "parquet")
    assert main(["ingest", str(path), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["status"] == "already_published" and again["batch_id"] == first["batch_id"]


def test_ingest_json_quarantined_exits_non_zero_with_failures(state_dir, capsys):
    settings = Settings(state_dir=state_dir)
    path = settings.state.landing / "transactions" / "bad.parquet"
    write_bad_batch("out_of_range_amount", _day(), path, "parquet", np.random.default_rng(1))
    assert main(["ingest", str(path), "--json"]) != 0
    captured = capsys.readouterr()
    outcome = json.loads(captured.out.strip().splitlines()[-1])
    assert outcome["status"] == "quarantined"
    failure = outcome["failures"][0]
    assert {"expectation", "column", "count", "sample"} <= set(failure) and failure["column"] == "amount"
    assert "quarantined" in captured.err  # the human summary goes to stderr with --json


def test_ingest_of_a_missing_file_is_a_plain_error(state_dir, capsys):
    try:
        main(["ingest", str(state_dir / "nope.parquet")])
    except SystemExit as exc:
        assert "does not exist" in str(exc)
    else:
        raise AssertionError("expected SystemExit")


def test_ingest_with_a_kind_the_use_case_does_not_land_names_the_ones_it_does(state_dir, tmp_path, capsys):
    batch = tmp_path / "batch.parquet"
    batch.write_bytes(b"not read")
    with pytest.raises(SystemExit) as error:
        main(["ingest", str(batch), "--kind", "orders"])
    assert (
        str(error.value) == "error: unknown batch kind 'orders': use case 'fraud' lands transactions, labels"
    )
