"""The drift check as one call (the I/O shell around ``decide`` and ``should_retrain``).

    reference (champion's run) + prediction-log window + labels → verdict → reports (state dir, MLflow)
    → history (drift_checked, and retrain_requested or retrain_suppressed) → whether to emit the asset

The same window's answered traffic is also checked for training/serving skew (``monitoring.served_check``:
the features serving logged vs the offline point-in-time ones); a mismatch rate above the policy's
``served_features.max_mismatch_rate`` is a data-quality alarm (history ``served_features_skew``), never a
retrain reason, and a failure of that check is recorded as "not judged", never a failed drift check.

The ``monitor_drift`` DAG calls ``run_check`` and, when it says so, emits ``loopline.retrain_requested``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.config import Settings
from loopline.config.drift_policy import DriftConfig, load_drift_config
from loopline.config.use_case import UseCase, load_use_case
from loopline.lineage import history
from loopline.monitoring.concept import UNIT, Baseline, ConceptCheck, concept_check, day_spread, lookback
from loopline.monitoring.decide import POLICY_KINDS, DriftVerdict, decide, should_retrain
from loopline.monitoring.reference import SCORE, Reference, load_reference
from loopline.monitoring.reports import log_check, report_dir, write_reports

# The prediction log's columns naming the scored event and its unit (serving's stored names, whatever the
# use case's id and unit columns are called).
from loopline.serving.prediction_log import EVENT_ID_COLUMN as LOG_ID
from loopline.serving.prediction_log import UNIT_ID_COLUMN as LOG_UNIT

# The history event of a served-features alarm (stale or wrong online features: a serving bug, not drift).
SERVED_SKEW = "served_features_skew"
log = logging.getLogger("loopline.monitoring")


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
    served_features: str = ""  # the served-features check in one line (see ``served_features_check``)
    served_features_alarm: bool = False
    drifted_share: float = 0.0  # share of the judged features that drifted (the dashboard's gauge)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_frame(log_rows: pd.DataFrame) -> pd.DataFrame:
    """Prediction-log rows → one column per model input (``features`` overlaid by the transaction fields
    of ``inputs``, as serving scored them) plus ``score``, ``model_version``, ``variant``, ids and ``ts``."""
    if log_rows.empty:
        return pd.DataFrame(columns=[LOG_ID, "score", "model_version", "variant", "ts"])
    features = pd.DataFrame.from_records([json.loads(t) for t in log_rows["features"]], index=log_rows.index)
    inputs = pd.DataFrame.from_records([json.loads(t) for t in log_rows["inputs"]], index=log_rows.index)
    frame = features.combine_first(inputs[[c for c in inputs.columns if c != LOG_ID]])
    for column in (LOG_ID, "score", "model_version", "variant", "ts"):
        frame[column] = log_rows[column]
    return frame.reset_index(drop=True)


def read_log(settings: Settings, start: datetime, end: datetime) -> pd.DataFrame:
    """The prediction log's rows of [start, end), every variant, JSON still as text."""
    from loopline.serving.prediction_log import open_prediction_log

    return open_prediction_log(settings, read_only=True).read(since=start, until=end)


def window_of(rows: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """``window_frame`` of the log ``rows`` of ``variants`` (shadow scoring excluded: it did not serve)."""
    if rows.empty:
        return window_frame(pd.DataFrame())
    return window_frame(rows[rows["variant"].isin(variants)])


def served_features_check(
    settings: Settings,
    config: DriftConfig,
    start: datetime,
    end: datetime,
    log_rows: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """``monitoring.served_check`` over [start, end) judged against ``config.served_features``: the report's
    fields plus ``max_mismatch_rate``, ``alarm`` and a one-line ``summary``. Never raises: a check that
    fails is recorded as not judged, with the error as its reason."""
    from loopline.monitoring.served_check import check_served

    limit = config.served_features.max_mismatch_rate
    try:
        report = check_served(
            settings, since=start, until=end, sample=config.served_features.sample, log_rows=log_rows
        )
    except Exception as exc:  # the drift verdict stands without it
        log.exception("the served-features check failed")
        reason = f"{type(exc).__name__}: {exc}"
        return {
            "judged": False,
            "reason": reason,
            "since": start.isoformat(),
            "until": end.isoformat(),
            "max_mismatch_rate": limit,
            "alarm": False,
            "summary": f"served features not judged: {reason}",
        }
    return {
        **report.to_dict(),
        "max_mismatch_rate": limit,
        "alarm": report.exceeds(limit),
        "summary": report.summary(limit),
    }


def label_frontier(settings: Settings, now: datetime) -> datetime | None:
    """The newest transaction whose confirmed-genuine label is known at ``now`` (the end of the gate's
    holdout too); None before any genuine label has arrived."""
    from loopline.gating.holdout import HoldoutError, labelled_range

    try:
        return labelled_range(settings, now)[1]
    except HoldoutError:
        return None


def load_baseline(tracking_uri: str, model_name: str, version: str) -> Baseline | None:
    """The version's gate holdout rows and scores (logged by the gate), or None when it has none."""
    from loopline.gating.gate import read_holdout_scores

    read = read_holdout_scores(tracking_uri, model_name, version)
    return None if read is None else Baseline(*read)


def served_with_labels(
    settings: Settings,
    version: str,
    start: datetime,
    end: datetime,
    variants: list[str],
    now: datetime,
    use_case: UseCase,
) -> pd.DataFrame:
    """``version``'s predictions in [start, end) (the use case's id, customer, score, time) with the labels
    known at ``now`` (the use case's label, NaN where none has arrived). Parses no feature JSON."""
    from loopline.features.curated import read_labels
    from loopline.serving.prediction_log import open_prediction_log

    label, id_column = use_case.label_column, use_case.id_column
    rows = open_prediction_log(settings, read_only=True).read(since=start, until=end, version=version)
    # The prediction log names each prediction's event by its own id column.
    rows = rows.rename(columns={LOG_ID: id_column, LOG_UNIT: UNIT})
    columns = [id_column, UNIT, SCORE, "ts"]
    if rows.empty:
        return pd.DataFrame(
            {**{c: pd.Series(dtype="object") for c in columns}, label: pd.Series(dtype="float64")}
        )
    rows = rows[rows["variant"].isin(variants)]
    labels = read_labels(settings, now)
    labels = labels[[id_column]].assign(**{label: labels[label].astype("float64")})
    return rows[columns].merge(labels, on=id_column, how="left")


def check_concept(
    settings: Settings,
    reference: Reference,
    config: DriftConfig,
    now: datetime,
    model_name: str,
    serving_threshold: float,
    use_case: UseCase,
) -> ConceptCheck:
    """Concept drift of the champion at ``now`` (see ``monitoring.concept``)."""
    frontier = label_frontier(settings, now)
    if frontier is None:  # nothing is judged before the first confirmed-genuine label: read nothing
        return concept_check(pd.DataFrame(), None, None, now, config.concept, serving_threshold, use_case)
    start, end = lookback(frontier, config.concept)
    served = served_with_labels(
        settings, reference.version, start, end, config.window.variants, now, use_case
    )
    threshold = config.concept.decision_threshold or serving_threshold
    regression = use_case.task == "regression"
    return concept_check(
        served,
        load_baseline(settings.mlflow_uri, model_name, reference.version),
        frontier,
        now,
        config.concept,
        threshold,
        use_case,
        day_spread(reference.frame, use_case, config.calibration) if regression else None,
    )


def run_check(
    settings: Settings,
    *,
    training_running: bool,
    now: datetime | None = None,
    config: DriftConfig | None = None,
    config_path: Path | None = None,
    model_name: str | None = None,
    log_to_mlflow: bool = True,
) -> CheckResult:
    """One check of the champion at ``now`` (the DAG passes its run's data interval end, so a re-run
    decides on the same window): verdict, reports, history, and the retrain decision."""
    from loopline.serving.config import load_serving_config
    from loopline.storage.files import report_folder

    now = now or datetime.now(UTC)
    config_path = config_path or settings.policy_file("drift")
    config = config or load_drift_config(config_path)
    use_case = load_use_case(settings.use_case)
    model_name = model_name or use_case.model_name  # default: the use case's registered model
    reference = load_reference(settings.mlflow_uri, model_name)
    start = now - timedelta(hours=config.window.hours)
    rows = read_log(settings, start, now)  # read once: the drift window and the served-features check
    served = served_features_check(settings, config, start, now, rows)
    window = window_of(rows, config.window.variants)
    del rows  # the JSON text; the window holds what drift needs
    champion = window[window["model_version"].astype(str) == reference.version] if len(window) else window
    # Serving's decision threshold: the alerts prediction drift counts and the recall concept drift judges.
    threshold = load_serving_config(config_dir=settings.config_dir).decision_threshold
    verdict = decide(
        reference,
        window,
        config,
        window_start=start,
        window_end=now,
        now=now,
        concept=check_concept(settings, reference, config, now, model_name, threshold, use_case),
        champion_scores=champion[SCORE] if len(champion) else None,
        decision_threshold=threshold,
        task=use_case.task,
    )
    verdict = replace(verdict, served_features=served)
    target = report_dir(settings.state.reports, now)  # the state dir, or object storage
    with report_folder(target) as local:
        files = write_reports(local, verdict, reference, window, config)
        run_id = (
            log_check(settings.mlflow_uri, verdict, files, model_name=model_name, config_path=config_path)
            if log_to_mlflow
            else ""
        )
    return record_decision(
        settings,
        verdict,
        config,
        now=now,
        training_running=training_running,
        report=str(target),
        mlflow_run_id=run_id,
    )


def record_decision(
    settings: Settings,
    verdict: DriftVerdict,
    config: DriftConfig,
    *,
    now: datetime,
    training_running: bool,
    report: str = "",
    mlflow_run_id: str = "",
) -> CheckResult:
    """Apply the retrain policy to ``verdict`` and record the check and the decision in history; a
    served-features alarm in the verdict is recorded as its own event (it never requests a retrain)."""
    evidence = {
        "summary": verdict.summary(),
        "status": verdict.status,
        "reasons": list(verdict.reasons),
        "drifted_columns": verdict.drifted_columns,
        "drifted_share": round(verdict.drifted_share, 4),
        "window": [verdict.window_start, verdict.window_end],
        "rows": verdict.rows,
        "report": report,
        "mlflow_run_id": mlflow_run_id,
    }
    served = verdict.served_features
    if served is not None:
        evidence["served_features"] = served
    history.record(
        settings,
        "drift_checked",
        version=verdict.reference_version or None,
        reason=verdict.summary(),
        at=now,
        **evidence,
    )
    if served is not None and served.get("alarm"):
        _record_served_alarm(settings, verdict, served, now=now, report=report, mlflow_run_id=mlflow_run_id)
    decision = should_retrain(
        verdict, history.read(settings, kinds=POLICY_KINDS), now, training_running, config
    )
    if decision.retrain:
        history.record(
            settings,
            "retrain_requested",
            version=verdict.reference_version or None,
            reason=decision.reason,
            at=now,
            **evidence,
        )
    elif decision.suppressed:
        history.record(
            settings,
            "retrain_suppressed",
            version=verdict.reference_version or None,
            reason=decision.reason,
            at=now,
            **evidence,
        )
    return CheckResult(
        decision.retrain,
        decision.reason,
        verdict.summary(),
        verdict.status,
        verdict.reference_version,
        report,
        mlflow_run_id,
        served_features=(served or {}).get("summary", ""),
        served_features_alarm=bool((served or {}).get("alarm")),
        drifted_share=round(verdict.drifted_share, 4),
    )


def _record_served_alarm(
    settings: Settings,
    verdict: DriftVerdict,
    served: dict[str, Any],
    *,
    now: datetime,
    report: str,
    mlflow_run_id: str,
) -> None:
    """``served_features_skew`` in history: the served features differ from the offline ones above the limit.

    The event kind must be one ``lineage.history`` knows; until it is, the alarm stays recorded in the
    ``drift_checked`` event (its reason and ``served_features``) and a warning says so."""
    if SERVED_SKEW not in history.EVENT_KINDS:
        log.warning(
            "%s is not a known history event kind yet; the alarm is in the drift_checked event: %s",
            SERVED_SKEW,
            served["summary"],
        )
        return
    details = {
        k: served.get(k)
        for k in (
            "compared",
            "mismatches",
            "mismatch_rate",
            "max_mismatch_rate",
            "worst_features",
            "examples",
            "waiting",
            "since",
            "until",
        )
    }
    history.record(
        settings,
        SERVED_SKEW,
        version=verdict.reference_version or None,
        reason=served["summary"],
        at=now,
        report=report,
        mlflow_run_id=mlflow_run_id,
        **details,
    )
