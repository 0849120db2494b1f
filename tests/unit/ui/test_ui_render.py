"""The "Model loop" page rendered from a given loop state (a pure function: no stack, no registry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from loopline.config import Settings
from loopline.config.drift_policy import load_drift_config
from loopline.lineage import history
from loopline.monitoring.decide import DriftVerdict
from loopline.monitoring.fast_drift import ColumnDrift
from loopline.monitoring.monitor import record_decision
from loopline.monitoring.reports import report_dir
from loopline_airflow.ui.render import (
    PageLinks,
    details_lines,
    drift_series,
    format_value,
    render_page,
    state_file_href,
)

MLFLOW = "http://mlflow.example:5000"


class _Page(HTMLParser):
    """Text per element id, every href/src, and the tags used: enough to read the page like a person."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "polyline"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text_by_id: dict[str, str] = {}
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.tags: set[str] = set()
        self._open: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if "src" in attrs:
            self.srcs.append(attrs["src"])
        if tag not in self.VOID:
            self._open.append(attrs.get("id"))
            if attrs.get("id"):
                self.text_by_id[attrs["id"]] = ""

    def handle_endtag(self, tag):
        if tag not in self.VOID and self._open:
            self._open.pop()

    def handle_data(self, data):
        for element_id in {i for i in self._open if i}:
            self.text_by_id[element_id] += data


REPO_ROOT = Path(__file__).resolve().parents[3]
DRIFT_CONFIG = load_drift_config(
    REPO_ROOT / "include" / "loopline" / "usecases" / "fraud" / "policies" / "drift.yaml"
)


def _verdict(at: datetime, drifted: int, columns: int = 10, served: dict | None = None) -> DriftVerdict:
    """A drift verdict over ``columns`` features of which ``drifted`` drifted (as ``monitoring.decide`` makes)."""
    checks = tuple(
        ColumnDrift(
            f"feature_{i}",
            "numeric",
            "wasserstein",
            0.1,
            0.3 if i < drifted else 0.02,
            i < drifted,
            5000,
            2500,
        )
        for i in range(columns)
    )
    share = drifted / columns
    return DriftVerdict(
        status="drift" if share >= 0.5 else "ok",
        checked_at=at.isoformat(),
        window_start=(at - timedelta(hours=24)).isoformat(),
        window_end=at.isoformat(),
        rows=2500,
        reference_version="4",
        columns=checks,
        drifted_share=share,
        dataset_drift=share >= 0.5,
        reasons=("data_drift",) if share >= 0.5 else (),
        served_features=served,
    )


def produce_drift_check(settings: Settings, at: datetime, drifted: int, served: dict | None = None) -> None:
    """A drift check recorded by the drift monitor's own producer (``monitor.record_decision``), with its
    report directory as ``run_check`` passes it: the page must read what the monitor writes."""
    report = report_dir(settings.state.reports, at)
    record_decision(
        settings,
        _verdict(at, drifted, served=served),
        DRIFT_CONFIG,
        now=at,
        training_running=False,
        report=str(report),
        mlflow_run_id=f"drift-run-{at:%d}",
    )


def _produced_history(settings: Settings) -> list[dict]:
    """The loop's history as ``loop_state`` reads it back, recorded the way each stage records it."""
    day = datetime(2026, 1, 5, 3, tzinfo=UTC)
    # As train_model's gate_candidate records it, then gate.record_verdict.
    history.record(
        settings,
        "trained",
        version=5,
        reason="scheduled",
        at=day - timedelta(minutes=5),
        run_id="run-5",
        dag_run_id="scheduled__2026-01-05T03:00:00+00:00",
        metrics={"pr_auc": 0.0812345, "roc_auc": 0.9},
    )
    history.record(
        settings,
        "gate_rejected",
        version=5,
        at=day,
        reason="PR-AUC 0.08 < 0.10",
        checks={"quality": False, "fairness": True},
        report="/state/reports/gate/5/gate_report.json",
    )
    # As deployment.canary.begin records it.
    history.record(
        settings,
        "canary_started",
        version=6,
        at=day + timedelta(days=1),
        reason="gate passed",
        champion="4",
        steps=[{"share": 0.05, "mode": "live"}, {"share": 0.25, "mode": "live"}],
        errors_from="http://serving:8000/metrics",
    )
    produce_drift_check(settings, day + timedelta(days=2), drifted=1)
    produce_drift_check(settings, day + timedelta(days=3), drifted=6)  # drift: the policy requests a retrain
    return [e.to_dict() for e in history.read(settings)]


@pytest.fixture
def settings(tmp_path, clean_loopline_env) -> Settings:
    return Settings(state_dir=tmp_path / "state", project_dir=REPO_ROOT)


@pytest.fixture
def produced(settings) -> list[dict]:
    return _produced_history(settings)


def _state(history_events: list[dict], **overrides) -> dict:
    state = {
        "model_name": "fraud_detector",
        "champion": {"version": "4", "run_id": "run-champion"},
        "challenger": {"version": "6", "run_id": "run-challenger", "traffic": 0.05},
        "versions": [
            {
                "version": "4",
                "run_id": "run-champion",
                "aliases": ["champion"],
                "model_card": None,
                "model_card_path": None,
                "gate": {
                    "passed": True,
                    "checks": {"quality": True},
                    "report": None,
                    "rejected_reasons": None,
                },
            },
            {
                "version": "5",
                "run_id": "run-5",
                "aliases": [],
                "model_card": "runs:/run-5/gate/model_card.md",
                "model_card_path": "/state/reports/gate/5/model_card.md",
                "gate": {
                    "passed": False,
                    "checks": {"quality": False, "fairness": True},
                    "report": "runs:/run-5/gate/gate_report.json",
                    "rejected_reasons": "quality: PR-AUC 0.08 < 0.10",
                },
            },
            {
                "version": "6",
                "run_id": "run-challenger",
                "aliases": ["challenger"],
                "model_card": None,
                "model_card_path": None,
                "gate": None,
            },
        ],
        "history": history_events,
    }
    state.update(overrides)
    return state


@pytest.fixture
def links() -> PageLinks:
    return PageLinks(mlflow_url=MLFLOW, state_roots=(("reports", "/state/reports"),), dags=("train_model",))


def test_serving_cards_show_versions_and_traffic_split(links, produced):
    page = _Page(render_page(_state(produced), links))
    assert "version 4" in page.text_by_id["champion"] and "95 %" in page.text_by_id["champion"]
    assert "version 6" in page.text_by_id["challenger"] and "5 %" in page.text_by_id["challenger"]
    no_canary = _Page(render_page(_state(produced, challenger=None), links))
    assert "100 %" in no_canary.text_by_id["champion"] and "none" in no_canary.text_by_id["challenger"]
    nothing = _Page(render_page(_state([], champion=None, challenger=None, versions=[]), links))
    assert "none yet" in nothing.text_by_id["champion"]


def test_gate_verdicts_show_each_check_and_the_reasons(links, produced):
    page = _Page(render_page(_state(produced), links))
    rejected = page.text_by_id["version-5"]
    assert "rejected" in rejected and "✗ quality" in rejected and "✓ fairness" in rejected
    assert "PR-AUC 0.08 < 0.10" in rejected
    assert "passed" in page.text_by_id["version-4"] and "not gated" in page.text_by_id["version-6"]


def test_links_go_to_mlflow_reports_and_airflow_runs(links, produced):
    page = _Page(render_page(_state(produced), links))
    assert f"{MLFLOW}/#/models/fraud_detector/versions/4" in page.hrefs
    assert f"{MLFLOW}/#/runs/run-champion" in page.hrefs
    assert "files/reports/gate/5/model_card.md" in page.hrefs  # served by the plugin, behind its auth
    assert "files/reports/gate/5/gate_report.json" in page.hrefs  # the gate_rejected event's report
    # The trained event names its run; train_model is the one DAG that records it (Airflow 3 route).
    assert "../dags/train_model/runs/scheduled__2026-01-05T03%3A00%3A00%2B00%3A00" in page.hrefs
    assert "../dags/train_model/runs" in page.hrefs
    # MLflow runs: the trained model's, the gate's candidate run (its report and card), each drift check's.
    assert {
        f"{MLFLOW}/#/runs/run-5",
        f"{MLFLOW}/#/runs/drift-run-07",
        f"{MLFLOW}/#/runs/drift-run-08",
    } <= set(page.hrefs)


def test_an_event_is_linked_to_the_airflow_run_found_for_it(settings, produced):
    checks = [e for e in produced if e["kind"] == "drift_checked"]
    links = PageLinks(
        mlflow_url=MLFLOW, event_runs={checks[-1]["id"]: ("monitor_drift", "scheduled__2026-01-08")}
    )
    hrefs = _Page(render_page(_state(produced), links)).hrefs
    assert (
        hrefs.count("../dags/monitor_drift/runs/scheduled__2026-01-08") == 2
    )  # in the drift table and the history
    assert not any("monitor_drift/runs/" in h and "01-08" not in h for h in hrefs)


def test_without_an_http_tracking_server_no_mlflow_link_is_made(produced):
    links = PageLinks(
        mlflow_url="sqlite:////state/mlflow/mlflow.db", state_roots=(("reports", "/state/reports"),)
    )
    html = render_page(_state(produced), links)
    page = _Page(html)
    assert not any("sqlite" in h or "#/runs/" in h or "#/models/" in h for h in page.hrefs)
    assert "version 4" in page.text_by_id["champion"] and "MLflow run" not in page.text_by_id["champion"]
    assert "MLflow run" not in html  # no dead link text either


def test_the_drift_chart_plots_what_the_monitor_records(links, produced):
    # The events come from monitor.record_decision: if the renderer's key and the producer's diverge, the
    # series is empty and this fails.
    assert drift_series(produced) == [("2026-01-07T03:00:00+00:00", 0.1), ("2026-01-08T03:00:00+00:00", 0.6)]
    html = render_page(_state(produced), links)
    assert 'id="drift-chart"' in html and "<svg" in html and "last 60 %" in html and "2 checks" in html
    assert html.count("<circle") == 2 and "2026-01-08 03:00 UTC: 60 %</title>" in html
    one = [e for e in produced if e["kind"] != "drift_checked" or "01-07" in e["at"]]
    assert "one drift check so far (2026-01-07): 10 % of the features drifted" in render_page(
        _state(one), links
    )
    assert 'id="drift-chart"' not in render_page(_state([]), links)


def test_history_is_newest_first(links, produced):
    html = render_page(_state(produced), links)
    timeline = html[html.index("<h2>History</h2>") :]
    assert (
        timeline.index("retrain_requested")
        < timeline.index("canary_started")
        < timeline.index("gate_rejected")
    )


def test_a_drift_report_directory_links_its_html_report(settings, produced):
    checks = [e for e in produced if e["kind"] == "drift_checked"]
    directory = checks[-1]["details"]["report"]  # what the monitor records: the report directory
    assert not directory.endswith((".html", ".json"))
    lexical = PageLinks(mlflow_url=MLFLOW, state_roots=(("reports", str(settings.state.reports)),))
    assert not any("/drift/" in h for h in _Page(render_page(_state(produced), lexical)).hrefs), (
        "a directory is never linked: the route serves files only"
    )
    files = {directory: f"{directory}/report.html"}
    links = PageLinks(
        mlflow_url=MLFLOW,
        state_roots=(("reports", str(settings.state.reports)),),
        report_file=lambda path: files.get(path, path if path.endswith(".json") else None),
    )
    html = render_page(_state(produced), links)
    href = f"files/reports/drift/{directory.rsplit('/', 1)[-1]}/report.html"
    assert href in _Page(html).hrefs and f'<a href="{href}">report</a>' in html


def test_details_are_readable_text_not_python_dicts(links, produced):
    html = render_page(_state(produced), links)
    history_table = html[html.index("<h2>History</h2>") :]
    assert "{" not in history_table and "}" not in history_table and "&#x27;" not in history_table
    by_kind = {e["kind"]: dict(details_lines(e)) for e in produced}
    assert by_kind["trained"] == {"metrics": "pr_auc: 0.0812, roc_auc: 0.9"}
    assert by_kind["gate_rejected"] == {"checks": "fairness passed, quality failed"}
    assert by_kind["canary_started"]["steps"] == "mode: live, share: 5 %; mode: live, share: 25 %"
    drift = by_kind["retrain_requested"]
    assert drift["drifted_share"] == "60 %" and drift["rows"] == "2,500"
    assert drift["drifted_columns"] == ", ".join(f"feature_{i}" for i in range(6))
    assert drift["window"] == "2026-01-07 03:00:00 → 2026-01-08 03:00:00"
    assert drift["reasons"] == "data_drift" and drift["status"] == "drift"
    checked = dict(details_lines([e for e in produced if e["kind"] == "drift_checked"][-1]))
    assert "summary" not in checked, "the summary repeats the reason"
    assert not {"report", "mlflow_run_id", "run_id", "dag_run_id"} & set(checked), "shown as links instead"


@pytest.mark.parametrize(
    "value,key,text",
    [
        (0.123456, "", "0.123"),
        (3.14159, "", "3.14"),
        (12345.678, "", "12,346"),
        (2.0, "", "2"),
        (float("nan"), "", "n/a"),
        (0.024, "mismatch_rate", "2.4 %"),
        (1, "", "1"),
        (True, "", "yes"),
        (None, "", "—"),
        ([], "", "none"),
        (list(range(15)), "", "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, … (+3 more)"),
        ({"a": {"b": 1.5}}, "", "a: (b: 1.5)"),
        ("x" * 400, "", "x" * 299 + "…"),
        ("2026-01-05T04:00:00+01:00", "", "2026-01-05 03:00:00"),
        ("not-a-time", "", "not-a-time"),
        # A canary verdict (deployment.canary) as promote records it: its own sentence, not its nested checks.
        (
            {
                "passed": True,
                "checks": [{"name": "errors", "values": {"limit": 0.01}}],
                "why": "all checks passed",
            },
            "verdict",
            "all checks passed",
        ),
    ],
)
def test_values_are_formatted_for_people(value, key, text):
    assert format_value(value, key) == text


def test_the_page_is_self_contained_and_escapes_what_it_shows(links):
    hostile = _state(
        [
            {
                "id": 1,
                "at": "2026-01-05T03:00:00+00:00",
                "kind": "gate_rejected",
                "version": "5",
                "reason": "<script>alert(1)</script>",
                "details": {"note": "<img src=x onerror=alert(1)>", "<b>": ["<i>"]},
            }
        ]
    )
    html = render_page(hostile, links)
    page = _Page(html)
    assert "script" not in page.tags and "&lt;script&gt;" in html
    assert not {"img", "b", "i"} & page.tags and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert page.srcs == [] and "link" not in page.tags  # no scripts, styles or images from elsewhere
    assert "http-equiv='refresh'" in html


def test_a_registry_error_is_shown_not_hidden(links, produced):
    html = render_page(_state(produced, registry_error="http://mlflow:5000: connection refused"), links)
    assert "The model registry could not be read: http://mlflow:5000: connection refused" in html


def test_only_files_inside_a_served_root_get_a_url():
    roots = (("reports", "/s/reports"), ("quarantine", "/s/quarantine"))
    assert (
        state_file_href("/s/reports/ingest/b 1/report.html", roots)
        == "files/reports/ingest/b%201/report.html"
    )
    assert state_file_href("/s/quarantine/b/report.json", roots) == "files/quarantine/b/report.json"
    assert state_file_href("/s/reports/../secrets.json", roots) is None
    assert state_file_href("/etc/passwd", roots) is None and state_file_href(None, roots) is None


def _served(**served) -> dict:
    return {"max_mismatch_rate": 0.01, "summary": "served features: …", **served}


def test_the_last_served_features_check_is_shown_with_its_alarm(links, settings, produced):
    alarm = _served(
        judged=True,
        compared=500,
        mismatches=12,
        mismatch_rate=0.024,
        alarm=True,
        waiting=40,
        worst_features={"cust_tx_count_24h": 12, "merch_tx_count_7d": 3},
        examples=[{"transaction_id": "tx_7", "feature": "cust_tx_count_24h", "served": 2, "offline": 3}],
        summary="served features: 12/500 compared transactions mismatch (2.40%) > limit 1.00% SKEW",
    )
    produce_drift_check(
        settings,
        datetime(2026, 1, 8, 4, tzinfo=UTC),
        drifted=1,
        served=_served(
            judged=True,
            compared=500,
            mismatches=0,
            mismatch_rate=0.0,
            alarm=False,
            worst_features={},
            examples=[],
        ),
    )
    produce_drift_check(settings, datetime(2026, 1, 9, 3, tzinfo=UTC), drifted=1, served=alarm)
    events = [e.to_dict() for e in history.read(settings)]
    assert events[-1]["kind"] == "served_features_skew", (
        "the monitor records the alarm as an event of its own"
    )
    html = render_page(_state(events), links)
    served = _Page(html).text_by_id["served-features"]
    assert "2.4 % mismatching" in served and "12 of 500 compared events (limit 1 %)" in served
    assert "ALARM" in served and "cust_tx_count_24h (12), merch_tx_count_7d (3)" in served
    assert "tx_7" in served and "40 served events waiting" in served and "2026-01-09 03:00:00" in served
    drift = html[html.index("<h2>Drift</h2>") : html.index("<h2>Served features</h2>")]
    assert "served_features_skew" in drift, "the alarm is listed with the drift decisions"
    assert "tx_7" not in drift, "the drift table does not repeat the served-features examples"


def test_a_served_features_check_that_could_not_judge_says_why(links, settings, produced):
    produce_drift_check(
        settings,
        datetime(2026, 1, 9, 3, tzinfo=UTC),
        drifted=1,
        served=_served(
            judged=False,
            alarm=False,
            reason="no served transaction is ingested and materialised yet (310 waiting)",
        ),
    )
    page = _Page(render_page(_state([e.to_dict() for e in history.read(settings)]), links))
    served = page.text_by_id["served-features"]
    assert "not judged: no served transaction is ingested and materialised yet (310 waiting)" in served
    assert "ALARM" not in served and "within the limit" not in served
    produce_drift_check(
        settings,
        datetime(2026, 1, 10, 3, tzinfo=UTC),
        drifted=1,
        served=_served(
            judged=True,
            compared=200,
            mismatches=1,
            mismatch_rate=0.005,
            alarm=False,
            worst_features={"hour_of_day": 1},
            examples=[],
        ),
    )
    ok = _Page(render_page(_state([e.to_dict() for e in history.read(settings)]), links))
    assert "within the limit" in ok.text_by_id["served-features"]
    nothing = _Page(render_page(_state(produced), links)).text_by_id["served-features"]
    assert "No served-features check yet." in nothing
