"""Human-readable evidence for each check: Evidently's HTML + JSON report, the verdict, in MLflow.

The verdict comes from the fast path over the whole window; the report is Evidently's ``DataDriftPreset``
with the same pinned methods on a random sample of the window (20k rows render in seconds, 1M rows in
about a minute), so a person sees the distributions behind the numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.config.drift_policy import DriftConfig
from loopline.config.use_case import monitoring_experiment
from loopline.monitoring.decide import DriftVerdict, column_plan, on_drift_scale
from loopline.monitoring.reference import SCORE, Reference

REPORT_SAMPLE_ROWS = 20_000
DRIFT_RUN_TAG = "loopline.drift.last_run_id"
DRIFT_REPORT_TAG = "loopline.drift.last_report"
EVIDENTLY_METHODS = ("wasserstein", "jensenshannon")


@dataclass(frozen=True)
class ReportFiles:
    directory: Path
    html: Path | None
    json: Path | None
    verdict: Path


def report_dir(reports_root: Path, now: datetime) -> Path:
    """``<state>/reports/drift/<UTC timestamp>/`` (unique per check, sortable)."""
    root = Path(reports_root) if isinstance(reports_root, str) else reports_root  # a Path or object storage
    return root / "drift" / now.strftime("%Y%m%dT%H%M%S%fZ")


def evidently_report(
    reference: Reference,
    window: pd.DataFrame,
    config: DriftConfig,
    verdict: DriftVerdict | None = None,
    sample_rows: int = REPORT_SAMPLE_ROWS,
    seed: int = 0,
) -> Any:
    """Evidently's snapshot of DataDriftPreset with the pinned per-column methods and the verdict's
    (calibrated) thresholds, on the scale drift is measured on (window sampled). Evidently has neither of
    Loopline's score methods (alert rate, quantile bins): the score's row uses its Jensen-Shannon over
    Sturges bins, for the picture; the prediction-drift verdict is the one in verdict.json."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    plan = {c: p for c, p in column_plan(reference, config).items() if c in window.columns}
    columns = list(plan)
    if SCORE in window.columns and SCORE in reference.frame.columns:
        columns.append(SCORE)
    methods = {c: p.spec.method for c, p in plan.items()}
    thresholds = {c: p.spec.threshold for c, p in plan.items()}
    if verdict is not None:
        thresholds.update({c.column: c.threshold for c in verdict.columns if c.column in thresholds})
    if SCORE in columns:
        methods[SCORE] = (
            config.prediction.method if config.prediction.method in EVIDENTLY_METHODS else "jensenshannon"
        )
        thresholds[SCORE] = (
            verdict.prediction.threshold if verdict and verdict.prediction else config.prediction.threshold
        )
    current = on_drift_scale(window[columns], config)
    if len(current) > sample_rows:
        current = current.sample(sample_rows, random_state=seed)
    definition = DataDefinition(
        numerical_columns=[c for c in columns if not (c in plan and plan[c].categorical)],
        categorical_columns=[c for c in columns if c in plan and plan[c].categorical],
    )
    preset = DataDriftPreset(
        columns=columns,
        per_column_method=methods,
        per_column_threshold=thresholds,
        drift_share=config.dataset_drift_share,
    )
    return Report([preset]).run(
        current_data=Dataset.from_pandas(current.reset_index(drop=True), data_definition=definition),
        reference_data=Dataset.from_pandas(
            on_drift_scale(reference.frame[columns], config).reset_index(drop=True),
            data_definition=definition,
        ),
    )


def write_reports(
    directory: Path,
    verdict: DriftVerdict,
    reference: Reference | None = None,
    window: pd.DataFrame | None = None,
    config: DriftConfig | None = None,
) -> ReportFiles:
    """``verdict.json`` always; ``report.html`` + ``report.json`` when there was data to compare.

    A failing report (Evidently refuses an odd column) is noted in the verdict file, never fatal: the
    verdict stands on the fast path."""
    directory.mkdir(parents=True, exist_ok=True)
    html = report_json = None
    note = ""
    if reference is not None and window is not None and config is not None and verdict.columns:
        try:
            snapshot = evidently_report(reference, window, config, verdict)
            html, report_json = directory / "report.html", directory / "report.json"
            snapshot.save_html(str(html))
            report_json.write_text(json.dumps(snapshot.dict(), indent=1, default=str))
        except Exception as exc:  # Evidently raises ValueError/KeyError/TypeError for odd data
            html = report_json = None
            note = f"Evidently report failed: {type(exc).__name__}: {exc}"
    payload = {**verdict.to_dict(), "summary": verdict.summary(), "report_note": note}
    verdict_path = directory / "verdict.json"
    verdict_path.write_text(json.dumps(payload, indent=1, default=str))
    return ReportFiles(directory, html, report_json, verdict_path)


def log_check(
    tracking_uri: str,
    verdict: DriftVerdict,
    files: ReportFiles,
    *,
    model_name: str,
    config_path: Path | None = None,
) -> str:
    """One MLflow run per check in ``<model_name>_monitoring`` (``monitoring_experiment``); the champion
    version gets a tag that points at it. Returns the run id."""
    import mlflow

    from loopline.platform.mlflow_util import mlflow_client, use_experiment

    use_experiment(monitoring_experiment(model_name), tracking_uri)
    with mlflow.start_run(run_name=f"drift-{verdict.checked_at}") as run:
        mlflow.set_tags(
            {
                "loopline.component": "monitoring",
                "status": verdict.status,
                "model": model_name,
                "model_version": verdict.reference_version,
                "reasons": ", ".join(verdict.reasons) or "none",
            }
        )
        mlflow.log_params({"window_start": verdict.window_start, "window_end": verdict.window_end})
        metrics = {
            "rows": float(verdict.rows),
            "drifted_share": verdict.drifted_share,
            "drifted_columns": float(len(verdict.drifted_columns)),
            "quality_issues": float(len(verdict.quality)),
        }
        if verdict.prediction is not None and verdict.prediction.score is not None:
            metrics["prediction_drift_score"] = verdict.prediction.score
        metrics.update({f"drift.{c.column}": c.score for c in verdict.columns if c.score is not None})
        served = verdict.served_features or {}
        if served.get("judged"):
            metrics.update(
                {
                    "served_features.mismatch_rate": float(served["mismatch_rate"]),
                    "served_features.compared": float(served["compared"]),
                }
            )
        if served:
            mlflow.set_tag(
                "served_features",
                "alarm" if served.get("alarm") else "ok" if served.get("judged") else "not judged",
            )
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(files.directory), "drift")
        if config_path is not None and Path(config_path).exists():
            mlflow.log_artifact(str(config_path), "config")
    if verdict.reference_version:
        client = mlflow_client(tracking_uri)
        client.set_model_version_tag(model_name, verdict.reference_version, DRIFT_RUN_TAG, run.info.run_id)
        client.set_model_version_tag(
            model_name, verdict.reference_version, DRIFT_REPORT_TAG, str(files.directory)
        )
    run_id: str = run.info.run_id
    return run_id
