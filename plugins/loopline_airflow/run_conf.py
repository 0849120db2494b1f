"""Run parameters: refuse those a DAG does not declare; resolve the training run's (both launchers use it).

Airflow validates the conf of a triggered run against the DAG's Params, but only the keys it declares:
``{"epoch": 50}`` (for ``epochs``) is accepted and silently ignored, so the run trains with the config's
value and nobody notices. The first task of every DAG with Params calls ``reject_unknown_conf``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any


def unknown_conf_error(dag_id: str, conf: Mapping[str, Any] | None, declared: Iterable[str]) -> str | None:
    """The message for conf keys ``dag_id`` does not declare (None when all are known)."""
    known = sorted(declared)
    unknown = sorted(set(conf or {}) - set(known))
    if not unknown:
        return None
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return (
        f"{dag_id} does not take the run parameter(s) {', '.join(hints)}; it takes: "
        f"{', '.join(known) or 'none'}. Nothing was run: trigger it again with the right names."
    )


def reject_unknown_conf(context: Mapping[str, Any]) -> None:
    """Fail the task (no retry: a retry cannot fix the conf) when the run's conf has undeclared keys."""
    from airflow.sdk.exceptions import AirflowFailException

    dag = context["dag"]
    run = context.get("dag_run")
    message = unknown_conf_error(dag.dag_id, getattr(run, "conf", None), dag.params.keys())
    if message:
        raise AirflowFailException(message)


def run_moment(context: Mapping[str, Any]) -> Any:
    """The instant a task decides as of: its run's data interval end, or for a run without one (manual,
    asset-triggered) when it was asked for. Never the wall clock, so a cleared and re-run task decides on
    the same window."""
    return context.get("data_interval_end") or context["dag_run"].run_after


def training_result(result: dict[str, Any], params: Any) -> dict[str, Any]:
    """The training task's XCom on every backend: the trainer's result JSON and why it was trained."""
    return {**result, "reason": params.get("reason")}


def run_params(context: Any, training_set: Any) -> dict[str, Any]:
    """The run's Params, with the reason the upstream task resolved (e.g. the drift evidence of the
    asset event that started the run) in place of the Param's default."""
    params = dict(context["params"])
    if isinstance(training_set, dict) and training_set.get("reason"):
        params["reason"] = training_set["reason"]
    return params
