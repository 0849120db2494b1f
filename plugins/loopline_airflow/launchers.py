"""The training launcher: one factory, two backends, one argv, one result.

``LOOPLINE_TRAINING_BACKEND=local`` (default) runs ``python -m loopline.training.train`` as a process
of the Airflow worker; ``kubernetes`` runs the same argv in the trainer image on a GPU node through
KubernetesPodOperator. Either way the task's XCom is the trainer's result JSON plus the run's reason.

Light at parse time: the Kubernetes provider is imported only when that backend is chosen.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, task

from loopline_airflow.run_conf import run_params, training_result

TRAIN_TASK_ID = "train_candidate"


@task(task_id=TRAIN_TASK_ID, multiple_outputs=False)
def train_locally(training_set: dict, **context: Any) -> dict:
    """Run the trainer as a local process on ``training_set`` (a published training-set manifest)."""
    from pathlib import Path

    from loopline.config import get_settings
    from loopline.training.launch import run_local, trainer_argv

    settings = get_settings()
    params = run_params(context, training_set)
    result_json = Path(training_set["path"]).with_suffix(".result.json")
    argv = trainer_argv(
        training_set.get("uri", training_set["path"]),
        str(settings.policy_file("training")),
        str(result_json),
        params,
        tracking_uri=settings.mlflow_uri,
        use_case=settings.use_case,
    )
    return training_result(run_local(argv, result_json), params)


def training_launcher(training_set: Any, task_id: str = TRAIN_TASK_ID, **kwargs: Any) -> BaseOperator:
    """The training task for the configured backend, downstream of ``training_set``.

    ``training_set`` is the XComArg of the task that built and published the training set (its
    manifest with a ``uri``). Returns the operator; its XCom is the result dict on both backends.
    ``kwargs`` go to the operator (retries, pool, ...).
    """
    from loopline.config import get_settings

    settings = get_settings()
    if settings.training_backend != "kubernetes":
        return train_locally.override(task_id=task_id, **kwargs)(training_set).operator

    from loopline.k8s.config import load_config, require_reachable_training_sets
    from loopline_airflow.trainer_pod import trainer_pod_operator

    config = load_config(settings)
    # Fail at parse time, in the DAG's import error, rather than with a pod that cannot find its data.
    require_reachable_training_sets(config, settings.state.root)
    upstream = training_set.operator
    operator = trainer_pod_operator(config, task_id=task_id, training_set_task_id=upstream.task_id, **kwargs)
    upstream >> operator
    return operator
