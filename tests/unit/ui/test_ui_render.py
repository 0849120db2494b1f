"""The "Model loop" page rendered from a given loop state (a pure function: no stack, no registry)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from loopline_airflow.ui.render import PageLinks, drift_series, render_page, state_file_href

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


def _state(**overrides) -> dict:
    state = {
        "model_name": "fraud_detector",
        "champion": {"version": "4", "run_id": "run-champion"},
        "challenger": {"version": "6", "run_id": "run-challenger", "traffic": 0.05},
        "versions": [
            {"version": "4", "run_id": "run-champion", "aliases": ["champion"], "model_card": None,
             "model_card_path": None, "gate": {"passed": True, "checks": {"quality": True}, "report": None,
                                               "rejected_reasons": None}},
            {"version": "5", "run_id": "run-5", "aliases": [], "model_card": "runs:/run-5/gate/model_card.md",
             "model_card_path": "/state/reports/gate/5/model_card.md",
             "gate": {"passed": False, "checks": {"quality": False, "fairness": True},
                      "report": "runs:/run-5/gate/gate_report.json",
                      "rejected_reasons": "quality: PR-AUC 0.08 < 0.10"}},
            {"version": "6", "run_id": "run-challenger", "aliases": ["challenger"], "model_card": None,
             "model_card_path": None, "gate": None},
        ],
        "history": [
            {"id": 1, "at": "2026-01-05T03:00:00+00:00", "kind": "gate_rejected", "version": "5",
             "reason": "PR-AUC 0.08 < 0.10", "details": {"report": "/state/reports/gate/5/gate_report.json"}},
            {"id": 2, "at": "2026-01-06T03:00:00+00:00", "kind": "canary_started", "version": "6",
             "reason": "gate passed", "details": {"traffic": 0.05}},
            {"id": 3, "at": "2026-01-07T03:00:00+00:00", "kind": "drift_checked", "version": "4",
             "reason": "", "details": {"drift_share": 0.1}},
            {"id": 4, "at": "2026-01-08T03:00:00+00:00", "kind": "drift_checked", "version": "4",
             "reason": "", "details": {"drift_share": 0.6}},
            {"id": 5, "at": "2026-01-08T03:00:01+00:00", "kind": "retrain_requested", "version": "4",
             "reason": "60% of columns drifted", "details": {"dag_id": "train_model", "dag_run_id": "drift__1"}},
        ],
    }
    state.update(overrides)
    return state


@pytest.fixture
def links() -> PageLinks:
    return PageLinks(mlflow_url=MLFLOW, state_roots=(("reports", "/state/reports"),), dags=("train_model",))


def test_serving_cards_show_versions_and_traffic_split(links):
    page = _Page(render_page(_state(), links))
    assert "version 4" in page.text_by_id["champion"] and "95 %" in page.text_by_id["champion"]
    assert "version 6" in page.text_by_id["challenger"] and "5 %" in page.text_by_id["challenger"]
    no_canary = _Page(render_page(_state(challenger=None), links))
    assert "100 %" in no_canary.text_by_id["champion"] and "none" in no_canary.text_by_id["challenger"]
    nothing = _Page(render_page(_state(champion=None, challenger=None, versions=[], history=[]), links))
    assert "none yet" in nothing.text_by_id["champion"]


def test_gate_verdicts_show_each_check_and_the_reasons(links):
    page = _Page(render_page(_state(), links))
    rejected = page.text_by_id["version-5"]
    assert "rejected" in rejected and "✗ quality" in rejected and "✓ fairness" in rejected
    assert "PR-AUC 0.08 < 0.10" in rejected
    assert "passed" in page.text_by_id["version-4"] and "not gated" in page.text_by_id["version-6"]


def test_links_go_to_mlflow_reports_and_airflow_runs(links):
    page = _Page(render_page(_state(), links))
    assert f"{MLFLOW}/#/models/fraud_detector/versions/4" in page.hrefs
    assert f"{MLFLOW}/#/runs/run-champion" in page.hrefs
    assert "files/reports/gate/5/model_card.md" in page.hrefs  # served by the plugin, behind its auth
    assert "files/reports/gate/5/gate_report.json" in page.hrefs  # the gate_rejected event's report
    assert "../dags/train_model/runs/drift__1" in page.hrefs and "../dags/train_model/runs" in page.hrefs


def test_history_is_newest_first_and_drift_is_plotted(links):
    html = render_page(_state(), links)
    timeline = html[html.index("<h2>History</h2>"):]
    assert timeline.index("retrain_requested") < timeline.index("canary_started") < timeline.index("gate_rejected")
    assert drift_series(_state()["history"]) == [("2026-01-07T03:00:00+00:00", 0.1), ("2026-01-08T03:00:00+00:00", 0.6)]
    assert "<svg" in html and "last 0.60" in html
    assert "<svg" not in render_page(_state(history=[]), links)


def test_the_page_is_self_contained_and_escapes_what_it_shows(links):
    hostile = _state(history=[{"id": 1, "at": "2026-01-05T03:00:00+00:00", "kind": "gate_rejected", "version": "5",
                               "reason": "<script>alert(1)</script>", "details": {}}])
    html = render_page(hostile, links)
    page = _Page(html)
    assert "script" not in page.tags and "&lt;script&gt;" in html
    assert page.srcs == [] and "link" not in page.tags  # no scripts, styles or images from elsewhere
    assert "http-equiv='refresh'" in html


def test_a_registry_error_is_shown_not_hidden(links):
    html = render_page(_state(registry_error="http://mlflow:5000: connection refused"), links)
    assert "The model registry could not be read: http://mlflow:5000: connection refused" in html


def test_only_files_inside_a_served_root_get_a_url():
    roots = (("reports", "/s/reports"), ("quarantine", "/s/quarantine"))
    assert state_file_href("/s/reports/ingest/b 1/report.html", roots) == "files/reports/ingest/b%201/report.html"
    assert state_file_href("/s/quarantine/b/report.json", roots) == "files/quarantine/b/report.json"
    assert state_file_href("/s/reports/../secrets.json", roots) is None
    assert state_file_href("/etc/passwd", roots) is None and state_file_href(None, roots) is None


def _served_check(at: str, **served) -> dict:
    return {"id": 9, "at": at, "kind": "drift_checked", "version": "4", "reason": "ok",
            "details": {"drift_share": 0.1, "served_features": served}}


def test_the_last_served_features_check_is_shown_with_its_alarm(links):
    alarm = {"judged": True, "compared": 500, "mismatches": 12, "mismatch_rate": 0.024, "max_mismatch_rate": 0.01,
             "alarm": True, "waiting": 40, "worst_features": {"cust_tx_count_24h": 12, "merch_tx_count_7d": 3},
             "examples": [{"transaction_id": "tx_7", "feature": "cust_tx_count_24h", "served": 2, "offline": 3}]}
    older = _served_check("2026-01-08T03:00:00+00:00", judged=True, compared=500, mismatches=0, mismatch_rate=0.0,
                          max_mismatch_rate=0.01, alarm=False, worst_features={}, examples=[])
    history = [*_state()["history"], older, _served_check("2026-01-09T03:00:00+00:00", **alarm),
               {"id": 10, "at": "2026-01-09T03:00:00+00:00", "kind": "served_features_skew", "version": "4",
                "reason": "served features: 12/500 compared transactions mismatch (2.40%) > limit 1.00% SKEW",
                "details": {"mismatch_rate": 0.024}}]
    html = render_page(_state(history=history), links)
    served = _Page(html).text_by_id["served-features"]
    assert "2.4 % mismatching" in served and "12 of 500 compared transactions (limit 1 %)" in served
    assert "ALARM" in served and "cust_tx_count_24h (12), merch_tx_count_7d (3)" in served
    assert "tx_7" in served and "40 served transactions waiting" in served and "2026-01-09 03:00:00" in served
    drift = html[html.index("<h2>Drift</h2>"):html.index("<h2>Served features</h2>")]
    assert "served_features_skew" in drift, "the alarm is listed with the drift decisions"
    assert "cust_tx_count_24h" not in drift, "the drift table does not repeat the served-features details"


def test_a_served_features_check_that_could_not_judge_says_why(links):
    unjudged = _served_check("2026-01-09T03:00:00+00:00", judged=False, alarm=False,
                             reason="no served transaction is ingested and materialised yet (310 waiting)")
    page = _Page(render_page(_state(history=[*_state()["history"], unjudged]), links))
    served = page.text_by_id["served-features"]
    assert "not judged: no served transaction is ingested and materialised yet (310 waiting)" in served
    assert "ALARM" not in served and "within the limit" not in served
    ok = _served_check("2026-01-09T03:00:00+00:00", judged=True, compared=200, mismatches=1, mismatch_rate=0.005,
                       max_mismatch_rate=0.01, alarm=False, worst_features={"hour_of_day": 1}, examples=[])
    assert "within the limit" in _Page(render_page(_state(history=[ok]), links)).text_by_id["served-features"]
    nothing = _Page(render_page(_state(), links)).text_by_id["served-features"]
    assert "No served-features check yet." in nothing
