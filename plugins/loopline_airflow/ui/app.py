"""The FastAPI app the plugin mounts at ``/loopline``: the "Model loop" page, its JSON and its reports.

| route | gives |
|---|---|
| ``GET /loopline/`` | the page (``render.render_page``) |
| ``GET /loopline/api/state`` | ``loop_state(settings)``: the JSON of ``loopline status --json``'s loop part |
| ``GET /loopline/files/{reports,quarantine}/<path>`` | a report or model card from the state directory |

Every route sits behind Airflow's own authentication — the dependency the core API uses for its UI
views (``requires_access_view(AccessView.WEBSITE)``): a JWT as ``Authorization: Bearer`` (from
``POST /auth/token``) or the ``_token`` cookie the Airflow UI sets at login. Anonymous: 401.

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

import mimetypes
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

URL_PREFIX = "/loopline"

# Reports are rendered: Evidently's HTML draws its plots with inline scripts, so scripts may run — but
# in a sandbox WITHOUT allow-same-origin, which gives the page an opaque origin: it cannot read the
# api-server's cookies or storage, and its requests to the api-server are cross-site, so the SameSite=Lax
# ``_token`` cookie is not sent and the answers are unreadable (CORS). No forms, popups or top-level
# navigation either (not allowed), and no network at all (default-src 'none'): a script injected into a
# report cannot act as the viewer, nor send the report's data anywhere. Everything Evidently needs is
# inline (scripts, styles, data: images and fonts): in chromium an Evidently 0.7.23 drift report draws
# the same under this policy as without it, with no violation reported.
REPORT_CSP = ("sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
              "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; form-action 'none'; "
              "base-uri 'none'")
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


def page_links(settings: Any) -> Any:
    """The page's link targets for these settings: MLflow's UI, the served state dirs, the DAGs."""
    from loopline.platform.stack import project_dag_ids
    from loopline_airflow.ui.render import DEFAULT_DAGS, PageLinks

    state = settings.state
    return PageLinks(
        mlflow_url=settings.mlflow_uri,
        state_roots=(("reports", str(state.reports)), ("quarantine", str(state.quarantine))),
        dags=tuple(project_dag_ids(settings)) or DEFAULT_DAGS,
    )


def served_file(settings: Any, area: str, relative: str) -> Path | None:
    """The file ``relative`` under the state directory ``area`` names, or None when there is none —
    also for anything that resolves outside it (``..``, symlinks out)."""
    roots = {"reports": settings.state.reports, "quarantine": settings.state.quarantine}
    if area not in roots:
        return None
    root = roots[area].resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def served_headers(area: str) -> dict[str, str]:
    """The security headers of every file served from ``area`` (see the module docstring)."""
    csp = QUARANTINE_CSP if area == "quarantine" else REPORT_CSP
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer"}


def create_app(settings_factory: Callable[[], Any] | None = None, *, authenticated: bool = True) -> Any:
    """The FastAPI app. ``authenticated=False`` is for unit tests of the routes only; the plugin
    always mounts the authenticated app."""
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    from loopline.config import get_settings

    dependencies = []
    if authenticated:
        from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
        from airflow.api_fastapi.core_api.security import requires_access_view

        dependencies.append(Depends(requires_access_view(AccessView.WEBSITE)))
    settings_of = settings_factory or get_settings
    app = FastAPI(title="Loopline model loop", dependencies=dependencies, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/api/state")
    def api_state() -> JSONResponse:
        from loopline.lineage.state import loop_state

        return JSONResponse(loop_state(settings_of()))

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        from loopline.lineage.state import loop_state
        from loopline_airflow.ui.render import render_page

        settings = settings_of()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return HTMLResponse(render_page(loop_state(settings), page_links(settings), generated_at=stamp))

    @app.get("/files/{area}/{relative:path}")
    def state_file(area: str, relative: str) -> FileResponse:
        path = served_file(settings_of(), area, relative)
        if path is None:
            raise HTTPException(status_code=404, detail=f"no report {area}/{relative}")
        headers = served_headers(area)
        if area == "quarantine":
            # Starlette encodes the name (RFC 5987 when it has quotes, CR/LF or non-ASCII characters).
            return FileResponse(path, media_type="application/octet-stream", headers=headers,
                                filename=path.name, content_disposition_type="attachment")
        # Markdown model cards read best as plain text in a browser tab.
        media = "text/plain; charset=utf-8" if path.suffix == ".md" else mimetypes.guess_type(path.name)[0]
        return FileResponse(path, media_type=media or "application/octet-stream", headers=headers)

    return app


app = LazyApp(create_app)
