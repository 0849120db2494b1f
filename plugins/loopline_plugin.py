"""Loopline's Airflow plugin: the "Model loop" page and API, its menu entry, and task extra links.

Airflow finds it by walking the plugins folder (``[core] plugins_folder`` = ``plugins/``, set by the
local stack, compose and Kubernetes alike); the class must live in exactly one file there — Airflow
loads every ``.py`` under the folder as a module of its own, and a second module holding the same
class would register it twice. No ``airflow.plugins`` entry point for the same reason.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from loopline_airflow.links import GLOBAL_LINKS
from loopline_airflow.ui.app import URL_PREFIX, app


class LooplinePlugin(AirflowPlugin):
    name = "loopline"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Loopline model loop"}]
    # Shown in the Airflow UI's navigation; url_route embeds the page (same origin, same login).
    external_views = [
        {
            "name": "Model loop",
            "href": f"{URL_PREFIX}/",
            "url_route": "model-loop",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
    global_operator_extra_links = GLOBAL_LINKS
