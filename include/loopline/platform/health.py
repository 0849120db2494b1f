"""Health probes of the stack's services (MLflow, Airflow, the prediction service) and the first process of
a start that died.

``loopline up`` waits on them in both profiles: the embedded stack (``platform.stack``) and the distributed
profile (``platform.distributed``), which ``stack.up`` dispatches to. They live apart from both so the
distributed profile need not import the stack module that imports it (no import cycle).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from loopline.config import Settings
    from loopline.platform.processes import ProcessRecord


def answers_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def mlflow_healthy(settings: Settings) -> bool:
    return answers_ok(f"{settings.mlflow_uri}/health")


def serving_alive(settings: Settings) -> bool:
    return answers_ok(f"{settings.serving_base_url}/healthz")


def airflow_health(settings: Settings) -> dict[str, str]:
    """Component → status from Airflow's health endpoint ({} while the api-server is not up)."""
    try:
        payload = httpx.get(f"{settings.airflow_base_url}/api/v2/monitor/health", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {name: str(part.get("status")) for name, part in payload.items() if isinstance(part, dict)}


def airflow_healthy(settings: Settings) -> bool:
    health = airflow_health(settings)
    wanted = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all(health.get(name) == "healthy" for name in wanted)


def first_dead(records: list[ProcessRecord]) -> ProcessRecord | None:
    return next((r for r in records if not r.is_running()), None)
