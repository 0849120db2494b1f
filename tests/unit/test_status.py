"""The loop state that `loopline status --json` and the UI show, read from a real (SQLite) MLflow registry."""

from __future__ import annotations

import json

import pytest

from loopline.config import Settings
from loopline.lineage import history
from loopline.serving.config import RegistryConfig
from loopline.status import loop_state, registry_uri

TRAFFIC_TAG = RegistryConfig().traffic_tag


@pytest.fixture
def settings(tmp_path, clean_loopline_env) -> Settings:
    return Settings(state_dir=tmp_path / "state")


def _registry(settings: Settings):
    from loopline.platform.mlflow_util import mlflow_client

    settings.state.mlflow_dir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{settings.state.mlflow_db}"
    return mlflow_client(uri)


def test_a_fresh_state_dir_has_no_models_and_no_history(settings):
    state = loop_state(settings)
    assert state["champion"] is None and state["challenger"] is None
    assert state["versions"] == [] and state["history"] == []
    assert "registry_error" not in state


def test_embedded_mode_reads_the_registry_file_without_a_server(settings):
    _registry(settings)
    assert registry_uri(settings) == f"sqlite:///{settings.state.mlflow_db}"
    assert (
        registry_uri(settings.model_copy(update={"mlflow_tracking_uri": "http://mlflow:5000"}))
        == "http://mlflow:5000"
    )


def test_aliases_traffic_gate_verdicts_and_history_come_together(settings, tmp_path):
    client = _registry(settings)
    client.create_registered_model("fraud_detector")
    for _ in range(3):
        client.create_model_version("fraud_detector", source=str(tmp_path))
    client.set_registered_model_alias("fraud_detector", "champion", "1")
    client.set_registered_model_alias("fraud_detector", "challenger", "3")
    client.set_registered_model_tag("fraud_detector", TRAFFIC_TAG, "0.05")
    client.set_model_version_tag("fraud_detector", "2", "loopline.gate.passed", "false")
    client.set_model_version_tag(
        "fraud_detector",
        "2",
        "loopline.gate.checks",
        json.dumps({"quality": False, "fairness": True, "latency": True, "infra": True}),
    )
    client.set_model_version_tag("fraud_detector", "3", "loopline.gate.passed", "true")
    history.record(settings, "gate_rejected", version=2, reason="PR-AUC 0.08 < 0.10")
    history.record(settings, "canary_started", version=3, traffic=0.05)

    state = loop_state(settings)
    assert state["champion"]["version"] == "1"
    assert state["challenger"]["version"] == "3" and state["challenger"]["traffic"] == 0.05
    versions = {v["version"]: v for v in state["versions"]}
    assert sorted(versions) == ["1", "2", "3"]
    assert versions["2"]["gate"]["passed"] is False and versions["2"]["gate"]["checks"]["quality"] is False
    assert versions["3"]["gate"]["passed"] is True and versions["3"]["aliases"] == ["challenger"]
    assert versions["1"]["gate"] is None
    assert [e["kind"] for e in state["history"]] == ["gate_rejected", "canary_started"]
    assert state["history"][0]["reason"] == "PR-AUC 0.08 < 0.10"
