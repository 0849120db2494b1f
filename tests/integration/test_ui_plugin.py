"""The "Model loop" plugin on a real stack: auth, the state API, the page in a real headless browser,
task extra links, and the REST docs' Python-client example run as written (bad conf refused, good
conf runs).

One stack for the whole module (``loopline up`` in a scratch project on free ports, ~15-30 s).
The browser is Debian's chromium (``apt-get install -y chromium``), driven over the DevTools protocol
so that it carries the same ``_token`` cookie the Airflow UI sets at login — no test-only bypass.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil
import pytest
from test_local_stack import _loopline, stack  # noqa: F401 (stack: the module-scoped fixture)

from loopline.config import Settings
from loopline.lineage import history
from loopline.lineage.state import loop_state
from loopline.platform.scratch import free_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs" / "rest-api.md"


@pytest.fixture(scope="module")
def live(request) -> dict:
    """test_local_stack's module-scoped stack (its own instance here) plus its URL, login and settings."""
    running = request.getfixturevalue("stack")
    env = running["env"]
    status = json.loads(_loopline(env, "status", "--json").stdout)
    settings = Settings(project_dir=running["project"], state_dir=running["state"],
                        airflow_port=int(env["LOOPLINE_AIRFLOW_PORT"]), mlflow_port=int(env["LOOPLINE_MLFLOW_PORT"]))
    return {"settings": settings, "url": status["airflow"]["url"], "username": status["airflow"]["username"],
            "password": status["airflow"]["password"]}


@pytest.fixture(scope="module")
def token(live) -> str:
    response = httpx.post(f"{live['url']}/auth/token", timeout=30,
                          json={"username": live["username"], "password": live["password"]})
    assert response.status_code in (200, 201), response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def champion(live) -> str:
    """A real registry entry in the stack's MLflow: version 1 of fraud_detector as champion, plus a
    rejected version 2, and in the history a drift check whose served features tripped the alarm, then
    the rejection (the newest event)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from loopline.platform.mlflow_util import mlflow_client

    settings = live["settings"]
    client = mlflow_client(settings.mlflow_uri)
    run = client.create_run(experiment_id="0")
    client.create_registered_model("fraud_detector")
    for _ in range(2):
        client.create_model_version("fraud_detector", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("fraud_detector", "champion", "1")
    client.set_model_version_tag("fraud_detector", "2", "loopline.gate.passed", "false")
    client.set_model_version_tag("fraud_detector", "2", "loopline.gate.checks", json.dumps({"quality": False}))
    history.record(settings, "drift_checked", version=1, reason="ok: 0/20 features drifted", served_features={
        "judged": True, "compared": 400, "mismatches": 10, "mismatch_rate": 0.025, "max_mismatch_rate": 0.01,
        "alarm": True, "waiting": 17, "worst_features": {"merch_tx_count_24h": 10}, "examples": []})
    history.record(settings, "gate_rejected", version=2, reason="PR-AUC 0.081 below the floor 0.10")
    return "1"


def _get(live, path: str, token: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{live['url']}{path}", headers=headers, timeout=30, **kw)


def test_anonymous_requests_get_401_on_the_api_the_page_and_the_reports(live):
    for path in ("/loopline/api/state", "/loopline/", "/loopline/files/reports/anything.json"):
        assert _get(live, path).status_code == 401, path
    # A forged token is not a login either (Airflow answers 403 for an invalid JWT).
    assert _get(live, "/loopline/api/state", token="not.a.jwt").status_code in (401, 403)


def test_with_a_token_the_api_is_the_loop_state(live, token, champion):
    response = _get(live, "/loopline/api/state", token)
    assert response.status_code == 200, response.text
    state = response.json()
    assert state["champion"]["version"] == champion
    assert state == loop_state(live["settings"])
    assert state["history"][-1]["reason"] == "PR-AUC 0.081 below the floor 0.10"


def test_the_page_shows_the_champion_and_the_rejection(live, token, champion):
    response = _get(live, "/loopline/", token)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    card = re.search(r'id="champion".*?</div></div>', response.text, re.S).group(0)
    assert f"version <a href=\"{live['settings'].mlflow_uri}/#/models/fraud_detector/versions/{champion}\">" in card
    assert "PR-AUC 0.081 below the floor 0.10" in response.text and "✗ quality" in response.text


def test_the_page_shows_the_last_served_features_check(live, token, champion):
    response = _get(live, "/loopline/", token)
    assert response.status_code == 200
    served = re.search(r'id="served-features".*?</div>\s*(?:<h2>|$)', response.text, re.S)
    assert served is not None, "the page has a served-features section"
    text = served.group(0)
    assert "2.5 % mismatching" in text and "10 of 400 compared transactions (limit 1 %)" in text
    assert "ALARM" in text and "merch_tx_count_24h (10)" in text


def test_the_plugin_adds_the_model_loop_to_the_airflow_menu(live, token):
    plugins = _get(live, "/api/v2/plugins", token).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "loopline")
    assert {"name": "Model loop", "href": "/loopline/", "url_route": "model-loop"}.items() <= ours["external_views"][0].items()
    registered = " ".join(ours["global_operator_extra_links"])
    assert all(name in registered for name in ("MlflowRunLink", "ModelCardLink", "ReportLink")), registered
    assert _get(live, "/api/v2/importErrors", token).json()["total_entries"] == 0


# --- the page in a real browser ---------------------------------------------------------------------

def _cdp(ws, method: str, **params):
    _cdp.counter = getattr(_cdp, "counter", 0) + 1
    ws.send(json.dumps({"id": _cdp.counter, "method": method, "params": params}))
    while True:
        message = json.loads(ws.recv())
        if message.get("id") == _cdp.counter:
            assert "error" not in message, f"{method}: {message['error']}"
            return message["result"]


def _browser_render(url: str, cookie_url: str, token: str, profile: Path) -> str:
    """The DOM chromium builds for ``url`` with the Airflow UI's ``_token`` cookie set."""
    import websocket

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed for this test: apt-get install -y chromium"
    port = free_port()
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
         "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={port}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline, page = time.monotonic() + 30, None
        while page is None and time.monotonic() < deadline:
            try:
                page = next(t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                            if t["type"] == "page")
            except (httpx.HTTPError, StopIteration):
                time.sleep(0.2)
        assert page, "chromium did not open its DevTools port"
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        try:
            _cdp(ws, "Network.enable")
            _cdp(ws, "Network.setCookie", name="_token", value=token, url=cookie_url)
            _cdp(ws, "Page.navigate", url=url)
            while time.monotonic() < deadline:
                ready = _cdp(ws, "Runtime.evaluate", expression="[document.readyState, location.href]",
                             returnByValue=True)["result"]["value"]
                if ready == ["complete", url]:
                    break
                time.sleep(0.1)
            return _cdp(ws, "Runtime.evaluate", expression="document.documentElement.outerHTML",
                        returnByValue=True)["result"]["value"]
        finally:
            ws.close()
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait(timeout=10)


def test_a_headless_browser_with_the_ui_login_cookie_shows_the_champion(live, token, champion, tmp_path):
    html = _browser_render(f"{live['url']}/loopline/", live["url"], token, tmp_path / "profile")
    card = re.search(r'id="champion".*?</div></div>', html, re.S)
    assert card, f"no champion card in what the browser rendered:\n{html[:500]}"
    assert f">{champion}</a>" in card.group(0) and "champion" in card.group(0)
    # Without the cookie the browser gets Airflow's 401, not the page.
    anonymous = _browser_render(f"{live['url']}/loopline/", live["url"], "", tmp_path / "anonymous")
    assert 'id="champion"' not in anonymous and "Not authenticated" in anonymous


# What Evidently writes when a request-supplied merchant_category reaches its report.html: the value sits
# raw in a <script> block, closes it and runs a script of its own. This one reports what it could do with
# the viewer's login: its origin, the cookies, and a call to Airflow's API with the viewer's rights.
PROBE = ('var o = [String(window.origin)]; try { o.push("cookie=" + document.cookie) } catch (e) '
         '{ o.push("cookie:" + e.name) } var x = new XMLHttpRequest(); try { x.open("GET", "/api/v2/dags", '
         'false); x.send(); o.push("api:" + x.status) } catch (e) { o.push("api:" + e.name) } '
         'document.body.setAttribute("data-probe", o.join("|"));')
INJECTED_REPORT = f'<html><body><script>var data = {{"x": ["a", "</script><script>{PROBE}</script>"]}};</script></body></html>'


def test_a_script_injected_into_a_report_runs_without_the_viewers_origin_cookie_or_network(live, token, tmp_path):
    report = live["settings"].state.reports / "drift" / "injected" / "report.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(INJECTED_REPORT)
    url = f"{live['url']}/loopline/files/reports/drift/injected/report.html"
    served = _get(live, url.removeprefix(live["url"]), token)
    assert served.status_code == 200 and served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"].startswith("sandbox allow-scripts;")
    html = _browser_render(url, live["url"], token, tmp_path / "profile")
    probe = re.search(r'data-probe="([^"]*)"', html)
    assert probe, f"the injected script did not run at all (the sandbox allows scripts):\n{html[:500]}"
    # Without the sandbox this reads "<api-server origin>|cookie=|api:200": Airflow's API as the viewer.
    assert probe.group(1) == "null|cookie:SecurityError|api:NetworkError"


def test_a_quarantined_file_is_a_download_never_a_page(live, token):
    folder = live["settings"].state.quarantine / "transactions__injected__000000000000"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batch.html").write_text(f"<script>{PROBE}</script>")
    served = _get(live, f"/loopline/files/quarantine/{folder.name}/batch.html", token)
    assert served.status_code == 200, served.text
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-disposition"].startswith("attachment;")
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"].startswith("sandbox;")


# --- the REST docs' Python-client example, run as written -------------------------------------------

def _python_example() -> str:
    section = DOCS.read_text().split("## With the official Python client", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _run_example(live, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "trigger_example.py"
    script.write_text(_python_example())
    variables = {**os.environ, "AIRFLOW_URL": live["url"], "AIRFLOW_USERNAME": live["username"],
                 "AIRFLOW_PASSWORD": live["password"], **env}
    return subprocess.run([sys.executable, str(script)], env=variables, capture_output=True, text=True, timeout=180)


def test_the_python_client_example_refuses_a_bad_conf_naming_the_field(live, tmp_path):
    out = _run_example(live, tmp_path, DAG_ID="train_model", CONF='{"epochs": 0, "reason": "try"}')
    assert out.returncode == 2, f"{out.stdout}\n{out.stderr}"
    assert "Airflow refused the run (400)" in out.stderr and "param epochs" in out.stderr, out.stderr
    assert "minimum of 1" in out.stderr
    wrong_type = _run_example(live, tmp_path, DAG_ID="train_model", CONF='{"learning_rate": "fast"}')
    assert wrong_type.returncode == 2 and "param learning_rate" in wrong_type.stderr, wrong_type.stderr


def test_the_python_client_example_runs_a_good_conf_and_its_report_is_linked(live, token, tmp_path):
    out = _run_example(live, tmp_path, DAG_ID="platform_smoke", CONF="{}", RESULT_TASK="record_smoke_report")
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    lines = out.stdout.strip().splitlines()
    run_id = lines[0].removeprefix("triggered platform_smoke run ")
    assert lines[-2] == f"platform_smoke {run_id}: success"
    report = Path(json.loads(lines[-1]))
    assert report.is_file() and report.is_relative_to(live["settings"].state.reports)

    # The task's "Report" extra link, computed by the plugin in the api-server from that XCom.
    links = _get(live, f"/api/v2/dags/platform_smoke/dagRuns/{quote(run_id, safe='')}/taskInstances/"
                        "record_smoke_report/links", token).json()["extra_links"]
    assert links["Report"] == f"{live['url']}/loopline/files/reports/{report.relative_to(live['settings'].state.reports)}"
    assert links["MLflow run"] is None and links["Model card"] is None  # not a training or gate task
    served = _get(live, links["Report"].removeprefix(live["url"]), token)
    assert served.status_code == 200 and served.json() == json.loads(report.read_text())
    assert served.headers["content-security-policy"].startswith("sandbox allow-scripts;")
