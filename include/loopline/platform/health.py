"""Health probes of the stack's services (MLflow, Airflow, the prediction service) and the first process of
a start that died.

``loopline up`` waits on them in both profiles: the embedded stack (``platform.stack``) and the distributed
profile (``platform.distributed``), which ``stack.up`` dispatches to. They live apart from both so the
distributed profile need not import the stack module that imports it (no import cycle).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx

from loopline.platform.processes import wait_until

if TYPE_CHECKING:
    from loopline.config import Settings
    from loopline.platform.processes import ProcessRecord

# The Airflow components `loopline up` waits for, by the names Airflow's health endpoint reports them under.
AIRFLOW_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")


def answers_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def mlflow_healthy(settings: Settings) -> bool:
    return answers_ok(f"{settings.mlflow_uri}/health")


def serving_alive(settings: Settings) -> bool:
    return answers_ok(f"{settings.serving_base_url}/healthz")


def airflow_health_url(settings: Settings) -> str:
    return f"{settings.airflow_base_url}/api/v2/monitor/health"


def airflow_health(settings: Settings, timeout: float = 2) -> dict[str, str]:
    """Component → status from Airflow's health endpoint ({} while the api-server is not up, or does not
    answer within ``timeout`` seconds)."""
    try:
        payload = httpx.get(airflow_health_url(settings), timeout=timeout).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {name: str(part.get("status")) for name, part in payload.items() if isinstance(part, dict)}


def airflow_health_report(settings: Settings, patience_s: float = 15) -> tuple[dict[str, str], str | None]:
    """Airflow's health for ``loopline status``, and why it is missing when it is.

    A waiting loop's 2-second probe is too short to report from: on a loaded machine (2 cores running the
    scheduler, the DAG processor and two Celery workers) the api-server can take longer to answer, and an
    empty health then read as "nothing known" with no reason. So this asks again until ``patience_s``
    is spent, each try allowed the time left.
    """
    deadline = time.monotonic() + patience_s
    health: dict[str, str] = {}

    def answered() -> bool:
        nonlocal health
        health = airflow_health(settings, timeout=max(deadline - time.monotonic(), 1))
        return bool(health)

    if wait_until(answered, patience_s, interval=1):
        return health, None
    return {}, f"no answer from {airflow_health_url(settings)} within {patience_s:.0f} s"


def airflow_healthy(settings: Settings) -> bool:
    health = airflow_health(settings)
    return all(health.get(name) == "healthy" for name in AIRFLOW_COMPONENTS)


def first_dead(records: list[ProcessRecord]) -> ProcessRecord | None:
    return next((r for r in records if not r.is_running()), None)
