"""Render the training pod exactly as KubernetesPodOperator would create it for a sample run.

Parses the real ``train_model`` DAG with the kubernetes backend, gives its training task a real Task
SDK task instance and template context (params validated against the DAG's Params, run id, try
number, Jinja rendering), answers the one XCom it pulls with a sample training set, and asks the
operator for its pod with ``build_pod_request_obj(dry_run=True)`` — no cluster or kube config needed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from loopline.k8s.config import SAMPLE_RUN_ID

DAG_ID = "train_model"


class _SampleRunTaskInstance(RuntimeTaskInstance):
    """A task instance of a sample run whose upstream XComs are given, not fetched from a supervisor."""

    _sample_xcoms: dict[str, Any] = {}

    def xcom_pull(self, task_ids: Any = None, *args: Any, **kwargs: Any) -> Any:
        return self._sample_xcoms.get(task_ids)


@contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is not None:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _load_dag(dags_dir: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(dags_dir / f"{DAG_ID}.py"))
    if DAG_ID not in dagbag.dags:
        errors = "\n".join(f"{f}: {e}" for f, e in dagbag.import_errors.items()) or "no DAG of that id"
        raise RuntimeError(f"cannot load the {DAG_ID} DAG with the kubernetes backend:\n{errors}")
    return dagbag.dags[DAG_ID]


def _task_instance(task: Any, conf: dict[str, Any], run_id: str, try_number: int) -> _SampleRunTaskInstance:
    from airflow.sdk.api.datamodels._generated import DagRun, DagRunState, DagRunType, TIRunContext

    when = datetime(2026, 1, 5, 3, tzinfo=UTC)
    dag_run = DagRun(
        dag_id=task.dag_id,
        run_id=run_id,
        logical_date=when,
        data_interval_start=when,
        data_interval_end=when,
        run_after=when,
        start_date=when,
        end_date=None,
        run_type=DagRunType.MANUAL,
        state=DagRunState.RUNNING,
        conf=conf,
        consumed_asset_events=[],
        partition_key=None,
    )
    ti = _SampleRunTaskInstance.model_construct(
        id=uuid.uuid4(),
        task_id=task.task_id,
        dag_id=task.dag_id,
        run_id=run_id,
        try_number=try_number,
        dag_version_id=uuid.uuid4(),
        map_index=-1,
        task=task,
        max_tries=task.retries,
        start_date=when,
    )
    ti._ti_context_from_server = TIRunContext(dag_run=dag_run, max_tries=task.retries)
    return ti


def render_training_pod(
    training_set_uri: str,
    conf: dict[str, Any] | None = None,
    *,
    dags_dir: Path | None = None,
    task_id: str = "train_candidate",
    run_id: str = SAMPLE_RUN_ID,
    try_number: int = 1,
    training_set_uri_prefix: str | None = None,
) -> dict[str, Any]:
    """The training pod of the ``train_model`` DAG for one sample run, as the API's dict.

    ``conf`` is the run's conf (validated against the DAG's Params); ``training_set_uri`` is what the
    upstream task would have published. ``training_set_uri_prefix`` stands in for
    ``LOOPLINE_TRAINING_SET_URI_PREFIX`` when that is not configured.
    """
    from kubernetes.client import ApiClient

    from loopline.config import get_settings

    settings = get_settings()
    with _environ(
        LOOPLINE_TRAINING_BACKEND="kubernetes", LOOPLINE_TRAINING_SET_URI_PREFIX=training_set_uri_prefix
    ):
        dag = _load_dag(dags_dir or settings.dags_dir)
    task = dag.get_task(task_id)
    if not hasattr(task, "build_pod_request_obj"):
        raise RuntimeError(f"{DAG_ID}.{task_id} is a {type(task).__name__}, not a pod operator")
    ti = _task_instance(task, conf or {}, run_id, try_number)
    upstream = getattr(task, "training_set_task_id", None)
    ti._sample_xcoms = {upstream: {"uri": training_set_uri}} if upstream else {}
    context = ti.get_template_context()
    task.render_template_fields(context)
    pod = task.build_pod_request_obj(context, dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)


def main(argv: list[str] | None = None) -> int:
    """``python -m loopline_airflow.pod_render --training-set-uri URI [--conf JSON] [--dags-dir D]
    [--training-set-uri-prefix P]``: the pod as JSON, the last line on stdout (``loopline k8s manifests`` runs this, so the
    domain package never imports Airflow); a refused conf or DAG is the last line of stderr, exit 2."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m loopline_airflow.pod_render", description=main.__doc__)
    parser.add_argument("--training-set-uri", required=True)
    parser.add_argument("--conf", default="{}", help="the sample run's conf as JSON")
    parser.add_argument("--dags-dir", type=Path, default=None)
    parser.add_argument("--training-set-uri-prefix", default=None)
    args = parser.parse_args(argv)
    import contextlib

    try:  # whatever parsing the DAG prints goes to stderr: stdout carries the pod only
        with contextlib.redirect_stdout(sys.stderr):
            pod = render_training_pod(
                args.training_set_uri,
                json.loads(args.conf),
                dags_dir=args.dags_dir,
                training_set_uri_prefix=args.training_set_uri_prefix,
            )
    except Exception as exc:  # the caller shows this line: the reason the pod could not be rendered
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    print(json.dumps(pod))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
