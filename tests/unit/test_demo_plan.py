"""What ``loopline demo`` takes from the use case (its simulator's ``DemoPlan``) and the checks it makes
before and after the stack runs: one state dir per use case, exactly the broken batches quarantined."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from loopline.config import Settings
from loopline.config.use_case import SimulationRequest, available_use_cases, load_use_case
from loopline.demo import DemoFailed, check_quarantined, claim_state_dir


@pytest.mark.parametrize("name", available_use_cases())
def test_each_use_case_plans_a_demo_whose_live_drift_moves_inputs_within_the_contract(
    name: str, tmp_path: Path
) -> None:
    use_case = load_use_case(name)
    simulator = use_case.load_simulator()
    plan = simulator.demo
    summary = simulator.write(
        SimulationRequest(out=tmp_path, days=2, start=date(2026, 3, 2), seed=3, options=plan.options)
    )
    written = sorted(p for p in tmp_path.rglob("*.*") if p.is_file())
    assert summary["files"] == len(written)
    assert all(Path(f).is_file() for f in summary["bad_files"])

    events_dir = tmp_path / use_case.batch_names["events"]
    good = [p for p in sorted(events_dir.iterdir()) if str(p) not in summary["bad_files"]]
    events = pd.read_parquet(good[0]).to_dict("records")
    drifted = [plan.live_drift(dict(event)) for event in events]
    assert [set(e) for e in drifted] == [set(e) for e in events]  # the same columns: still valid requests
    assert all(d[use_case.id_column] == e[use_case.id_column] for d, e in zip(drifted, events, strict=True))
    changed = {
        c for c in use_case.event_columns if any(d[c] != e[c] for d, e in zip(drifted, events, strict=True))
    }
    assert changed and not changed & set(use_case.group_columns)  # inputs move, groups do not
    assert plan.days > 0 and plan.epochs > 0 and plan.live_drift_description


def test_a_state_dir_serves_one_use_case(tmp_path: Path) -> None:
    fraud = Settings(state_dir=tmp_path, use_case="fraud")
    claim_state_dir(fraud)
    claim_state_dir(fraud)  # the same use case again: fine
    with pytest.raises(
        DemoFailed, match="holds the 'fraud' use case's data, not 'delivery'.*LOOPLINE_STATE_DIR"
    ):
        claim_state_dir(Settings(state_dir=tmp_path, use_case="delivery"))
    claim_state_dir(Settings(state_dir=tmp_path / "other", use_case="delivery"))


def test_exactly_the_broken_batches_must_be_quarantined() -> None:
    bad = ["/landing/transactions/transactions_2026-03-02_bad-duplicate_ids.parquet"]
    check_quarantined(
        [{"batch_id": "transactions__transactions_2026-03-02_bad-duplicate_ids__1a2b3c4d5e6f"}], bad
    )
    check_quarantined([], [])
    with pytest.raises(DemoFailed, match="expected exactly the broken batches"):
        check_quarantined([], bad)
    with pytest.raises(DemoFailed, match="got \\['orders__orders_2026-03-02__9f'\\]"):
        check_quarantined([{"batch_id": "orders__orders_2026-03-02__9f"}], [])
