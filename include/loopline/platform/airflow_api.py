"""Talk to Airflow's REST API v2 with the official ``apache-airflow-client``.

The client has no token call, so the JWT comes from ``POST /auth/token`` over plain HTTP. Errors from
the API are turned into :class:`AirflowApiError` with a message a person can act on.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

TERMINAL_STATES = {"success", "failed"}


class AirflowApiError(RuntimeError):
    """Airflow refused a request or could not be reached; the message says what to do."""


@dataclass(frozen=True)
class RunResult:
    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str]

    @property
    def succeeded(self) -> bool:
        return self.state == "success"


def _detail(body: str | bytes | None) -> str:
    """The human part of an Airflow error body (FastAPI puts it in ``detail``)."""
    if not body:
        return ""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        payload = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:500]
    detail = payload.get("detail", payload) if isinstance(payload, dict) else payload
    if isinstance(detail, list):  # 422: a list of field errors
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{where}: {item.get('msg', item)}" if where else str(item.get("msg", item)))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return detail.get("reason") or detail.get("message") or json.dumps(detail)
    # Param validation errors append the whole JSON schema after a blank line: the first part says it all.
    return str(detail).split("\n\n", 1)[0]


class AirflowApi:
    """A logged-in session against one Airflow API server."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout = timeout
        self._client: Any = None

    def token(self) -> str:
        try:
            response = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": self.username, "password": self._password},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise AirflowApiError(
                f"cannot reach Airflow at {self.base_url} ({exc}); is the stack running? try `loopline up`"
            ) from exc
        if response.status_code in (401, 403):
            raise AirflowApiError(
                f"Airflow at {self.base_url} refused the login for user {self.username!r}; "
                "check the credentials in `loopline status`"
            )
        if response.status_code >= 400:
            raise AirflowApiError(f"Airflow login failed ({response.status_code}): {_detail(response.text)}")
        token: str = response.json()["access_token"]
        return token

    @property
    def client(self) -> Any:
        if self._client is None:
            import airflow_client.client as airflow_client

            config = airflow_client.Configuration(host=self.base_url, access_token=self.token())
            self._client = airflow_client.ApiClient(config)
        return self._client

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        import airflow_client.client as airflow_client

        try:
            return fn()
        except airflow_client.ApiException as exc:
            raise AirflowApiError(f"{what} failed: {exc.status} {exc.reason}: {_detail(exc.body)}") from exc
        except (OSError, airflow_client.exceptions.OpenApiException) as exc:
            raise AirflowApiError(f"{what} failed: {exc}") from exc

    def health(self) -> dict[str, Any]:
        """``/api/v2/monitor/health`` (no login needed)."""
        response = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=self.timeout)
        response.raise_for_status()
        health: dict[str, Any] = response.json()
        return health

    def list_dags(self) -> dict[str, bool]:
        """dag_id → is_paused for every DAG Airflow knows."""
        from airflow_client.client.api.dag_api import DAGApi

        api = DAGApi(self.client)
        found: dict[str, bool] = {}
        offset = 0
        while True:
            page = self._call("listing DAGs", functools.partial(api.get_dags, limit=100, offset=offset))
            found.update({d.dag_id: bool(d.is_paused) for d in page.dags})
            offset += len(page.dags)
            if not page.dags or offset >= page.total_entries:
                return found

    def set_paused(self, dag_id: str, paused: bool) -> None:
        from airflow_client.client import DAGPatchBody
        from airflow_client.client.api.dag_api import DAGApi

        api = DAGApi(self.client)
        self._call(
            f"{'pausing' if paused else 'un-pausing'} DAG {dag_id!r}",
            lambda: api.patch_dag(dag_id, DAGPatchBody(is_paused=paused), update_mask=["is_paused"]),
        )

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Start a run now; returns its run id. A paused or unknown DAG is an error, not a silent queue."""
        from airflow_client.client import TriggerDAGRunPostBody
        from airflow_client.client.api.dag_run_api import DagRunApi

        dags = self.list_dags()
        if dag_id not in dags:
            known = ", ".join(sorted(dags)) or "none yet"
            raise AirflowApiError(f"Airflow has no DAG {dag_id!r} (known: {known})")
        if dags[dag_id]:
            raise AirflowApiError(
                f"DAG {dag_id!r} is paused, so a run would wait forever; un-pause it in the UI "
                "or with `loopline up`"
            )
        body = TriggerDAGRunPostBody(logical_date=None, conf=conf or {})
        run = self._call(
            f"triggering {dag_id!r}", lambda: DagRunApi(self.client).trigger_dag_run(dag_id, body)
        )
        run_id: str = run.dag_run_id
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str:
        from airflow_client.client.api.dag_run_api import DagRunApi

        run = self._call(
            f"reading run {run_id!r}", lambda: DagRunApi(self.client).get_dag_run(dag_id, run_id)
        )
        return str(getattr(run.state, "value", run.state))

    def _task_instances(self, dag_id: str, run_id: str) -> list[Any]:
        from airflow_client.client.api.task_instance_api import TaskInstanceApi

        page = self._call(
            f"reading tasks of {run_id!r}",
            lambda: TaskInstanceApi(self.client).get_task_instances(dag_id, run_id, limit=1000),
        )
        task_instances: list[Any] = page.task_instances
        return task_instances

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        return {
            ti.task_id: str(getattr(ti.state, "value", ti.state))
            for ti in self._task_instances(dag_id, run_id)
        }

    def task_timings(self, dag_id: str, run_id: str) -> dict[str, tuple[datetime | None, datetime | None]]:
        """task_id → (start, end) of each task instance in a run."""
        return {ti.task_id: (ti.start_date, ti.end_date) for ti in self._task_instances(dag_id, run_id)}

    def asset_events(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest events of the asset called ``name`` (extra, timestamp, source run)."""
        from airflow_client.client.api.asset_api import AssetApi

        # Airflow 3.3.2 answers 500 while an event's new DAG run is still queued (its response model
        # requires the run's start_date). That lasts until the scheduler starts the run: retry briefly.
        for attempt in range(20):
            try:
                page = self._call(
                    f"reading events of asset {name!r}",
                    lambda: AssetApi(self.client).get_asset_events(
                        name_prefix_pattern=name, order_by=["-timestamp"], limit=limit
                    ),
                )
                break
            except AirflowApiError as exc:
                if "500" not in str(exc) or attempt == 19:
                    raise
                time.sleep(0.5)
        return [
            {
                "name": event.name,
                "extra": event.extra or {},
                "timestamp": event.timestamp,
                "source_dag_id": event.source_dag_id,
                "source_run_id": event.source_run_id,
            }
            for event in page.asset_events
            if event.name == name
        ]

    def dag_runs(self, dag_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest runs of a DAG: run id, state, start and end."""
        from airflow_client.client.api.dag_run_api import DagRunApi

        page = self._call(
            f"listing runs of {dag_id!r}",
            lambda: DagRunApi(self.client).get_dag_runs(dag_id, order_by=["-run_after"], limit=limit),
        )
        return [
            {
                "run_id": run.dag_run_id,
                "state": str(getattr(run.state, "value", run.state)),
                "start_date": run.start_date,
                "end_date": run.end_date,
            }
            for run in page.dag_runs
        ]

    def wait(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 1800.0,
        on_change: Callable[[dict[str, str]], None] | None = None,
    ) -> RunResult:
        """Follow a run until it ends; ``on_change`` sees task states whenever they change."""
        deadline = time.monotonic() + timeout
        last: dict[str, str] = {}
        while True:
            state = self.run_state(dag_id, run_id)
            tasks = self.task_states(dag_id, run_id)
            if tasks != last and on_change is not None:
                on_change(tasks)
            last = tasks
            if state in TERMINAL_STATES:
                return RunResult(dag_id, run_id, state, tasks)
            if time.monotonic() > deadline:
                raise AirflowApiError(f"run {run_id!r} of {dag_id!r} still {state} after {timeout:.0f} s")
            time.sleep(0.5)
