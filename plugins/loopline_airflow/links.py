"""Extra links on Loopline's tasks: the MLflow run, the model card, the validation or drift report.

Registered as the plugin's *global* operator links: Airflow 3 asks them in the api-server, with the
serialized task and a ``TaskInstanceKey`` (``get_link(operator, *, ti_key)``), whenever a task page
lists its links — so no DAG has to declare anything, and each link reads the task's result XCom from
the metadata DB. A link that does not apply to a task returns "" (Airflow shows no URL for it).

Which task gets which link is the pure ``link_url``; the XCom read is the only I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

TRAIN_TASK_ID = "train_candidate"  # as in loopline_airflow.launchers (not imported: keep this module light)
GATE_TASK_ID = "gate_candidate"

MLFLOW_RUN = "MLflow run"
MODEL_CARD = "Model card"
REPORT = "Report"

# (task_id, map_index) -> that task's return value in the same DAG run, or None.
XComReader = Callable[[str, int], Any]


def _report_path(value: Any) -> str | None:
    """A task's report: its result's ``report`` (ingest) or ``report_dir`` (drift), or the result itself
    when it is a path."""
    if isinstance(value, dict):
        value = value.get("report") or value.get("report_dir")
    return value if isinstance(value, str) and value else None


def _served(path: str | Path, settings: Any) -> str | None:
    """The URL on the plugin's app of the file to read for ``path`` under the state's reports or quarantine
    directory: a report directory's ``report.html`` (else ``verdict.json``), a JSON report's HTML
    rendering when there is one (``ui.app.report_file``); None when there is no such file here."""
    from loopline_airflow.ui.app import report_file
    from loopline_airflow.ui.render import state_file_href

    target = report_file(str(path))
    roots = (("reports", str(settings.state.reports)), ("quarantine", str(settings.state.quarantine)))
    href = state_file_href(target, roots)
    return f"{settings.airflow_base_url}/loopline/{href}" if href else None


def link_url(name: str, task_id: str, map_index: int, read: XComReader, settings: Any) -> str | None:
    """The URL of link ``name`` on task ``task_id`` of a run, or None when it does not apply."""
    if name == MLFLOW_RUN and task_id == TRAIN_TASK_ID:
        trained = read(TRAIN_TASK_ID, -1)
        run_id = trained.get("run_id") if isinstance(trained, dict) else None
        return f"{settings.mlflow_uri}/#/runs/{quote(run_id)}" if run_id else None
    if name == MODEL_CARD and task_id == GATE_TASK_ID:
        # The version comes from the training task's result (the gate's own verdict XCom names it too, but
        # a gate that crashed before deciding has none).
        trained = read(TRAIN_TASK_ID, -1)
        if not isinstance(trained, dict) or not trained.get("version"):
            return None
        card = settings.state.reports / "gate" / str(trained["version"]) / "model_card.md"
        if card.exists():
            return _served(card, settings)
        # Elsewhere (Kubernetes) the card is an artifact of the candidate's MLflow run.
        return f"{settings.mlflow_uri}/#/runs/{quote(trained['run_id'])}" if trained.get("run_id") else None
    if name == REPORT and task_id not in (TRAIN_TASK_ID, GATE_TASK_ID):
        report = _report_path(read(task_id, map_index))
        return _served(report, settings) if report else None
    return None


def _xcom_return_value(dag_id: str, run_id: str, task_id: str, map_index: int) -> Any:
    """A task's return value from the metadata DB (the api-server has it; no Execution API here)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key="return_value", run_id=run_id, dag_ids=dag_id, task_ids=task_id, map_indexes=map_index
            ).with_only_columns(XComModel.value)
        ).first()
    if row is None:
        return None
    value = row.value
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class _LooplineLink(BaseOperatorLink):
    name = ""

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from loopline.config import get_settings

        def read(task_id: str, map_index: int) -> Any:
            return _xcom_return_value(ti_key.dag_id, ti_key.run_id, task_id, map_index)

        return link_url(self.name, ti_key.task_id, ti_key.map_index, read, get_settings()) or ""


class MlflowRunLink(_LooplineLink):
    """The training task's MLflow run (metrics, parameters, the logged model)."""

    name = MLFLOW_RUN


class ModelCardLink(_LooplineLink):
    """The gate's model card for the candidate version (checks, metrics, reasons)."""

    name = MODEL_CARD


class ReportLink(_LooplineLink):
    """The report a task wrote: the Great Expectations validation of a batch, a drift report, ..."""

    name = REPORT


GLOBAL_LINKS = [MlflowRunLink(), ModelCardLink(), ReportLink()]
