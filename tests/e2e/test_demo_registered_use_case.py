"""`loopline demo --use-case maintenance --exit`: a third use case that is not part of Loopline's source — a
package of its own (``examples/maintenance/``) registered by one entry point and installed next to Loopline,
as a team adds its model — closes the same loop through the same platform code: its batches validated by its
own suites, its features from the Feast repo it ships, v1 trained and gated, the live drift it declares
caught, v2 retrained, gated and promoted through the canary.

Nothing here is specific to predictive maintenance: the assertions read the use case through the interface
(its model name, its folders, what its demo's live drift changes), so this file is the conformance check a
team can copy for its own use case.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scratch_stack import processes_using, scratch_env, scratch_project

from loopline.config.use_case import built_in_use_cases, load_use_case, registered_use_cases

pytestmark = pytest.mark.integration

NAME = "maintenance"


def drifted_columns(name: str, curated_events: Path) -> set[str]:
    """The event columns the use case's demo drift changes, found by applying it to landed events."""
    live_drift = load_use_case(name).load_simulator().demo.live_drift
    sample = pd.read_parquet(sorted(curated_events.glob("date=*/*.parquet"))[0]).head(50)
    changed: set[str] = set()
    for event in sample.to_dict("records"):
        after = live_drift(dict(event))
        changed |= {column for column, value in after.items() if value != event.get(column)}
    return changed


def test_a_registered_use_case_closes_the_loop_without_loopline_knowing_it(tmp_path):
    assert NAME in registered_use_cases(), (
        "the example use case is not installed: pip install -e examples/maintenance (make install does it)"
    )
    assert NAME not in built_in_use_cases()
    use_case = load_use_case(NAME)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LOOPLINE_"))}
    env.update(scratch_env(tmp_path, scratch_project(tmp_path)))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "loopline"), "demo", "--use-case", NAME, "--exit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    text = out.stdout
    landed = int(re.search(r"(\d+) files landed; the landing-zone watcher", text).group(1))
    published = int(re.search(r"ingest done: (\d+) batches published", text).group(1))
    assert landed >= 10 and published >= landed - 2, "the simulated history landed and was published"
    assert "training/serving skew: 0 mismatches" in text
    model = use_case.model_name
    assert re.search(rf"{model} v1 passed the benchmark gate: quality ok\s+fairness ok", text), text
    assert "champion v1 serves" in text
    state = Path(env["LOOPLINE_STATE_DIR"])
    events, labels = use_case.batch_kinds
    # The drift the use case injects is among what the monitor names, not only artefacts of the replay.
    verdict = re.search(r"verdict: (.*)", text).group(1)
    moved = drifted_columns(NAME, state / "data" / "curated" / events)
    assert moved and any(column in verdict for column in moved), (moved, verdict)
    assert re.search(r"retrain requested \([^)]*drift[^)]*\); train_model starts", text)
    assert re.search(rf"{model} v2 passed the benchmark gate", text)
    assert "champion v2 serves" in text
    card = (state / "reports" / "gate" / "1" / "model_card.md").read_text()
    assert all(group in card for group in use_case.group_columns)
    assert list((state / "data" / "curated" / labels).glob("date=*/*.parquet"))
    assert processes_using(state) == []
