"""Run parameters a DAG does not declare fail the run, naming the near miss, instead of being ignored."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from loopline_airflow.run_conf import reject_unknown_conf, run_moment, unknown_conf_error

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR)).dags


def test_unknown_keys_are_named_with_the_closest_declared_one():
    message = unknown_conf_error("train_model", {"epoch": 5, "reason": "x", "zzz": 1}, ["epochs", "reason"])
    assert message is not None
    assert (
        "'epoch' (did you mean 'epochs'?)" in message
        and "'zzz'" in message
        and "'reason'" not in message.split(";")[0]
    )
    assert "it takes: epochs, reason" in message
    assert unknown_conf_error("train_model", {"epochs": 5}, ["epochs", "reason"]) is None
    assert unknown_conf_error("train_model", None, ["epochs"]) is None


@pytest.mark.parametrize(
    "dag_id,good,bad",
    [
        ("train_model", {"epochs": 3, "reason": "new labels"}, {"learning_rte": 0.01}),
        ("deploy_canary", {"bake_seconds": 5}, {"bake_secs": 5}),
        ("rollback_production", {"reason": "bad model"}, {"reason": "bad model", "version": "3"}),
    ],
)
def test_each_dag_with_params_refuses_what_it_does_not_declare(dags, dag_id, good, bad):
    from airflow.sdk.exceptions import AirflowFailException

    dag = dags[dag_id]
    reject_unknown_conf({"dag": dag, "dag_run": SimpleNamespace(conf=good)})
    reject_unknown_conf({"dag": dag, "dag_run": SimpleNamespace(conf={})})  # scheduled / asset runs
    with pytest.raises(AirflowFailException, match=f"{dag_id} does not take the run parameter"):
        reject_unknown_conf({"dag": dag, "dag_run": SimpleNamespace(conf=bad)})


def test_tasks_decide_as_of_their_runs_instant_never_the_wall_clock() -> None:
    """A scheduled run decides as of its data interval's end; a manual or asset-triggered run (no interval)
    as of when it was asked for. Both are fixed for the run, so a cleared and re-run task decides the same."""
    asked = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    interval_end = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    run = SimpleNamespace(run_after=asked)
    assert run_moment({"data_interval_end": interval_end, "dag_run": run}) == interval_end
    assert run_moment({"data_interval_end": None, "dag_run": run}) == asked
    assert run_moment({"dag_run": run}) == asked
