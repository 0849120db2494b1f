"""The model loop's state in one JSON: what serves, what waits, every version's verdict, the history.

``loopline status --json`` prints it (under the stack's own fields) and the UI's "Model loop" page and
``GET /loopline/api/state`` serve it. The MLflow registry says what serves (aliases, traffic tag);
the decision history says how it got there.
"""

from __future__ import annotations

import os
from typing import Any

from loopline.config import Settings
from loopline.config.use_case import load_use_case
from loopline.lineage import history

HISTORY_LIMIT = 200


def registry_uri(settings: Settings) -> str:
    """Where to read the registry from. Embedded mode reads its SQLite file directly, so the state is
    visible whether or not the local MLflow server runs (and a stopped server costs no retries)."""
    if settings.mode == "embedded" and not settings.mlflow_tracking_uri and settings.state.mlflow_db.exists():
        return f"sqlite:///{settings.state.mlflow_db}"
    return settings.mlflow_uri


def _alias(client: Any, name: str, alias: str) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return {"version": str(mv.version), "run_id": mv.run_id}


def loop_state(settings: Settings, model_name: str | None = None) -> dict[str, Any]:
    """``{champion, challenger, versions, history}`` of ``model_name`` (default: the use case's registered
    model); ``registry_error`` says why the registry part is empty when it could not be read (no model yet
    is not an error)."""
    model_name = model_name or load_use_case(settings.use_case).model_name
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # A down tracking server must not stall `loopline status` for minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from mlflow.exceptions import MlflowException

    from loopline.gating.gate import versions_summary
    from loopline.platform.mlflow_util import mlflow_client

    state: dict[str, Any] = {
        "model_name": model_name,
        "champion": None,
        "challenger": None,
        "versions": [],
        "history": [e.to_dict() for e in history.read(settings, limit=HISTORY_LIMIT)],
    }
    embedded_default = settings.mode == "embedded" and not settings.mlflow_tracking_uri
    if embedded_default and not settings.state.mlflow_db.exists():
        return state  # MLflow has never run here: no registry, no versions yet
    uri = registry_uri(settings)
    client = mlflow_client(uri)
    try:
        model = client.get_registered_model(model_name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            state["registry_error"] = f"{uri}: {exc.message}"
        return state
    except Exception as exc:  # connection refused, timeouts: report, don't crash `status`
        state["registry_error"] = f"{uri}: {exc}"
        return state
    state["champion"] = _alias(client, model_name, "champion")
    challenger = _alias(client, model_name, "challenger")
    if challenger is not None:
        from loopline.serving.config import load_serving_config
        from loopline.serving.routing import parse_share

        # The share exactly as the prediction service reads it ("0.05", "5%"; unreadable: 0).
        tag = load_serving_config(config_dir=settings.config_dir).registry.traffic_tag
        challenger["traffic"] = parse_share((model.tags or {}).get(tag))[0]
    state["challenger"] = challenger
    state["versions"] = versions_summary(settings, model_name, tracking_uri=uri)
    return state
