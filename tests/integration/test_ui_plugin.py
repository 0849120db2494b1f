"""The "Model loop" plugin on a real stack: auth, the state API, the page in a real headless browser,
task extra links, and the REST docs' Python-client example run as written (bad conf refused, good
conf runs).

One stack for the whole module (``loopline up`` in a scratch project on free ports, ~15-30 s).
The browser is Debian's chromium (``apt-get install -y chromium``), driven over the DevTools protocol
so that it carries the same ``_token`` cookie the Airflow UI sets at login — no test-only bypass.

Screenshots for the docs: ``LOOPLINE_UPDATE_SCREENSHOTS=1`` runs the real loop (``loopline demo`` on a
stack of its own, ~10 min) and writes the Model loop page and a drift report it links to
``docs/images/``; without it that test is skipped and nothing under docs/ is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import httpx
import psutil
import pytest
from scratch_stack import scratch_project
from test_local_stack import _env, _loopline, stack  # noqa: F401 (stack: the module-scoped fixture)

from loopline.config import Settings
from loopline.lineage import history
from loopline.platform.processes import free_port
from loopline.status import loop_state

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs" / "rest-api.md"
IMAGES = REPO_ROOT / "docs" / "images"
UPDATE_SCREENSHOTS = os.environ.get("LOOPLINE_UPDATE_SCREENSHOTS") == "1"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(scope="module")
def live(request) -> dict:
    """test_local_stack's module-scoped stack (its own instance here) plus its URL, login and settings."""
    running = request.getfixturevalue("stack")
    env = running["env"]
    status = json.loads(_loopline(env, "status", "--json").stdout)
    settings = Settings(
        project_dir=running["project"],
        state_dir=running["state"],
        airflow_port=int(env["LOOPLINE_AIRFLOW_PORT"]),
        mlflow_port=int(env["LOOPLINE_MLFLOW_PORT"]),
    )
    return {
        "settings": settings,
        "url": status["airflow"]["url"],
        "username": status["airflow"]["username"],
        "password": status["airflow"]["password"],
    }


@pytest.fixture(scope="module")
def token(live) -> str:
    response = httpx.post(
        f"{live['url']}/auth/token",
        timeout=30,
        json={"username": live["username"], "password": live["password"]},
    )
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
        client.create_model_version(
            "fraud_detector", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
    client.set_registered_model_alias("fraud_detector", "champion", "1")
    client.set_model_version_tag("fraud_detector", "2", "loopline.gate.passed", "false")
    client.set_model_version_tag(
        "fraud_detector", "2", "loopline.gate.checks", json.dumps({"quality": False})
    )
    # Recorded by the drift monitor's own producer (record_decision), as its DAG task does.
    from dataclasses import replace

    from loopline.config.drift_policy import load_drift_config
    from loopline.monitoring.monitor import record_decision

    now = datetime.now(UTC)
    served = {
        "judged": True,
        "compared": 400,
        "mismatches": 10,
        "mismatch_rate": 0.025,
        "max_mismatch_rate": 0.01,
        "alarm": True,
        "waiting": 17,
        "worst_features": {"merch_tx_count_24h": 10},
        "examples": [],
        "summary": "served features: 10/400 compared transactions mismatch (2.50%) > limit 1.00% SKEW",
    }
    record_decision(
        settings,
        replace(_drift_verdict(now, "1", 0, columns=20), served_features=served),
        load_drift_config(settings.policy_file("drift")),
        now=now,
        training_running=False,
    )
    history.record(settings, "gate_rejected", version=2, reason="PR-AUC 0.081 below the floor 0.10")
    return "1"


def _get(live, path: str, token: str | None = None, headers: dict | None = None, **kw) -> httpx.Response:
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    return httpx.get(f"{live['url']}{path}", headers=headers, timeout=30, **kw)


def test_anonymous_requests_get_401_on_the_api_the_page_and_the_reports(live):
    for path in ("/loopline/api/state", "/loopline/", "/loopline/files/reports/anything.json"):
        got = _get(live, path)
        assert got.status_code == 401 and got.json() == {"detail": "Not authenticated"}, path
    # A forged token is not a login either (Airflow answers 403 for an invalid JWT).
    assert _get(live, "/loopline/api/state", token="not.a.jwt").status_code in (401, 403)


def test_a_browser_without_a_session_is_sent_to_the_airflow_login_and_back(live):
    page = _get(live, "/loopline/", headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == 307, page.text
    assert page.headers["location"] == "/api/v2/auth/login?next=%2Floopline%2F"
    # Airflow's own route: it sends the browser on to the auth manager's login form, keeping `next`.
    login = _get(live, page.headers["location"])
    assert login.status_code == 307 and "/auth/login" in login.headers["location"], login.headers
    assert "next=%2Floopline%2F" in login.headers["location"]
    assert _get(live, login.headers["location"]).status_code == 200
    # An expired or forged session cookie is no session either (the Airflow UI's own rule).
    forged = httpx.get(
        f"{live['url']}/loopline/files/reports/x.html",
        cookies={"_token": "not.a.jwt"},
        timeout=30,
        headers={"Accept": BROWSER_ACCEPT},
    )
    assert (
        forged.status_code == 307
        and "next=%2Floopline%2Ffiles%2Freports%2Fx.html" in forged.headers["location"]
    )


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
    assert (
        f'version <a href="{live["settings"].mlflow_uri}/#/models/fraud_detector/versions/{champion}">'
        in card
    )
    assert "PR-AUC 0.081 below the floor 0.10" in response.text and "✗ quality" in response.text


def test_the_page_shows_the_last_served_features_check(live, token, champion):
    response = _get(live, "/loopline/", token)
    assert response.status_code == 200
    served = re.search(r'id="served-features".*?</div>\s*(?:<h2>|$)', response.text, re.S)
    assert served is not None, "the page has a served-features section"
    text = served.group(0)
    assert "2.5 % mismatching" in text and "10 of 400 compared events (limit 1 %)" in text
    assert "ALARM" in text and "merch_tx_count_24h (10)" in text


def test_the_plugin_adds_the_model_loop_to_the_airflow_menu(live, token):
    plugins = _get(live, "/api/v2/plugins", token).json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "loopline")
    assert {"name": "Model loop", "href": "/loopline/", "url_route": "model-loop"}.items() <= ours[
        "external_views"
    ][0].items()
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


class Rendered(NamedTuple):
    html: str  # the DOM chromium built
    url: str  # where the browser ended up (after redirects)


def _browser_render(
    url: str,
    cookie_url: str,
    token: str,
    profile: Path,
    *,
    screenshot: Path | None = None,
    arrived=None,
    settle_s: float = 0.0,
    max_height: int = 3200,
) -> Rendered:
    """What chromium shows for ``url`` with the Airflow UI's ``_token`` cookie set (none when ``token`` is
    empty). ``arrived(href)``: when the browser is where it should end up (default: at ``url``).
    ``screenshot``: a PNG of the page as a person sees it, 1280 px wide, at most ``max_height`` tall."""
    import base64

    import websocket

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed for this test: apt-get install -y chromium"
    arrived = arrived or (lambda href: href == url)
    port = free_port()
    proc = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            "--remote-debugging-address=127.0.0.1",
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, page = time.monotonic() + 60, None
        while page is None and time.monotonic() < deadline:
            try:
                page = next(
                    t
                    for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                    if t["type"] == "page"
                )
            except (httpx.HTTPError, StopIteration):
                time.sleep(0.2)
        assert page, "chromium did not open its DevTools port"
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        try:
            _cdp(ws, "Network.enable")
            if token:
                _cdp(ws, "Network.setCookie", name="_token", value=token, url=cookie_url)
            metrics = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
            _cdp(ws, "Emulation.setDeviceMetricsOverride", **metrics)
            _cdp(ws, "Page.navigate", url=url)
            href = ""
            while time.monotonic() < deadline:
                ready, href = _cdp(
                    ws,
                    "Runtime.evaluate",
                    expression="[document.readyState, location.href]",
                    returnByValue=True,
                )["result"]["value"]
                if ready == "complete" and arrived(href):
                    break
                time.sleep(0.1)
            time.sleep(settle_s)  # scripts that draw after load (the login form, Evidently's plots)
            if screenshot is not None:
                height = _cdp(
                    ws,
                    "Runtime.evaluate",
                    expression="document.documentElement.scrollHeight",
                    returnByValue=True,
                )["result"]["value"]
                _cdp(
                    ws,
                    "Emulation.setDeviceMetricsOverride",
                    **{**metrics, "height": min(int(height), max_height)},
                )
                shot = _cdp(ws, "Page.captureScreenshot", format="png")
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            html = _cdp(
                ws, "Runtime.evaluate", expression="document.documentElement.outerHTML", returnByValue=True
            )["result"]["value"]
            return Rendered(html, href)
        finally:
            ws.close()
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait(timeout=10)


def test_a_headless_browser_with_the_ui_login_cookie_shows_the_champion(live, token, champion, tmp_path):
    shot = tmp_path / "model-loop.png"
    html = _browser_render(
        f"{live['url']}/loopline/", live["url"], token, tmp_path / "profile", screenshot=shot
    ).html
    card = re.search(r'id="champion".*?</div></div>', html, re.S)
    assert card, f"no champion card in what the browser rendered:\n{html[:500]}"
    assert f">{champion}</a>" in card.group(0) and "champion" in card.group(0)
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 10_000


def test_a_logged_out_browser_lands_on_the_airflow_login_page(live, tmp_path):
    # Without the cookie the browser follows the redirect to Airflow's login form, not raw JSON.
    anonymous = _browser_render(
        f"{live['url']}/loopline/",
        live["url"],
        "",
        tmp_path / "anonymous",
        arrived=lambda href: "/auth/login" in href,
        settle_s=1.0,
    )
    assert "/auth/login" in anonymous.url and "next=" in anonymous.url, anonymous.url
    assert 'id="champion"' not in anonymous.html and "Not authenticated" not in anonymous.html
    assert "<form" in anonymous.html or "password" in anonymous.html.lower(), anonymous.html[:1000]


# What Evidently writes when a request-supplied merchant_category reaches its report.html: the value sits
# raw in a <script> block, closes it and runs a script of its own. This one reports what it could do with
# the viewer's login: its origin, the cookies, and a call to Airflow's API with the viewer's rights.
PROBE = (
    'var o = [String(window.origin)]; try { o.push("cookie=" + document.cookie) } catch (e) '
    '{ o.push("cookie:" + e.name) } var x = new XMLHttpRequest(); try { x.open("GET", "/api/v2/dags", '
    'false); x.send(); o.push("api:" + x.status) } catch (e) { o.push("api:" + e.name) } '
    'document.body.setAttribute("data-probe", o.join("|"));'
)
INJECTED_REPORT = f'<html><body><script>var data = {{"x": ["a", "</script><script>{PROBE}</script>"]}};</script></body></html>'


def test_a_script_injected_into_a_report_runs_without_the_viewers_origin_cookie_or_network(
    live, token, tmp_path
):
    report = live["settings"].state.reports / "drift" / "injected" / "report.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(INJECTED_REPORT)
    url = f"{live['url']}/loopline/files/reports/drift/injected/report.html"
    served = _get(live, url.removeprefix(live["url"]), token)
    assert served.status_code == 200 and served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"].startswith("sandbox allow-scripts;")
    html = _browser_render(url, live["url"], token, tmp_path / "profile").html
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
    variables = {
        **os.environ,
        "AIRFLOW_URL": live["url"],
        "AIRFLOW_USERNAME": live["username"],
        "AIRFLOW_PASSWORD": live["password"],
        **env,
    }
    return subprocess.run(
        [sys.executable, str(script)], env=variables, capture_output=True, text=True, timeout=180
    )


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
    links = _get(
        live,
        f"/api/v2/dags/platform_smoke/dagRuns/{quote(run_id, safe='')}/taskInstances/"
        "record_smoke_report/links",
        token,
    ).json()["extra_links"]
    assert (
        links["Report"]
        == f"{live['url']}/loopline/files/reports/{report.relative_to(live['settings'].state.reports)}"
    )
    assert links["MLflow run"] is None and links["Model card"] is None  # not a training or gate task
    served = _get(live, links["Report"].removeprefix(live["url"]), token)
    assert served.status_code == 200 and served.json() == json.loads(report.read_text())
    assert served.headers["content-security-policy"].startswith("sandbox allow-scripts;")


# --- history events linked to the Airflow runs that recorded them, and their reports ----------------


def _drift_verdict(at: datetime, version: str, drifted: int, columns: int = 10):
    from loopline.monitoring.decide import DriftVerdict
    from loopline.monitoring.fast_drift import ColumnDrift

    checks = tuple(
        ColumnDrift(
            f"feature_{i}",
            "numeric",
            "wasserstein",
            0.1,
            0.3 if i < drifted else 0.02,
            i < drifted,
            5000,
            1200,
        )
        for i in range(columns)
    )
    return DriftVerdict(
        status="ok",
        checked_at=at.isoformat(),
        window_start=(at - timedelta(hours=24)).isoformat(),
        window_end=at.isoformat(),
        rows=1200,
        reference_version=version,
        columns=checks,
        drifted_share=drifted / columns,
    )


def test_a_drift_check_links_the_monitor_drift_run_that_recorded_it_and_its_report(live, token, champion):
    from loopline.config.drift_policy import load_drift_config
    from loopline.monitoring.monitor import record_decision
    from loopline.monitoring.reports import report_dir, write_reports

    headers = {"Authorization": f"Bearer {token}"}
    api = f"{live['url']}/api/v2/dags/monitor_drift"
    # Paused, the run waits queued: a real DagRun in Airflow's metadata DB, without running a check here.
    assert httpx.patch(api, json={"is_paused": True}, headers=headers, timeout=30).status_code == 200
    created = httpx.post(f"{api}/dagRuns", json={"logical_date": None}, headers=headers, timeout=30)
    assert created.status_code == 200, created.text
    run = created.json()
    # check_drift records at its run's data interval end (a manual run: its run_after), as here.
    moment = datetime.fromisoformat(run["data_interval_end"] or run["run_after"]).astimezone(UTC)
    settings = live["settings"]
    config = load_drift_config(settings.policy_file("drift"))
    for at, drifted in ((moment - timedelta(hours=1), 1), (moment, 4)):  # the earlier check is no run's
        verdict = _drift_verdict(at, champion, drifted)
        files = write_reports(
            report_dir(settings.state.reports, at), verdict
        )  # no window data: verdict.json only
        record_decision(
            settings, verdict, config, now=at, training_running=False, report=str(files.directory)
        )

    page = _get(live, "/loopline/", token).text
    run_link = f'href="../dags/monitor_drift/runs/{quote(run["dag_run_id"], safe="")}">Airflow run</a>'
    assert page.count(run_link) == 2, "the later check, in the drift table and in the history"
    assert page.count('href="../dags/monitor_drift/runs/') == 2, "the earlier check matches no run: no link"
    assert 'id="drift-chart"' in page and "last 40 %" in page
    reports = re.findall(r'href="(files/reports/drift/[^"]+/verdict\.json)">report \(JSON\)</a>', page)
    assert reports, "each drift check links the file in its report directory"
    served = _get(live, f"/loopline/{reports[0]}", token)
    assert served.status_code == 200 and served.json()["rows"] == 1200
    assert served.headers["content-security-policy"].startswith("sandbox allow-scripts;")
    assert "drifted_share</span>: 40 %" in page and "{'" not in page


# --- screenshots of the page after a real loop, for the docs -----------------------------------------


@pytest.mark.skipif(
    not UPDATE_SCREENSHOTS,
    reason="LOOPLINE_UPDATE_SCREENSHOTS=1 runs the real loop (~10 min) "
    "and rewrites docs/images/model-loop*.png",
)
def test_screenshots_of_the_model_loop_page_after_a_real_loop(tmp_path):
    env = _env(tmp_path, scratch_project(tmp_path))
    try:
        demo = _loopline(env, "demo", timeout=2400)
        assert demo.returncode == 0, f"{demo.stdout[-4000:]}\n{demo.stderr[-4000:]}"
        for _ in range(2):  # two more hourly checks of the new champion, triggered now: the chart has a line
            checked = _loopline(env, "trigger", "monitor_drift", "--wait", timeout=900)
            assert checked.returncode == 0, f"{checked.stdout[-2000:]}\n{checked.stderr[-2000:]}"
        status = json.loads(_loopline(env, "status", "--json").stdout)
        url, login = status["airflow"]["url"], {k: status["airflow"][k] for k in ("username", "password")}
        token = httpx.post(f"{url}/auth/token", json=login, timeout=30).json()["access_token"]
        page = _browser_render(
            f"{url}/loopline/", url, token, tmp_path / "page", screenshot=IMAGES / "model-loop.png"
        )
        assert "<svg" in page.html and ">Airflow run</a>" in page.html and ">MLflow run</a>" in page.html
        report = re.search(r'href="(files/reports/drift/[^"]+/report\.html)">report</a>', page.html)
        assert report, "a drift check of the real loop links its Evidently report"
        _browser_render(
            f"{url}/loopline/{report.group(1)}",
            url,
            token,
            tmp_path / "report",
            settle_s=5.0,
            screenshot=IMAGES / "model-loop-drift-report.png",
            max_height=1400,
        )
    finally:
        _loopline(env, "down")
