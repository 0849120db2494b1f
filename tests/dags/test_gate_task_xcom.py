"""train_model's gate_candidate returns the gate's verdict as its XCom, for a pass and for a rejection."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from loopline.gating.decide import decide
from loopline.gating.policy import policy_from_dict
from loopline.gating.verdict import verdict_summary

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
TRAINED = {"version": "7", "run_id": "run-7", "reason": "new labels", "metrics": {"pr_auc": 0.4}}
POLICY = policy_from_dict(
    {
        "operating_point": {"threshold": 0.5},
        "infra": {"enabled": False},
        "latency": {"enabled": False},
        "quality": {"roc_auc": {"min": 0.9}},
    }
)


@pytest.fixture(scope="module")
def gate_task():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR / "train_model.py")).dags["train_model"].get_task("gate_candidate")


class _TI:
    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = json.loads(json.dumps(value, allow_nan=False))  # what the XCom backend stores


def _call(gate_task, monkeypatch, ti: _TI, roc_auc: float):
    """The task's callable as Airflow calls it, with the gate returning a real verdict on ``roc_auc``."""
    from loopline_airflow.assets import CHALLENGER

    verdict = decide(POLICY, {"roc_auc": roc_auc}, None, None, None, None)
    monkeypatch.setattr("loopline.gating.gate.run_gate", lambda settings, version, holdout: verdict)
    expected = verdict_summary(verdict, model_name="fraud_detector", version="7", run_id="run-7")
    context = {"run_id": "manual__1", "ti": ti, "outlet_events": {CHALLENGER: SimpleNamespace(extra=None)}}
    return expected, lambda: gate_task.python_callable(TRAINED, {"path": "/holdout.parquet"}, **context)


def test_a_passing_gate_returns_its_verdict(gate_task, monkeypatch, state_dir):
    expected, call = _call(gate_task, monkeypatch, _TI(), roc_auc=0.95)
    returned = call()
    assert returned == expected and returned["decision"] == "passed"
    assert json.loads(json.dumps(returned, allow_nan=False)) == returned


def test_a_rejecting_gate_fails_and_still_leaves_its_verdict_as_the_return_value(
    gate_task, monkeypatch, state_dir
):
    from airflow.sdk.exceptions import AirflowFailException

    ti = _TI()
    expected, call = _call(gate_task, monkeypatch, ti, roc_auc=0.5)
    with pytest.raises(AirflowFailException, match="rejected by the gate"):
        call()
    # The XCom an API client reads at .../taskInstances/gate_candidate/xcomEntries/return_value.
    pushed = ti.pushed["return_value"]
    assert pushed == expected and pushed["decision"] == "rejected"
    assert pushed["reasons"] == ["quality: roc_auc 0.5 is not >= min 0.9"]
