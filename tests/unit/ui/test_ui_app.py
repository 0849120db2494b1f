"""The plugin's routes (without Airflow's auth, which tests/integration/test_ui_plugin.py checks for real)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from loopline.config import Settings
from loopline.lineage import history
from loopline.lineage.state import loop_state
from loopline_airflow.ui.app import LazyApp, create_app, served_file


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


def test_the_lazy_app_is_built_on_the_first_request_only():
    built = []

    async def inner(scope, receive, send):
        built.append(scope["path"])

    lazy = LazyApp(lambda: built.append("built") or inner)
    assert built == []
    asyncio.run(lazy({"path": "/a"}, None, None))
    asyncio.run(lazy({"path": "/b"}, None, None))
    assert built == ["built", "/a", "/b"]
