"""Every history event an Airflow task records names its DAG run, so the "Model loop" page links it to the run.

Each producer runs as it does inside a task: Airflow's task runner exports ``AIRFLOW_CTX_DAG_ID`` and
``AIRFLOW_CTX_DAG_RUN_ID`` into the task process, and ``history.record`` puts them into the details. The
registry is a small in-memory fake of the MLflow client calls the producers make; everything else is real.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_ui_render import DRIFT_CONFIG, _verdict

from loopline.config import Settings
from loopline.deployment import actions, canary
from loopline.deployment.policy import CanaryPolicy
from loopline.deployment.windows import ErrorSource
from loopline.gating import gate
from loopline.gating.decide import decide
from loopline.gating.policy import policy_from_dict
from loopline.lineage import history
from loopline.monitoring.monitor import record_decision
from loopline_airflow.ui.render import PageLinks, airflow_run_of

REPO_ROOT = Path(__file__).resolve().parents[3]
MODEL = "fraud_detector"
RUN_ID = "manual__2026-01-05T03:00:00+00:00"
GATE_POLICY = policy_from_dict(
    {
        "operating_point": {"threshold": 0.5},
        "infra": {"enabled": False},
        "latency": {"enabled": False},
        "quality": {"roc_auc": {"min": 0.9}},
    }
)


class FakeRegistry:
    """The MLflow client calls of ``gating.gate`` and ``deployment.actions``, on dicts."""

    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = dict(aliases)
        self.tags: dict[str, str] = {}
        self.version_tags: dict[str, dict[str, str]] = {}

    def get_registered_model(self, name: str) -> Any:
        return SimpleNamespace(aliases=dict(self.aliases), tags=dict(self.tags))

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = str(version)

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self.aliases.pop(alias, None)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self.tags[key] = value

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        self.tags.pop(key, None)

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.version_tags.setdefault(str(version), {})[key] = value

    def delete_model_version_tag(self, name: str, version: str, key: str) -> None:
        self.version_tags.get(str(version), {}).pop(key, None)

    def get_model_version(self, name: str, version: str) -> Any:
        aliases = [a for a, v in self.aliases.items() if v == str(version)]
        return SimpleNamespace(tags=dict(self.version_tags.get(str(version), {})), aliases=aliases)

    def log_dict(self, *args: Any) -> None:
        pass

    def log_text(self, *args: Any) -> None:
        pass


@pytest.fixture
def settings(tmp_path, clean_loopline_env) -> Settings:
    return Settings(state_dir=tmp_path / "state", project_dir=REPO_ROOT)


def _registry(monkeypatch, aliases: dict[str, str]) -> FakeRegistry:
    fake = FakeRegistry(aliases)
    monkeypatch.setattr(actions, "client_for", lambda settings: fake)
    # No tracking server behind the fake: the versions have no gate holdout to read (canary.begin asks).
    monkeypatch.setattr(gate, "read_holdout_scores", lambda uri, model, version: None)
    return fake


def train_model(settings: Settings, monkeypatch) -> None:
    # plan_windows and the failure callback record training_started / training_failed; gate_candidate
    # records trained, then the gate its verdict (gate.record_verdict) in the same task.
    history.record(settings, "training_started", reason="scheduled", dag_run_id=RUN_ID)
    history.record(settings, "trained", version="7", reason="scheduled", run_id="run-7", dag_run_id=RUN_ID)
    history.record_training_failed(settings, "manual__another", "a task failed")  # that run never trained
    fake = FakeRegistry({"champion": "6"})
    monkeypatch.setattr(gate, "render_model_card", lambda report: "card")
    for version, roc_auc in (("7", 0.95), ("8", 0.5)):
        verdict = decide(GATE_POLICY, {"roc_auc": roc_auc}, None, None, None, None)
        gate.record_verdict(
            settings,
            fake,
            MODEL,
            version,
            f"run-{version}",
            {},
            verdict,
            settings.state.root / "gate" / version,
            actions.registry_config(settings),
        )


def deploy_canary(settings: Settings, monkeypatch) -> None:
    _registry(monkeypatch, {"champion": "6", "challenger": "7"})
    policy = CanaryPolicy()
    errors = ErrorSource(prometheus_url="http://prometheus.example:9090")  # mark() reads nothing
    start = canary.begin(settings, policy, "7", errors_from=errors, reason="gate passed (scheduled)")
    assert start.plan is not None
    canary.begin_step(settings, start.plan, 0)
    actions.promote(settings, "7", canary.promote_reason(start.plan))
    _registry(monkeypatch, {"champion": "7", "challenger": "8"})
    actions.roll_back(settings, "8", "step 1 (live 5%): errors: challenger 40% vs champion 0% (limit 1%)")
    _registry(monkeypatch, {"challenger": "9"})  # no champion yet: the first model is promoted directly
    canary.begin(settings, policy, "9", errors_from=errors)


def rollback_production(settings: Settings, monkeypatch) -> None:
    _registry(monkeypatch, {"champion": "7", "previous_champion": "6"})
    actions.rollback_production(settings, "errors up since the promotion")


def monitor_drift(settings: Settings, monkeypatch) -> None:
    at = datetime(2026, 1, 8, 3, tzinfo=UTC)
    alarm = {
        "judged": True,
        "alarm": True,
        "summary": "served features: 12/500 mismatch",
        "compared": 500,
        "mismatches": 12,
        "mismatch_rate": 0.024,
        "max_mismatch_rate": 0.01,
    }
    for running in (False, True):  # drift: a retrain is requested; while training runs, suppressed
        record_decision(
            settings,
            _verdict(at, drifted=6, served=alarm),
            DRIFT_CONFIG,
            now=at,
            training_running=running,
            report=str(settings.state.reports / "drift" / "x"),
            mlflow_run_id="drift-run",
        )


PRODUCERS: dict[str, Callable[[Settings, Any], None]] = {
    "train_model": train_model,
    "deploy_canary": deploy_canary,
    "rollback_production": rollback_production,
    "monitor_drift": monitor_drift,
}


@pytest.mark.parametrize("dag_id", sorted(PRODUCERS))
def test_every_event_a_task_records_links_to_its_airflow_run(dag_id, settings, monkeypatch):
    monkeypatch.setenv(history.AIRFLOW_DAG_ID_ENV, dag_id)
    monkeypatch.setenv(history.AIRFLOW_DAG_RUN_ID_ENV, RUN_ID)
    PRODUCERS[dag_id](settings, monkeypatch)
    events = [e.to_dict() for e in history.read(settings)]
    assert events
    links = PageLinks(mlflow_url="")
    for event in events:
        expected = "manual__another" if event["reason"] == "a task failed" else RUN_ID
        assert airflow_run_of(event, links) == (dag_id, expected), event


def test_the_producers_above_cover_every_event_kind(settings, monkeypatch):
    monkeypatch.setenv(history.AIRFLOW_DAG_ID_ENV, "some_dag")
    monkeypatch.setenv(history.AIRFLOW_DAG_RUN_ID_ENV, RUN_ID)
    for produce in PRODUCERS.values():
        produce(settings, monkeypatch)
    assert {e.kind for e in history.read(settings)} == history.EVENT_KINDS


def test_outside_airflow_an_event_names_no_run(settings, monkeypatch):
    monkeypatch.delenv(history.AIRFLOW_DAG_ID_ENV, raising=False)
    monkeypatch.delenv(history.AIRFLOW_DAG_RUN_ID_ENV, raising=False)
    event = history.record(settings, "promoted", version="7", reason="by hand")
    assert "dag_id" not in event.details and "dag_run_id" not in event.details
    assert airflow_run_of(event.to_dict(), PageLinks(mlflow_url="")) is None


def test_a_run_named_by_the_producer_is_kept(settings, monkeypatch):
    monkeypatch.setenv(history.AIRFLOW_DAG_ID_ENV, "train_model")
    monkeypatch.setenv(history.AIRFLOW_DAG_RUN_ID_ENV, RUN_ID)
    other = history.record(settings, "training_failed", reason="x", dag_run_id="scheduled__other")
    assert other.details == {"dag_run_id": "scheduled__other"}  # not this task's DAG: train_model by kind
    same = history.record(settings, "trained", version="7", dag_run_id=RUN_ID)
    assert same.details == {"dag_id": "train_model", "dag_run_id": RUN_ID}
