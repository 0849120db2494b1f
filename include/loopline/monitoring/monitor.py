"""The drift check as one call (the I/O shell around ``decide`` and ``should_retrain``).

    reference (champion's run) + prediction-log window + labels → verdict → reports (state dir, MLflow)
    → history (drift_checked, and retrain_requested or retrain_suppressed) → whether to emit the asset

The ``monitor_drift`` DAG calls ``run_check`` and, when it says so, emits ``loopline.retrain_requested``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.config import Settings
from loopline.lineage import history
from loopline.monitoring.config import DriftConfig, default_drift_config_path, load_drift_config
from loopline.monitoring.decide import (
    POLICY_KINDS,
    DriftVerdict,
    LabelledWindow,
    decide,
    should_retrain,
)
from loopline.monitoring.reference import LABEL, SCORE, Reference, load_reference
from loopline.monitoring.reports import log_check, report_dir, write_reports

MODEL_NAME = "fraud_detector"


@dataclass(frozen=True)
class CheckResult:
    """What the DAG needs: whether to emit the asset, and the evidence to put in its extra."""

    retrain: bool
    reason: str
    summary: str
    status: str
    model_version: str
    report_dir: str
    mlflow_run_id: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_frame(log_rows: pd.DataFrame) -> pd.DataFrame:
    """Prediction-log rows → one column per model input (``features`` overlaid by the transaction fields
    of ``inputs``, as serving scored them) plus ``score``, ``model_version``, ``variant``, ids and ``ts``."""
    if log_rows.empty:
        return pd.DataFrame(columns=["transaction_id", "score", "model_version", "variant", "ts"])
    features = pd.DataFrame.from_records([json.loads(t) for t in log_rows["features"]], index=log_rows.index)
    inputs = pd.DataFrame.from_records([json.loads(t) for t in log_rows["inputs"]], index=log_rows.index)
    frame = features.combine_first(inputs[[c for c in inputs.columns if c not in ("transaction_id",)]])
    for column in ("transaction_id", "score", "model_version", "variant", "ts"):
        frame[column] = log_rows[column]
    return frame.reset_index(drop=True)


def read_window(settings: Settings, start: datetime, end: datetime, variants: list[str]) -> pd.DataFrame:
    """The window's predictions of ``variants`` (shadow scoring excluded: it did not serve)."""
    from loopline.serving.prediction_log import open_prediction_log

    rows = open_prediction_log(settings, read_only=True).read(since=start, until=end)
    if rows.empty:
        return window_frame(pd.DataFrame())
    return window_frame(rows[rows["variant"].isin(variants)])


def labelled_windows(settings: Settings, reference: Reference, config: DriftConfig, now: datetime) -> list[LabelledWindow]:
    """The champion version's predictions of the last ``lookback_windows`` windows, with the labels known now.

    Read again at every check: labels land days late, so a window's labelled quality grows over time."""
    from loopline.features.store import read_labels

    c = config.concept
    span = timedelta(hours=c.window_hours)
    start = now - span * c.lookback_windows
    frame = read_window(settings, start, now, config.window.variants)
    frame = frame[frame["model_version"].astype(str) == reference.version] if len(frame) else frame
    if frame.empty:
        return []
    labels = read_labels(settings, now)[["transaction_id", LABEL]]
    frame = frame[["transaction_id", SCORE, "ts"]].merge(labels, on="transaction_id", how="left")
    windows = []
    for i in range(c.lookback_windows):
        w_start, w_end = start + span * i, start + span * (i + 1)
        part = frame[(frame["ts"] >= pd.Timestamp(w_start)) & (frame["ts"] < pd.Timestamp(w_end))]
        windows.append(LabelledWindow(w_start, w_end, part))
    return windows


def run_check(settings: Settings, *, training_running: bool, now: datetime | None = None,
              config: DriftConfig | None = None, config_path: Path | None = None,
              model_name: str = MODEL_NAME, log_to_mlflow: bool = True) -> CheckResult:
    """One check of the champion: verdict, reports, history, and the retrain decision."""
    now = now or datetime.now(UTC)
    config_path = config_path or default_drift_config_path(settings.project_dir)
    config = config or load_drift_config(config_path)
    reference = load_reference(settings.mlflow_uri, model_name)
    start = now - timedelta(hours=config.window.hours)
    window = read_window(settings, start, now, config.window.variants)
    champion = window[window["model_version"].astype(str) == reference.version] if len(window) else window
    verdict = decide(reference, window, config, window_start=start, window_end=now, now=now,
                     labelled_windows=labelled_windows(settings, reference, config, now),
                     champion_scores=champion[SCORE] if len(champion) else None)
    files = write_reports(report_dir(settings.state.reports, now), verdict, reference, window, config)
    run_id = log_check(settings.mlflow_uri, verdict, files, model_name=model_name,
                       config_path=config_path) if log_to_mlflow else ""
    return record_decision(settings, verdict, config, now=now, training_running=training_running,
                           report=str(files.directory), mlflow_run_id=run_id)


def record_decision(settings: Settings, verdict: DriftVerdict, config: DriftConfig, *, now: datetime,
                    training_running: bool, report: str = "", mlflow_run_id: str = "") -> CheckResult:
    """Apply the retrain policy to ``verdict`` and record the check and the decision in history."""
    evidence = {"summary": verdict.summary(), "status": verdict.status, "reasons": list(verdict.reasons),
                "drifted_columns": verdict.drifted_columns, "drifted_share": round(verdict.drifted_share, 4),
                "window": [verdict.window_start, verdict.window_end], "rows": verdict.rows,
                "report": report, "mlflow_run_id": mlflow_run_id}
    history.record(settings, "drift_checked", version=verdict.reference_version or None,
                   reason=verdict.summary(), at=now, **evidence)
    decision = should_retrain(verdict, history.read(settings, kinds=POLICY_KINDS), now, training_running, config)
    if decision.retrain:
        history.record(settings, "retrain_requested", version=verdict.reference_version or None,
                       reason=decision.reason, at=now, **evidence)
    elif decision.suppressed:
        history.record(settings, "retrain_suppressed", version=verdict.reference_version or None,
                       reason=decision.reason, at=now, **evidence)
    return CheckResult(decision.retrain, decision.reason, verdict.summary(), verdict.status,
                       verdict.reference_version, report, mlflow_run_id)
