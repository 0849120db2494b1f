"""Extra links on Loopline's tasks: which task gets which URL, from what its XCom holds."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from loopline.config import Settings
from loopline_airflow import links
from loopline_airflow.links import GLOBAL_LINKS, MLFLOW_RUN, MODEL_CARD, REPORT, link_url


@pytest.fixture
def settings(tmp_path, clean_loopline_env) -> Settings:
    return Settings(state_dir=tmp_path / "state", airflow_port=8123, mlflow_port=5123)


def _reader(xcoms: dict[tuple[str, int], object]):
    return lambda task_id, map_index: xcoms.get((task_id, map_index))


TRAINED = {("train_candidate", -1): {"run_id": "abc123", "version": "7", "model_uri": "models:/m/7"}}


def test_the_training_task_links_to_its_mlflow_run(settings):
    assert (
        link_url(MLFLOW_RUN, "train_candidate", -1, _reader(TRAINED), settings)
        == "http://127.0.0.1:5123/#/runs/abc123"
    )
    assert (
        link_url(MLFLOW_RUN, "train_candidate", -1, _reader({}), settings) is None
    )  # still running / failed
    assert link_url(MLFLOW_RUN, "build_holdout", -1, _reader(TRAINED), settings) is None


def test_the_gate_links_to_the_model_card_of_the_trained_version(settings):
    # No card on this machine (Kubernetes): the candidate's MLflow run, where the card is an artifact.
    assert (
        link_url(MODEL_CARD, "gate_candidate", -1, _reader(TRAINED), settings)
        == "http://127.0.0.1:5123/#/runs/abc123"
    )
    card = settings.state.reports / "gate" / "7" / "model_card.md"
    card.parent.mkdir(parents=True)
    card.write_text("# model card")
    assert (
        link_url(MODEL_CARD, "gate_candidate", -1, _reader(TRAINED), settings)
        == "http://127.0.0.1:8123/loopline/files/reports/gate/7/model_card.md"
    )
    assert link_url(MODEL_CARD, "train_candidate", -1, _reader(TRAINED), settings) is None


def test_a_validation_task_links_to_its_html_report(settings):
    folder = settings.state.reports / "ingest" / "transactions_2026-01-01"
    folder.mkdir(parents=True)
    (folder / "report.json").write_text("{}")
    xcom = {("ingest_batch", 3): {"status": "published", "report": str(folder / "report.json")}}
    url = link_url(REPORT, "ingest_batch", 3, _reader(xcom), settings)
    assert url == "http://127.0.0.1:8123/loopline/files/reports/ingest/transactions_2026-01-01/report.json"
    (folder / "report.html").write_text("<html></html>")
    assert link_url(REPORT, "ingest_batch", 3, _reader(xcom), settings).endswith("/report.html")
    assert link_url(REPORT, "ingest_batch", 2, _reader(xcom), settings) is None  # another mapped instance


def test_a_task_returning_a_report_path_gets_a_report_link_and_nothing_else_does(settings):
    report = settings.state.reports / "platform_smoke" / "run.json"
    xcom = _reader({("record_smoke_report", -1): str(report)})
    assert link_url(REPORT, "record_smoke_report", -1, xcom, settings) is None, (
        "no file here: a link would 404"
    )
    report.parent.mkdir(parents=True)
    report.write_text("{}")
    assert link_url(REPORT, "record_smoke_report", -1, xcom, settings)
    for value in ("just a string", "/etc/passwd", {"rows": 3}, None, 42):
        assert link_url(REPORT, "some_task", -1, _reader({("some_task", -1): value}), settings) is None


def test_the_drift_check_links_the_html_report_in_its_report_directory(settings):
    # monitor_drift's check_drift returns the report *directory* (report_dir); a link to it would 404.
    folder = settings.state.reports / "drift" / "20260301T120000000000Z"
    folder.mkdir(parents=True)
    (folder / "verdict.json").write_text("{}")
    xcom = _reader({("check_drift", -1): {"retrain": False, "report_dir": str(folder)}})
    base = "http://127.0.0.1:8123/loopline/files/reports/drift/20260301T120000000000Z"
    assert (
        link_url(REPORT, "check_drift", -1, xcom, settings) == f"{base}/verdict.json"
    )  # Evidently wrote no HTML
    (folder / "report.html").write_text("<html></html>")
    assert link_url(REPORT, "check_drift", -1, xcom, settings) == f"{base}/report.html"


def test_get_link_uses_the_task_instance_key_and_returns_empty_when_not_applicable(settings, monkeypatch):
    monkeypatch.setenv("LOOPLINE_STATE_DIR", str(settings.state.root))
    monkeypatch.setenv("LOOPLINE_MLFLOW_PORT", "5123")
    asked = []

    def fake_xcom(dag_id, run_id, task_id, map_index):
        asked.append((dag_id, run_id, task_id, map_index))
        return json.loads(json.dumps(TRAINED[("train_candidate", -1)]))

    monkeypatch.setattr(links, "_xcom_return_value", fake_xcom)
    key = SimpleNamespace(dag_id="train_model", run_id="manual__1", task_id="train_candidate", map_index=-1)
    by_name = {link.name: link for link in GLOBAL_LINKS}
    assert by_name[MLFLOW_RUN].get_link(None, ti_key=key) == "http://127.0.0.1:5123/#/runs/abc123"
    assert asked == [("train_model", "manual__1", "train_candidate", -1)]
    assert by_name[MODEL_CARD].get_link(None, ti_key=key) == ""  # not the gate task
