"""Run parameters a DAG does not declare fail the run, naming the near miss, instead of being ignored."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from loopline_airflow.run_conf import reject_unknown_conf, unknown_conf_error

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR)).dags


def test_unknown_keys_are_named_with_the_closest_declared_one():
    message = unknown_conf_error("train_model", {"epoch": 5, "reason": "x", "zzz": 1}, ["epochs", "reason"])
    assert message is not None
    assert "'epoch' (did you mean 'epochs'?)" in message and "'zzz'" in message and "'reason'" not in message.split(";")[0]
    assert "it takes: epochs, reason" in message
    assert unknown_conf_error("train_model", {"epochs": 5}, ["epochs", "reason"]) is None
    assert unknown_conf_error("train_model", None, ["epochs"]) is None


@pytest.mark.parametrize("dag_id,good,bad", [
    ("train_model", {"epochs": 3, "reason": "new labels"}, {"learning_rte": 0.01}),
    ("deploy_canary", {"bake_seconds": 5}, {"bake_secs": 5}),
    ("rollback_production", {"reason": "bad model"}, {"reason": "bad model", "version": "3"}),
])
def test_each_dag_with_params_refuses_what_it_does_not_declare(dags, dag_id, good, bad):
    from airflow.sdk.exceptions import AirflowFailException

    dag = dags[dag_id]
    reject_unknown_conf({"dag": dag, "dag_run": SimpleNamespace(conf=good)})
    reject_unknown_conf({"dag": dag, "dag_run": SimpleNamespace(conf={})})  # scheduled / asset runs
    with pytest.raises(AirflowFailException, match=f"{dag_id} does not take the run parameter"):
        reject_unknown_conf({"dag": dag, "dag_run": SimpleNamespace(conf=bad)})
