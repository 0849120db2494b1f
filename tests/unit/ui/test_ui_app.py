"""The plugin's routes (without Airflow's auth, which tests/integration/test_ui_plugin.py checks for real)."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from loopline.config import Settings
from loopline.lineage import history
from loopline.status import loop_state
from loopline_airflow.ui.app import LazyApp, create_app, login_url, report_file, served_file, wants_login_page


@pytest.fixture
def settings(tmp_path, clean_loopline_env) -> Settings:
    return Settings(state_dir=tmp_path / "state", project_dir=tmp_path / "project")


@pytest.fixture
def client(settings) -> TestClient:
    return TestClient(create_app(lambda: settings, authenticated=False))


def test_state_api_is_loop_state_and_the_page_shows_it(settings, client):
    history.record(settings, "retrain_requested", version=3, reason="drift in 7 of 31 columns")
    got = client.get("/api/state")
    assert got.status_code == 200
    assert got.json() == loop_state(settings)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "drift in 7 of 31 columns" in page.text


def test_a_drift_check_links_its_html_report_and_its_airflow_run(settings):
    from datetime import UTC, datetime

    directory = settings.state.reports / "drift" / "20260301T120000000000Z"
    directory.mkdir(parents=True)
    (directory / "verdict.json").write_text("{}")
    event = history.record(
        settings,
        "drift_checked",
        version=3,
        reason="ok",
        at=datetime(2026, 3, 1, 12, tzinfo=UTC),
        report=str(directory),
        mlflow_run_id="run-9",
        drifted_share=0.25,
    )
    asked = []

    def runs(events):
        asked.append([e["id"] for e in events])
        return {event.id: ("monitor_drift", "scheduled__2026-03-01T12:00:00+00:00")}

    client = TestClient(create_app(lambda: settings, authenticated=False, event_runs=runs))
    page = client.get("/").text
    assert asked == [[event.id]]
    assert 'href="files/reports/drift/20260301T120000000000Z/verdict.json">report (JSON)</a>' in page
    (directory / "report.html").write_text("<html></html>")
    page = client.get("/").text
    assert 'href="files/reports/drift/20260301T120000000000Z/report.html">report</a>' in page
    assert client.get("/files/reports/drift/20260301T120000000000Z/report.html").status_code == 200
    assert (
        'href="../dags/monitor_drift/runs/scheduled__2026-03-01T12%3A00%3A00%2B00%3A00">Airflow run</a>'
        in page
    )
    assert "drifted_share</span>: 25 %" in page


def test_the_page_still_renders_when_the_airflow_runs_cannot_be_read(settings):
    history.record(settings, "drift_checked", version=3, reason="ok: 0/20 features drifted")

    def broken(events):
        raise RuntimeError("no metadata DB here")

    page = TestClient(create_app(lambda: settings, authenticated=False, event_runs=broken)).get("/")
    assert (
        page.status_code == 200
        and "ok: 0/20 features drifted" in page.text
        and ">Airflow run</a>" not in page.text
    )


def test_report_file_links_only_files_that_exist(tmp_path):
    folder = tmp_path / "drift" / "t1"
    assert report_file(str(folder)) is None
    folder.mkdir(parents=True)
    assert report_file(str(folder)) is None, "an empty report directory has nothing to open"
    (folder / "verdict.json").write_text("{}")
    assert report_file(str(folder)) == str(folder / "verdict.json")
    (folder / "report.html").write_text("<html></html>")
    assert report_file(str(folder)) == str(folder / "report.html")
    assert report_file(str(folder / "report.json")) == str(folder / "report.html"), (
        "people read its HTML rendering"
    )
    assert report_file(str(folder / "gone.json")) is None
    assert report_file(str(folder / "verdict.json")) == str(folder / "verdict.json")


def test_a_browser_without_a_session_is_sent_to_the_airflow_login_an_api_client_gets_401(settings):
    from fastapi import HTTPException

    app = create_app(lambda: settings, authenticated=False)

    @app.get("/private")
    def private(why: str = "Not authenticated", status: int = 401):
        raise HTTPException(status_code=status, detail=why)

    client = TestClient(app, follow_redirects=False)
    browser = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
    got = client.get("/private?x=1", headers=browser)
    assert got.status_code == 307 and got.headers["location"] == "/api/v2/auth/login?next=%2Fprivate%3Fx%3D1"
    api = client.get("/private", headers={"Accept": "application/json"})
    assert api.status_code == 401 and api.json() == {"detail": "Not authenticated"}
    assert client.get("/private").status_code == 401, "httpx's */* is not a browser"
    expired = client.get("/private", params={"why": "Invalid JWT token", "status": 403}, headers=browser)
    assert expired.status_code == 307
    forbidden = client.get("/private", params={"why": "Forbidden", "status": 403}, headers=browser)
    assert forbidden.status_code == 403, "signed in without the permission: no login loop"
    assert client.get("/files/reports/none.html", headers=browser).status_code == 404


def test_the_login_url_is_airflows_own_route_under_its_prefix():
    assert wants_login_page("GET", "text/html", 401, "Token Expired")
    assert not wants_login_page("POST", "text/html", 401, "Not authenticated")
    assert login_url("/loopline", "/loopline/") == "/api/v2/auth/login?next=%2Floopline%2F"
    # Starlette before 0.35 gave a mounted app the path below its mount point.
    assert (
        login_url("/loopline", "/files/reports/a.html")
        == "/api/v2/auth/login?next=%2Floopline%2Ffiles%2Freports%2Fa.html"
    )
    assert (
        login_url("/airflow/loopline", "/airflow/loopline/")
        == "/airflow/api/v2/auth/login?next=%2Fairflow%2Floopline%2F"
    )


def test_reports_are_served_from_the_state_dir_only(settings, client, tmp_path):
    card = settings.state.reports / "gate" / "2" / "model_card.md"
    card.parent.mkdir(parents=True)
    card.write_text("# fraud_detector v2")
    (tmp_path / "secret.txt").write_text("no")
    got = client.get("/files/reports/gate/2/model_card.md")
    assert got.status_code == 200 and got.text == "# fraud_detector v2"
    assert got.headers["content-type"].startswith("text/plain")
    assert client.get("/files/reports/gate/9/model_card.md").status_code == 404
    assert client.get("/files/etc/passwd").status_code == 404
    assert served_file(settings, "reports", "../../secret.txt") is None
    (settings.state.reports / "link").symlink_to(tmp_path / "secret.txt")
    assert served_file(settings, "reports", "link") is None, "a symlink out of the state dir is not served"


XSS = "</script><script>alert(1)</script>"


def _csp(response) -> dict[str, str]:
    """The Content-Security-Policy header as {directive: its values}."""
    policy = response.headers["content-security-policy"]
    return {
        d.split(" ", 1)[0]: (d.split(" ", 1) + [""])[1] for d in (x.strip() for x in policy.split(";")) if d
    }


def test_a_report_is_rendered_in_a_script_only_sandbox_with_an_opaque_origin(settings, client):
    # What Evidently writes when a request-supplied merchant_category reaches its report: the string
    # sits raw inside a <script> block, so it closes it and opens one of its own.
    report = settings.state.reports / "drift" / "2026-01-01" / "report.html"
    report.parent.mkdir(parents=True)
    report.write_text(f'<html><body><script>var data = {{"x": ["a", "{XSS}"]}};</script></body></html>')
    got = client.get("/files/reports/drift/2026-01-01/report.html")
    assert got.status_code == 200 and XSS in got.text
    assert got.headers["content-type"].startswith("text/html")
    assert "content-disposition" not in got.headers, "reports are meant to be read in the browser"
    assert got.headers["x-content-type-options"] == "nosniff"
    csp = _csp(got)
    # Scripts may run (Evidently draws with them) but never with the api-server's origin, and never
    # reach the network: no allow-same-origin, no forms, popups, navigation of the top, no requests.
    assert csp["sandbox"] == "allow-scripts"
    assert csp["default-src"] == "'none'" and "connect-src" not in csp
    assert csp["form-action"] == "'none'"
    # Every report the plugin serves gets the same policy, model cards and JSON included.
    card = settings.state.reports / "gate" / "3" / "model_card.md"
    card.parent.mkdir(parents=True)
    card.write_text("# v3")
    for path in ("gate/3/model_card.md", "drift/2026-01-01/report.html"):
        served = client.get(f"/files/reports/{path}")
        assert served.headers["content-security-policy"] == got.headers["content-security-policy"], path


@pytest.mark.parametrize("name", ["evil.html", "image.svg", "report.json", "batch.parquet", 'a"b; x=é.html'])
def test_quarantine_files_are_downloads_of_a_neutral_type_never_rendered(settings, client, name):
    folder = settings.state.quarantine / "transactions__evil__0123456789ab"
    folder.mkdir(parents=True)
    (folder / name).write_text(
        f"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>{XSS}"
    )
    got = client.get(f"/files/quarantine/{folder.name}/{quote(name)}")
    assert got.status_code == 200 and XSS in got.text
    assert got.headers["content-type"] == "application/octet-stream"
    disposition = got.headers["content-disposition"]
    assert disposition.startswith("attachment;"), disposition
    assert disposition.count('"') in (0, 2) and "x=" not in disposition, "a name cannot add parameters"
    assert got.headers["x-content-type-options"] == "nosniff"
    csp = _csp(got)
    assert csp["sandbox"] == "", "no allow-* at all: no scripts, no same origin, no forms"
    assert csp["default-src"] == "'none'"


def test_symlinks_in_the_served_roots_that_resolve_outside_are_refused(settings, client, tmp_path):
    secret = tmp_path / "run" / "secrets.json"
    secret.parent.mkdir()
    secret.write_text('{"airflow": "hunter2"}')
    for area in ("reports", "quarantine"):
        root = getattr(settings.state, area)
        (root / "batch").mkdir(parents=True)
        (root / "batch" / "secrets.json").symlink_to(secret)
        (root / "dir").symlink_to(secret.parent, target_is_directory=True)
        for path in ("batch/secrets.json", "dir/secrets.json", "batch/../../../run/secrets.json"):
            assert served_file(settings, area, path) is None, (area, path)
            got = client.get(f"/files/{area}/{path}")
            assert got.status_code == 404 and "hunter2" not in got.text, (area, path)
    # A link that stays inside its root is only another name for a file that may be served anyway.
    (settings.state.reports / "batch" / "real.json").write_text("{}")
    (settings.state.reports / "batch" / "alias.json").symlink_to(
        settings.state.reports / "batch" / "real.json"
    )
    assert client.get("/files/reports/batch/alias.json").status_code == 200


def test_the_lazy_app_is_built_on_the_first_request_only():
    built = []

    async def inner(scope, receive, send):
        built.append(scope["path"])

    lazy = LazyApp(lambda: built.append("built") or inner)
    assert built == []
    asyncio.run(lazy({"path": "/a"}, None, None))
    asyncio.run(lazy({"path": "/b"}, None, None))
    assert built == ["built", "/a", "/b"]


def test_reports_and_quarantine_on_object_storage_are_served_through_the_s3_api(
    tmp_path, clean_loopline_env, monkeypatch
):
    from local_servers import s3_server

    with s3_server("loopline") as endpoint:
        monkeypatch.setenv("LOOPLINE_STORAGE_URL", "s3://loopline/ui")
        monkeypatch.setenv("LOOPLINE_STORAGE_ENDPOINT_URL", endpoint)
        settings = Settings(state_dir=tmp_path / "state", project_dir=tmp_path / "project")
        client = TestClient(create_app(lambda: settings, authenticated=False))
        report = settings.state.reports / "drift" / "2026-01-01" / "report.html"
        report.write_text(f"<html>{XSS}</html>")
        (settings.state.reports / "drift" / "2026-01-01" / "verdict.json").write_text("{}")
        evil = settings.state.quarantine / "transactions__evil__0123456789ab" / 'a"b; x=é.html'
        evil.write_text(XSS)

        got = client.get("/files/reports/drift/2026-01-01/report.html")
        assert (
            got.status_code == 200 and XSS in got.text and got.headers["content-type"].startswith("text/html")
        )
        assert _csp(got)["sandbox"] == "allow-scripts" and got.headers["x-content-type-options"] == "nosniff"
        # The drift check records its report folder: the page links its HTML rendering, in object storage.
        assert report_file(str(report.parent)) == str(report)
        assert report_file("s3://loopline/ui/reports/drift/missing") is None
        assert client.get("/files/reports/drift/2026-01-01/../../../secret").status_code == 404
        assert served_file(settings, "reports", "drift/../drift/2026-01-01/report.html") is None

        download = client.get(f"/files/quarantine/transactions__evil__0123456789ab/{quote(evil.name)}")
        assert download.status_code == 200 and download.headers["content-type"] == "application/octet-stream"
        disposition = download.headers["content-disposition"]
        assert disposition.startswith("attachment;") and '"' not in disposition and "x=" not in disposition
        assert _csp(download)["sandbox"] == ""
    assert not (tmp_path / "state" / "reports").exists(), "nothing served from the api-server's disk"
