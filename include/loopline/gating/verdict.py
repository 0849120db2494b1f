"""The gate's verdict as a small JSON document: what ``gate_candidate`` returns as its XCom.

An API client reads a rejection's reasons from the task's ``return_value`` XCom
(``GET /api/v2/dags/train_model/dagRuns/<run>/taskInstances/gate_candidate/xcomEntries/return_value``)
instead of the task log. The full evidence stays in ``gate_report.json`` and the model card (``report``
and ``model_card`` point at them as artifacts of the candidate's MLflow run); this is the summary:

    {"decision": "rejected", "model_name", "version", "run_id", "why", "reasons": [...],
     "checks": {"quality": "failed", "fairness": "passed", "latency": "skipped", ...},
     "comparison": {"kind", "champion_version"},
     "metrics": {"pr_auc": {"candidate": 0.081, "champion": 0.12}, ...},
     "latency_ms": {"p95": 3.1, "p99": 4.2}, "report": "runs:/…/gate/gate_report.json", "model_card": …}

Strict JSON (no NaN: a metric that could not be computed is null), numbers rounded to 4 significant
digits, at most ``MAX_REASONS`` reasons of at most ``MAX_TEXT`` characters each.
"""

from __future__ import annotations

import math
from typing import Any

from loopline.gating.decide import GateVerdict

MAX_REASONS = 20
MAX_TEXT = 500
MAX_WHY = 2000
SIGNIFICANT = 4


def _number(value: Any) -> float | int | None:
    """A finite number rounded to ``SIGNIFICANT`` significant digits; None for NaN, inf or non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        return None
    return float(f"{value:.{SIGNIFICANT}g}")


def _text(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _check_state(check: Any) -> str:
    return "skipped" if check.skipped else "passed" if check.passed else "failed"


def verdict_summary(
    verdict: GateVerdict, *, model_name: str, version: str | int, run_id: str | None = None
) -> dict[str, Any]:
    """The verdict of the gate on ``models:/<model_name>/<version>`` (trained in MLflow run ``run_id``) as a
    small, strict-JSON dict (see the module docstring)."""
    reasons = [_text(r, MAX_TEXT) for r in verdict.reasons]
    if len(reasons) > MAX_REASONS:
        reasons = [*reasons[:MAX_REASONS], f"… and {len(reasons) - MAX_REASONS} more (see the gate report)"]
    quality = verdict.checks.get("quality")
    measured = (quality.details.get("metrics") or {}) if quality is not None else {}
    metrics = {
        name: {"candidate": _number(m.get("candidate")), "champion": _number(m.get("champion"))}
        for name, m in measured.items()
        if isinstance(m, dict)
    }
    latency = verdict.checks.get("latency")
    timing = (latency.details.get("measured") or {}) if latency is not None else {}
    latency_ms = {
        key.removesuffix("_ms"): _number(timing.get(key)) for key in ("p95_ms", "p99_ms") if key in timing
    }
    artifacts = f"runs:/{run_id}/gate" if run_id else None
    return {
        "decision": "passed" if verdict.passed else "rejected",
        "model_name": model_name,
        "version": str(version),
        "run_id": run_id,
        "why": _text(verdict.why, MAX_WHY),
        "reasons": reasons,
        "checks": {name: _check_state(check) for name, check in verdict.checks.items()},
        "comparison": {
            "kind": verdict.comparison.kind,
            "champion_version": verdict.comparison.champion_version,
        },
        "metrics": metrics,
        "latency_ms": latency_ms or None,
        "report": f"{artifacts}/gate_report.json" if artifacts else None,
        "model_card": f"{artifacts}/model_card.md" if artifacts else None,
    }
