"""The FastAPI app the plugin mounts at ``/loopline``: the "Model loop" page, its JSON and its reports.

| route | gives |
|---|---|
| ``GET /loopline/`` | the page (``render.render_page``) |
| ``GET /loopline/api/state`` | ``loop_state(settings)``: the JSON of ``loopline status --json``'s loop part |
| ``GET /loopline/files/{reports,quarantine}/<path>`` | a report or model card from the state directory |

Every route sits behind Airflow's own authentication — the dependency the core API uses for its UI
views (``requires_access_view(AccessView.WEBSITE)``): a JWT as ``Authorization: Bearer`` (from
``POST /auth/token``) or the ``_token`` cookie the Airflow UI sets at login. Anonymous: 401 JSON for API
clients; a browser (a GET that accepts ``text/html``) without a valid session is sent to Airflow's login
instead, as the Airflow UI itself does (401, or 403 "Invalid JWT token" → ``<airflow>/api/v2/auth/login
?next=<this page>``, which redirects to the auth manager's login form and back). A signed-in user without
the permission still gets 403.

The page links each history event to the report it wrote (a drift check records its report directory:
the link opens ``report.html`` in it, or ``verdict.json`` when Evidently wrote no HTML), to the Airflow
run that recorded it (``ui.runs``) and to its MLflow run (only when the tracking URI is an http(s)
server, the MLflow UI).

The app is built on its first request (``LazyApp``): every Airflow process loads plugins, and only the
api-server ever serves this, so FastAPI routes, Airflow's security module and MLflow cost nothing at
start-up anywhere.

Served files are untrusted content under the api-server's origin, where the ``_token`` cookie acts
with the viewer's rights: Evidently's ``report.html`` embeds request-supplied strings (a
``merchant_category`` like ``</script><script>…``) raw inside ``<script>``, and quarantine holds
whatever was delivered (``.html``, ``.svg``). So every file goes out with ``X-Content-Type-Options:
nosniff`` and a ``Content-Security-Policy`` ``sandbox`` (``served_headers``); quarantine files are
always downloads (``Content-Disposition: attachment``, ``application/octet-stream``), never rendered.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

URL_PREFIX = "/loopline"
# What a report directory is linked as, in order of preference (monitoring.reports writes them).
REPORT_FILES = ("report.html", "verdict.json")

log = logging.getLogger("loopline.ui")

# Reports are rendered: Evidently's HTML draws its plots with inline scripts, so scripts may run — but
# in a sandbox WITHOUT allow-same-origin, which gives the page an opaque origin: it cannot read the
# api-server's cookies or storage, and its requests to the api-server are cross-site, so the SameSite=Lax
# ``_token`` cookie is not sent and the answers are unreadable (CORS). No forms, popups or top-level
# navigation either (not allowed), and no network at all (default-src 'none'): a script injected into a
# report cannot act as the viewer, nor send the report's data anywhere. Everything Evidently needs is
# inline (scripts, styles, data: images and fonts): in chromium an Evidently 0.7.23 drift report draws
# the same under this policy as without it, with no violation reported.
REPORT_CSP = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; form-action 'none'; "
    "base-uri 'none'"
)
# Quarantine holds what was delivered, unvetted: never rendered (an attachment of a neutral type), and
# should a browser render it anyway, without scripts, plugins, forms or any request.
QUARANTINE_CSP = "sandbox; default-src 'none'; form-action 'none'; base-uri 'none'"


class LazyApp:
    """An ASGI app that builds the real one (``factory()``) when the first request arrives."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._app: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if self._app is None:
            self._app = self._factory()
        await self._app(scope, receive, send)


def report_file(path: str) -> str | None:
    """The file to link for a recorded report path: a report directory → its ``report.html`` (Evidently's
    rendering), else its ``verdict.json``; a JSON report with an HTML rendering beside it → the HTML; an
    existing file → itself; nothing on this machine → None (no link that would 404). Reports on object
    storage (``s3://...``) are looked up there."""
    from loopline.config import get_settings
    from loopline.storage.files import as_path

    candidate = as_path(get_settings(), path)
    if candidate.is_dir():
        for name in REPORT_FILES:
            if (candidate / name).is_file():
                return str(candidate / name)
        return None
    if candidate.suffix == ".json" and candidate.with_suffix(".html").is_file():
        return str(candidate.with_suffix(".html"))  # people read the HTML rendering of a JSON report
    return str(candidate) if candidate.is_file() else None


def page_links(settings: Any, event_runs: dict[int, tuple[str, str]] | None = None) -> Any:
    """The page's link targets for these settings: MLflow's UI, the served state dirs, the DAGs, the
    report files and the Airflow runs of events (``event_runs``, see ``ui.runs``)."""
    from loopline.platform.stack import project_dag_ids
    from loopline_airflow.ui.render import DEFAULT_DAGS, PageLinks

    state = settings.state
    return PageLinks(
        mlflow_url=settings.mlflow_uri,
        state_roots=(("reports", str(state.reports)), ("quarantine", str(state.quarantine))),
        dags=tuple(project_dag_ids(settings)) or DEFAULT_DAGS,
        report_file=report_file,
        event_runs=event_runs or {},
    )


def wants_login_page(method: str, accept: str, status_code: int, detail: Any) -> bool:
    """Whether an auth failure should send the client to the login page rather than answer it: a browser
    navigating (GET/HEAD accepting text/html) without a valid session — no session (401: "Not
    authenticated", "Token Expired") or one Airflow cannot verify (403 "Invalid JWT token", the Airflow UI's
    own rule). A signed-in user lacking the permission (403 "Forbidden") is answered, not looped to login."""
    if method not in ("GET", "HEAD") or "text/html" not in accept.lower():
        return False
    return status_code == 401 or (status_code == 403 and detail == "Invalid JWT token")


def login_url(root_path: str, path: str, query: str = "") -> str:
    """Airflow's login route (``/api/v2/auth/login``, which redirects to the auth manager's form) with
    ``next`` = the requested page. ``root_path``: where this app is mounted (``<airflow prefix>/loopline``);
    ``path`` as the server saw it. ``next`` is a path on the same server: Airflow refuses other hosts."""
    airflow_root = root_path[: -len(URL_PREFIX)] if root_path.endswith(URL_PREFIX) else root_path
    target = path if path.startswith(root_path) else root_path + path
    if query:
        target += "?" + query
    return f"{airflow_root}/api/v2/auth/login?{urlencode({'next': target})}"


def served_file(settings: Any, area: str, relative: str) -> Path | None:
    """The file ``relative`` under the state directory ``area`` names, or None when there is none —
    also for anything that resolves outside it (``..``, symlinks out)."""
    from loopline.storage.files import is_remote

    roots = {"reports": settings.state.reports, "quarantine": settings.state.quarantine}
    if area not in roots:
        return None
    if is_remote(roots[area]):  # object storage: no links; names are keys, so refuse climbing out by name
        path = roots[area].joinpath(*Path(relative).parts)
        return path if ".." not in Path(relative).parts and path.is_file() else None
    root = roots[area].resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def _attachment(name: str) -> str:
    """``Content-Disposition`` of a download named ``name`` (RFC 5987, as Starlette encodes odd names):
    percent-encoded, so no quote, ``;`` or line break in an object key can add a parameter."""
    from urllib.parse import quote

    return f"attachment; filename*=utf-8''{quote(name, safe='')}"


def served_headers(area: str) -> dict[str, str]:
    """The security headers of every file served from ``area`` (see the module docstring)."""
    csp = QUARANTINE_CSP if area == "quarantine" else REPORT_CSP
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


def create_app(
    settings_factory: Callable[[], Any] | None = None,
    *,
    authenticated: bool = True,
    event_runs: Callable[[list[dict[str, Any]]], dict[int, tuple[str, str]]] | None = None,
) -> Any:
    """The FastAPI app. ``authenticated=False`` is for unit tests of the routes only; the plugin
    always mounts the authenticated app. ``event_runs``: history events → their Airflow runs (default in
    the api-server: ``ui.runs.event_runs`` on Airflow's metadata DB; without authentication: none)."""
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from loopline.config import get_settings

    dependencies = []
    if authenticated:
        from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
        from airflow.api_fastapi.core_api.security import requires_access_view

        from loopline_airflow.ui.runs import event_runs as airflow_event_runs

        dependencies.append(Depends(requires_access_view(AccessView.WEBSITE)))
        event_runs = event_runs or airflow_event_runs
    settings_of = settings_factory or get_settings
    app = FastAPI(
        title="Loopline model loop",
        dependencies=dependencies,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(StarletteHTTPException)
    async def login_or_error(request: Request, exc: StarletteHTTPException) -> Any:
        if wants_login_page(request.method, request.headers.get("accept", ""), exc.status_code, exc.detail):
            return RedirectResponse(
                login_url(request.scope.get("root_path", ""), request.url.path, request.url.query),
                status_code=307,
            )
        return await http_exception_handler(request, exc)

    @app.get("/api/state")
    def api_state() -> JSONResponse:
        from loopline.status import loop_state

        return JSONResponse(loop_state(settings_of()))

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        from loopline.status import loop_state
        from loopline_airflow.ui.render import render_page

        settings = settings_of()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        state = loop_state(settings)
        runs: dict[int, tuple[str, str]] = {}
        if event_runs is not None:
            try:
                runs = event_runs(state.get("history") or [])
            except Exception:  # noqa: BLE001 - the page shows the loop without run links rather than fail
                log.exception("could not match history events to Airflow runs")
        return HTMLResponse(render_page(state, page_links(settings, runs), generated_at=stamp))

    @app.get("/files/{area}/{relative:path}")
    def state_file(area: str, relative: str) -> Any:
        path = served_file(settings_of(), area, relative)
        if path is None:
            raise HTTPException(status_code=404, detail=f"no report {area}/{relative}")
        headers = served_headers(area)
        if not isinstance(path, Path):  # on object storage: the bytes, read through the S3 API
            from fastapi.responses import Response

            if area == "quarantine":
                headers = {**headers, "Content-Disposition": _attachment(path.name)}
                return Response(path.read_bytes(), media_type="application/octet-stream", headers=headers)
            media = (
                "text/plain; charset=utf-8" if path.suffix == ".md" else mimetypes.guess_type(path.name)[0]
            )
            return Response(
                path.read_bytes(), media_type=media or "application/octet-stream", headers=headers
            )
        if area == "quarantine":
            # Starlette encodes the name (RFC 5987 when it has quotes, CR/LF or non-ASCII characters).
            return FileResponse(
                path,
                media_type="application/octet-stream",
                headers=headers,
                filename=path.name,
                content_disposition_type="attachment",
            )
        # Markdown model cards read best as plain text in a browser tab.
        media = "text/plain; charset=utf-8" if path.suffix == ".md" else mimetypes.guess_type(path.name)[0]
        return FileResponse(path, media_type=media or "application/octet-stream", headers=headers)

    return app


app = LazyApp(create_app)
