"""The gate's I/O shell: score candidate and champion on the holdout, run every check, decide, record.

Records: ``gate_report.json`` and ``model_card.md`` as artifacts of the candidate's MLflow run (under
``gate/``) and in ``<state>/reports/gate/<version>/``; model version tags ``loopline.gate.*``; on pass
the alias ``challenger``, on failure ``loopline.rejected`` with the reasons.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from loopline.config import Settings
from loopline.config.use_case import UseCase, load_use_case
from loopline.gating.card import render_model_card
from loopline.gating.decide import (
    CANDIDATE_IS_CHAMPION,
    CHAMPION_UNSCORABLE,
    NO_CHAMPION,
    VS_CHAMPION,
    Comparison,
    GateVerdict,
    decide,
)
from loopline.gating.holdout import FAIRNESS_GROUPS_KEY
from loopline.gating.infra import InfraResult, as_request, validate_serving
from loopline.gating.latency import measure_latency
from loopline.gating.metrics import (
    FairnessTable,
    LatencyStats,
    error_table,
    fairness_table,
    gap_increase_intervals,
    quality_metrics,
)
from loopline.gating.policy import HIGHER_IS_BETTER, GatePolicy, load_policy
from loopline.lineage import history
from loopline.platform.mlflow_util import mlflow_client
from loopline.storage.files import is_remote

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from loopline.serving.config import RegistryConfig

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
TAG_PASSED = "loopline.gate.passed"
TAG_CHECKS = "loopline.gate.checks"
TAG_REPORT = "loopline.gate.report"
TAG_CARD = "loopline.model_card"
TAG_REJECTED = "loopline.rejected"
TAG_REJECTED_REASONS = "loopline.rejected.reasons"
MAX_TAG_CHARS = 5000  # MLflow's limit on a tag value
# The candidate's holdout rows and scores, kept with its run: the baseline the drift monitor's concept
# check compares the served quality with, once this version is the champion.
HOLDOUT_SCORES_ARTIFACT = "gate/holdout_scores.parquet"
CHAMPION_SCORE, CHAMPION_VERSION = (
    "champion_score",
    "champion_version",
)  # its columns for the compared champion
HOLDOUT_UNIT = (
    "unit"  # its column of each row's unit (the use case's unit_column): the concept check's clusters
)


def __getattr__(name: str) -> str:
    """``DEFAULT_MODEL_NAME``: the configured use case's registered model (read when asked for, so importing
    this module reads no settings)."""
    if name == "DEFAULT_MODEL_NAME":
        return load_use_case(Settings().use_case).model_name
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class GateError(RuntimeError):
    """The gate cannot run at all (unknown version, unreadable holdout): fix the input, not the model."""


@dataclass(frozen=True)
class Scoring:
    scores: np.ndarray | None
    error: str = ""


def _client(settings: Settings) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    return mlflow_client(settings.mlflow_uri)


def score_holdout(model_uri: str, rows: pd.DataFrame, task: str = "binary_classification") -> Scoring:
    """Load ``model_uri`` and score ``rows`` with the inputs its signature declares (point-in-time
    features from the holdout, in the signature's types). Failures become a ``Scoring`` with ``error``:
    a classifier's scores must be probabilities, a regressor's predictions finite numbers."""
    import mlflow
    import numpy as np

    from loopline.training.pyfunc import as_model_input

    try:
        model = mlflow.pyfunc.load_model(model_uri)
        schema = model.metadata.get_input_schema()
        if schema is None:
            frame = rows
        else:
            categorical = [s.name for s in schema.inputs if getattr(s.type, "name", str(s.type)) == "string"]
            numeric = [s.name for s in schema.inputs if s.name not in categorical]
            frame = as_model_input(rows.reindex(columns=[*categorical, *numeric]), categorical, numeric)
        out = model.predict(frame)
        scores = np.asarray(out["score"] if hasattr(out, "columns") else out, dtype="float64").ravel()
    except Exception as exc:  # noqa: BLE001 - a model that cannot load or score is a verdict, not a crash
        return Scoring(None, f"{type(exc).__name__}: {str(exc)[:500]}")
    if scores.shape[0] != len(rows):
        return Scoring(None, f"{scores.shape[0]} scores for {len(rows)} holdout rows")
    if task == "regression":
        if not np.isfinite(scores).all():
            return Scoring(None, "predictions NaN or infinite")
    elif np.isnan(scores).any() or (scores < 0).any() or (scores > 1).any():
        return Scoring(None, "scores outside [0, 1] or NaN")
    return Scoring(scores)


def _read_holdout(path: str | Path, use_case: UseCase) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The holdout's labelled rows (the use case's label: int64 for a classifier, float64 for a regressor)
    and manifest: a local path or a shared-storage URI (``s3://``)."""
    from loopline.training.data import TrainingError, read_training_set

    try:
        frame, manifest = read_training_set(path)
    except TrainingError as exc:
        raise GateError(f"holdout unusable: {exc}") from None
    label = use_case.label_column
    labelled = frame[frame[label].notna()].reset_index(drop=True)
    labelled[label] = labelled[label].astype(
        "int64" if use_case.task == "binary_classification" else "float64"
    )
    if labelled.empty:
        raise GateError(
            f"the holdout {path} has no labelled rows: build it with build_holdout / `loopline gate`"
        )
    return labelled, manifest


def sample_requests(rows: pd.DataFrame, n: int, use_case: UseCase, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` holdout events as prediction-API requests (a fixed sample: repeatable timings): the use case's
    event columns the holdout has (the API takes an event as it lands)."""
    picked = rows.sample(n=min(n, len(rows)), random_state=seed) if len(rows) else rows
    columns = [c for c in use_case.event_columns if c in picked.columns]
    return [as_request(cast(dict[str, Any], r)) for r in picked[columns].to_dict("records")]


def _champion(client: Any, model_name: str, version: str) -> tuple[Any | None, Comparison | None]:
    """(champion model version, None) or (None, the comparison that ran instead of one against it).

    Only "no version holds the alias" counts as absent; any other failure to resolve it (a dangling
    alias, a registry error) is an unscorable champion, so the gate fails closed instead of judging the
    candidate on value thresholds alone."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException as exc:
        message = str(exc.message)
        if exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in message and "not found" in message:
            return None, Comparison(NO_CHAMPION)
        return None, Comparison(
            CHAMPION_UNSCORABLE,
            None,
            f"the alias `{CHAMPION_ALIAS}` could not be resolved: {exc.error_code}: {message[:300]}",
        )
    if str(mv.version) == str(version):
        return None, Comparison(CANDIDATE_IS_CHAMPION, str(mv.version))
    return mv, None


def _lineage(client: Any, run_id: str) -> dict[str, Any]:
    import mlflow

    run = client.get_run(run_id)
    try:
        manifest = mlflow.artifacts.load_dict(f"runs:/{run_id}/training_set/manifest.json")
    except Exception:  # noqa: BLE001 - lineage is best effort: a run without a manifest still gets a card
        manifest = None
    validation = {
        k: v
        for k, v in {**run.data.params, **run.data.tags}.items()
        if k.startswith(("gx.", "gx_", "data_validation", "loopline.validation", "loopline.gx"))
    }
    return {
        "params": dict(run.data.params),
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "training_set_manifest": manifest,
        "data_validation": validation,
    }


def _clean(value: Any) -> Any:
    """JSON without NaN (NaN → null): the report is read by other tools."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _fairness(
    policy: GatePolicy,
    labels: np.ndarray,
    scores: np.ndarray,
    groups: dict[str, np.ndarray],
    expected: dict[str, list[str]] | None = None,
    task: str = "binary_classification",
) -> FairnessTable:
    """A classifier's TPR/FPR per group at the operating point; a regressor's MAE per group."""
    f = policy.fairness
    if task == "regression":
        return error_table(labels, scores, groups, f.min_group_size, expected)
    return fairness_table(
        labels, scores, groups, policy.threshold(), f.min_group_size, f.min_group_positives, expected
    )


def run_gate(
    settings: Settings,
    version: str | int,
    holdout_path: str | Path,
    model_name: str | None = None,
    policy: GatePolicy | None = None,
) -> GateVerdict:
    """Gate ``models:/<model_name>/<version>`` (default: the use case's registered model) on the holdout;
    record the verdict with the version."""
    from mlflow.exceptions import MlflowException

    from loopline.serving.config import load_serving_config

    version = str(version)
    use_case = load_use_case(settings.use_case)
    model_name = model_name or use_case.model_name
    if policy is None:
        policy = load_policy(settings.policy_file("gate"))
    policy = policy.check_task(use_case.task, use_case.name)
    serving = load_serving_config(config_dir=settings.config_dir)
    policy = policy.with_threshold(serving.decision_threshold)
    client = _client(settings)
    try:
        candidate_mv = client.get_model_version(model_name, version)
    except MlflowException as exc:
        raise GateError(
            f"no version {version} of registered model {model_name!r} in {settings.mlflow_uri}: {exc.message}"
        ) from None
    rows, manifest = _read_holdout(holdout_path, use_case)
    group_columns = policy.fairness.columns(use_case)
    missing = [c for c in group_columns if c not in rows.columns]
    if missing:
        raise GateError(
            f"the holdout lacks the fairness group columns {missing}: rebuild it with build_holdout"
        )
    # The groups the labelled history has (build_holdout records them): one absent from the holdout is listed.
    expected_groups = manifest.get(FAIRNESS_GROUPS_KEY)
    labels = rows[use_case.label_column].to_numpy()
    candidate_uri = f"models:/{model_name}/{version}"

    task = use_case.task
    candidate = score_holdout(candidate_uri, rows, task)
    cand_metrics = (
        quality_metrics(labels, candidate.scores, policy, use_case.task)
        if candidate.scores is not None
        else None
    )
    groups = {c: rows[c].to_numpy() for c in group_columns}
    champion_mv, comparison = _champion(client, model_name, version)
    champ_metrics = None
    champ_fairness: FairnessTable | None = None
    champion_error = comparison.error if comparison else ""
    champion_scores: tuple[str, np.ndarray] | None = None  # (version, its holdout scores)
    if champion_mv is not None:
        champion = score_holdout(f"models:/{model_name}/{champion_mv.version}", rows, task)
        champion_error = champion.error
        if champion.scores is not None:
            champ_metrics = quality_metrics(labels, champion.scores, policy, use_case.task)
            champ_fairness = _fairness(policy, labels, champion.scores, groups, expected_groups, task)
            comparison = Comparison(VS_CHAMPION, str(champion_mv.version))
            champion_scores = (str(champion_mv.version), champion.scores)
        else:
            comparison = Comparison(CHAMPION_UNSCORABLE, str(champion_mv.version), champion.error)
    fairness = (
        _fairness(policy, labels, candidate.scores, groups, expected_groups, task)
        if candidate.scores is not None
        else None
    )

    reports = settings.state.reports / "gate" / version  # the state dir, or object storage
    # The infra check's own files (the probe server's log and PID record) need a local folder.
    workdir = settings.state.root / "scratch" / "gate" / version if is_remote(reports) else reports
    workdir.mkdir(parents=True, exist_ok=True)
    latency: LatencyStats | None = None
    if policy.latency.enabled:
        latency = measure_latency(
            settings,
            candidate_uri,
            version,
            sample_requests(rows, policy.latency.requests, use_case),
            n=policy.latency.requests,
            warmup=policy.latency.warmup,
        )
    infra: InfraResult | None = None
    if policy.infra.enabled:
        infra = validate_serving(
            settings,
            candidate_uri,
            version,
            sample_requests(rows, policy.infra.sample_requests, use_case),
            policy.infra.timeout_s,
            workdir,
        )

    assert comparison is not None  # _champion returns a champion version or the comparison that ran instead
    gap_increase = None
    if task == "binary_classification" and fairness is not None and champion_scores is not None:
        gap_increase = gap_increase_intervals(
            labels, candidate.scores, champion_scores[1], groups, fairness, policy.fairness.confidence
        )
    verdict = decide(
        policy,
        cand_metrics,
        champ_metrics,
        fairness,
        latency,
        infra,
        candidate_error=candidate.error,
        champion_fairness=champ_fairness,
        comparison=comparison,
        gap_increase=gap_increase,
    )
    report = {
        "model_name": model_name,
        "gated_at": datetime.now(UTC).isoformat(),
        "candidate": {"version": version, "run_id": candidate_mv.run_id, "model_uri": candidate_uri},
        # Which comparison ran, up front: a reader must never mistake "no champion" for "champion broken".
        "comparison": comparison.to_dict(),
        "champion": (
            {"version": str(champion_mv.version), "run_id": champion_mv.run_id, "error": champion_error}
            if champion_mv is not None
            else {"version": None, "run_id": None, "error": champion_error}
            if champion_error
            else None
        ),
        "holdout": {
            "path": str(holdout_path),
            "content_hash": manifest.get("content_hash"),
            "start": manifest.get("start"),
            "end": manifest.get("end"),
            "rows": manifest.get("rows"),
            "labelled_rows": int(len(rows)),
            "label": use_case.label_column,
            "task": task,
            # A classifier's positive rows (None for a regressor, whose label is a quantity).
            "positive_rows": int(labels.sum()) if task == "binary_classification" else None,
        },
        "policy": policy.model_dump(),
        "metrics": {
            "candidate": cand_metrics,
            "champion": champ_metrics,
            "higher_is_better": HIGHER_IS_BETTER,
            "candidate_error": candidate.error,
        },
        "fairness": fairness.to_dict() if fairness else None,
        "fairness_champion": champ_fairness.to_dict() if champ_fairness else None,
        "latency": latency.to_dict() if latency else None,
        "infra": infra.to_dict() if infra else None,
        "lineage": _lineage(client, candidate_mv.run_id),
        "verdict": verdict.to_dict(),
    }
    if candidate.scores is not None:
        log_holdout_scores(client, candidate_mv.run_id, rows, candidate.scores, use_case, champion_scores)
    record_verdict(
        settings,
        client,
        model_name,
        version,
        candidate_mv.run_id,
        _clean(report),
        verdict,
        reports,
        serving.registry,
    )
    return verdict


def log_holdout_scores(
    client: Any,
    run_id: str,
    rows: pd.DataFrame,
    scores: np.ndarray,
    use_case: UseCase,
    champion: tuple[str, np.ndarray] | None = None,
) -> None:
    """Log the labelled holdout rows (the use case's id, its unit as ``unit``, the label, the event time) with
    ``scores`` to the run: the concept-drift check's baseline (``monitoring.concept``, which resamples the units).
    ``champion``: the (version, scores) of the champion the gate compared on the same rows, logged as
    ``champion_score`` and ``champion_version``: how far apart the two versions' scores already were, which
    the canary's score-shift check allows for (``deployment.analysis.holdout_score_shift``)."""
    import tempfile

    import pandas as pd

    id_column, label = use_case.id_column, use_case.label_column
    # Each event its own unit when the use case names none (or the holdout lacks it).
    unit = use_case.unit_column if use_case.unit_column in rows.columns else id_column
    dtype = "int64" if use_case.task == "binary_classification" else "float64"
    frame = pd.DataFrame(
        {
            id_column: rows[id_column].astype(str).to_numpy(),
            HOLDOUT_UNIT: rows[unit].astype(str).to_numpy(),
            "score": scores,
            label: rows[label].to_numpy(dtype=dtype),
        }
    )
    if (
        use_case.time_column in rows
    ):  # the days it spans: a regressor's concept check weighs day shocks by them
        frame[use_case.time_column] = pd.to_datetime(rows[use_case.time_column], utc=True).array
    if champion is not None:
        frame[CHAMPION_SCORE] = champion[1]
        frame[CHAMPION_VERSION] = champion[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(HOLDOUT_SCORES_ARTIFACT).name
        frame.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), str(Path(HOLDOUT_SCORES_ARTIFACT).parent))


def read_holdout_scores(tracking_uri: str, model_name: str, version: str) -> tuple[str, pd.DataFrame] | None:
    """The version's gate holdout rows and scores (``log_holdout_scores``) and where they were read from, or
    None when it has none (gated before they were logged, or the registry cannot be read)."""
    import tempfile

    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    try:
        run_id = mlflow_client(tracking_uri).get_model_version(model_name, version).run_id
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=HOLDOUT_SCORES_ARTIFACT, dst_path=tmp, tracking_uri=tracking_uri
            )
            frame = pd.read_parquet(path)
    except (MlflowException, OSError):
        return None
    return f"gate holdout of v{version} (runs:/{run_id}/{HOLDOUT_SCORES_ARTIFACT})", frame


def record_verdict(
    settings: Settings,
    client: Any,
    model_name: str,
    version: str,
    run_id: str,
    report: dict[str, Any],
    verdict: GateVerdict,
    workdir: Path,
    registry: RegistryConfig,
) -> None:
    """Write report + card (``workdir``: the state dir or object storage; and run artifacts), tag the
    version, move the challenger alias."""
    card = render_model_card(report)
    if not is_remote(workdir):
        workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "gate_report.json").write_text(json.dumps(report, indent=2, default=str))
    (workdir / "model_card.md").write_text(card)
    client.log_dict(run_id, json.loads(json.dumps(report, default=str)), "gate/gate_report.json")
    client.log_text(run_id, card, "gate/model_card.md")
    tags = {
        TAG_PASSED: "true" if verdict.passed else "false",
        TAG_CHECKS: json.dumps(verdict.checks_passed()),
        TAG_REPORT: f"runs:/{run_id}/gate/gate_report.json",
        TAG_CARD: f"runs:/{run_id}/gate/model_card.md",
    }
    if not verdict.passed:
        tags[TAG_REJECTED] = "true"
        tags[TAG_REJECTED_REASONS] = ("; ".join(verdict.reasons) or verdict.why)[:MAX_TAG_CHARS]
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value[:MAX_TAG_CHARS])
    current = client.get_model_version(model_name, version)
    history.record(
        settings,
        "gate_passed" if verdict.passed else "gate_rejected",
        version=version,
        reason=verdict.why,
        checks=verdict.checks_passed(),
        report=str(workdir / "gate_report.json"),
    )
    if verdict.passed:
        for key in (TAG_REJECTED, TAG_REJECTED_REASONS):  # a re-gate that passes clears an old rejection
            if key in (current.tags or {}):
                client.delete_model_version_tag(model_name, version, key)
        # A new challenger starts its own canary at 0 %: it must never inherit a running canary's share.
        client.set_registered_model_tag(model_name, registry.traffic_tag, "0")
        if registry.mode_tag in (client.get_registered_model(model_name).tags or {}):
            client.delete_registered_model_tag(model_name, registry.mode_tag)
        client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, version)
    elif CHALLENGER_ALIAS in (
        current.aliases or []
    ):  # a version that fails a re-gate must not stay the challenger
        client.delete_registered_model_alias(model_name, CHALLENGER_ALIAS)


def versions_summary(
    settings: Settings, model_name: str | None = None, tracking_uri: str | None = None
) -> list[dict[str, Any]]:
    """Every registered version (of ``model_name``, default the use case's registered model) with its
    aliases, gate result and model card (``loopline status --json``)."""
    from mlflow.exceptions import MlflowException

    model_name = model_name or load_use_case(settings.use_case).model_name
    client = mlflow_client(tracking_uri) if tracking_uri else _client(settings)
    try:
        versions = client.search_model_versions(f"name='{model_name}'")
    except MlflowException:
        return []
    # search_model_versions leaves ``aliases`` empty; the registered model has the alias -> version map.
    by_version: dict[str, list[str]] = {}
    if versions:
        for alias, number in (client.get_registered_model(model_name).aliases or {}).items():
            by_version.setdefault(str(number), []).append(alias)
    out = []
    for mv in sorted(versions, key=lambda v: int(v.version)):
        tags = mv.tags or {}
        gate = None
        if TAG_PASSED in tags:
            try:
                checks = json.loads(tags.get(TAG_CHECKS, "{}"))
            except json.JSONDecodeError:
                checks = {}
            gate = {
                "passed": tags[TAG_PASSED] == "true",
                "checks": checks,
                "report": tags.get(TAG_REPORT),
                "rejected_reasons": tags.get(TAG_REJECTED_REASONS),
            }
        local = settings.state.reports / "gate" / str(mv.version) / "model_card.md"
        out.append(
            {
                "version": str(mv.version),
                "run_id": mv.run_id,
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "gate": gate,
                "model_card": tags.get(TAG_CARD),
                "model_card_path": str(local) if local.exists() else None,
            }
        )
    return out
