"""The assets that hand work from one Loopline DAG to the next, defined once — with what their events say.

Producers list them in ``outlets``, consumers in ``schedule``; the event ``extra`` carries the
metadata (batch id, model version, reason) the consumer needs. The producer's ``*_extra`` and the
consumer's ``*_from_events`` live side by side here, so the two ends cannot drift apart, and the DAG
files only wire them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset

# A landing-zone batch passed Great Expectations and was published to the curated store.
VALIDATED_BATCH = Asset(name="loopline.validated_batch", uri="loopline://validated_batch")
# Feature aggregates for a batch interval were materialised offline and online.
FEATURES = Asset(name="loopline.features", uri="loopline://features")
# Something (drift, a person) asked for a new model; the extra says why.
RETRAIN_REQUESTED = Asset(name="loopline.retrain_requested", uri="loopline://retrain_requested")
# A model version passed the benchmark gate and holds the alias "challenger".
CHALLENGER = Asset(name="loopline.challenger", uri="loopline://challenger")

MANUAL_RUN = "manual run"


def _events(context: Mapping[str, Any], asset: Asset | None = None) -> list[Any]:
    """The asset events that triggered this run (of ``asset``, else of any), oldest first."""
    triggering = context.get("triggering_asset_events") or {}
    if asset is not None:
        return list(triggering.get(asset, []))
    return [event for events in triggering.values() for event in events]


def _extra(event: Any) -> dict[str, Any]:
    return dict(getattr(event, "extra", None) or {})


def validated_batch_extra(result: Any) -> dict[str, Any]:
    """``VALIDATED_BATCH``'s extra for a published batch (``loopline.data.ingest``'s result)."""
    return {
        "batch_id": result.batch_id,
        "kind": result.kind,
        "rows": result.published_rows,
        "content_hash": result.content_hash,
        "partitions": result.partitions,
        "warnings": len(result.warnings),
        "report": result.report,
    }


def features_extra(result: Any, interval: Mapping[str, Any]) -> dict[str, Any]:
    """``FEATURES``' extra for a materialised interval (``materialize``'s result, ``pending_interval``'s plan)."""
    return {**result.to_dict(), "batches": interval["batches"]}


def retrain_extra(result: Mapping[str, Any]) -> dict[str, Any]:
    """``RETRAIN_REQUESTED``'s extra for a drift check that asks for a retrain (``run_check(...).to_dict()``)."""
    return {
        "reason": f"drift: {result['reason']}",
        "evidence": result["summary"],
        "report": result["report_dir"],
        "mlflow_run_id": result["mlflow_run_id"],
        "model_version": result["model_version"],
    }


def trigger_reason(context: Mapping[str, Any]) -> str | None:
    """The ``reason`` of the first triggering asset event that gives one (drift, a person), else None."""
    for event in _events(context):
        if _extra(event).get("reason"):
            return str(_extra(event)["reason"])
    return None


def challenger_extra(trained: Mapping[str, Any]) -> dict[str, Any]:
    """``CHALLENGER``'s extra for a version that passed the gate (the training launcher's result)."""
    return {"version": trained["version"], "run_id": trained["run_id"], "reason": trained.get("reason")}


def challenger_from_events(context: Mapping[str, Any]) -> tuple[str | None, str]:
    """(version, reason) of the canary this run deploys: the ``version`` Param, else the newest
    ``CHALLENGER`` event's version (None: the current ``@challenger``); the reason says what started it."""
    version = (context.get("params") or {}).get("version")
    newest = _events(context, CHALLENGER)[-1:]
    if not newest:
        return (None if version is None else str(version)), MANUAL_RUN
    extra = _extra(newest[0])
    version = version or extra.get("version")
    reason = f"gate passed ({extra.get('reason') or 'no reason given'})"
    return (None if version is None else str(version)), reason
