"""MLflow for the trainer: a run with the training set's lineage, the config, every epoch (and with
``hpo.trials > 0`` each Optuna trial as a nested run), metrics, the drift reference and the model,
registered as a new version (``log_and_register``, which returns the ``TrainResult``).

Apart from the loop (``training.loop``), which knows nothing of MLflow, and from the entry point
(``training.train``), which reads the set, joins the torchrun group and calls this on rank 0 only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from loopline.config.use_case import TaskType, UseCase
from loopline.platform.mlflow_util import use_experiment
from loopline.training.config import TASK_METRICS, TrainingConfig, check_task
from loopline.training.data import TrainingError
from loopline.training.distributed import SINGLE, DistributedContext
from loopline.training.loop import Fitted, fit

REASON_TAG = "loopline.reason"
TASK_TAG = "loopline.task"  # the use case's task: binary_classification | regression


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    registered_model: str
    version: str
    metrics: dict[str, float]
    training_set_hash: str
    training_set: str
    device: str
    git_sha: str
    logged_model_uri: str = ""
    feature_columns: list[str] = field(default_factory=list)
    reason: str = ""
    world_size: int = 1
    hpo: dict[str, Any] | None = None  # the study summary when a search ran

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def git_sha() -> str:
    """The commit of the code that trains: ``LOOPLINE_GIT_SHA`` (images set it from their ``GIT_SHA`` build
    argument: no .git inside), else the checkout's HEAD, else "unknown"."""
    if os.environ.get("LOOPLINE_GIT_SHA", "unknown") != "unknown":
        return os.environ["LOOPLINE_GIT_SHA"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _default_tracking_uri() -> str:
    from loopline.config import Settings

    return Settings().mlflow_uri


def _log_epoch(row: dict[str, float]) -> None:
    import mlflow

    mlflow.log_metrics(
        {k: v for k, v in row.items() if k != "epoch" and math.isfinite(v)}, step=int(row["epoch"])
    )


@dataclass
class Trained:
    fitted: Fitted
    config: TrainingConfig  # what the kept model was trained with (the best trial's values under HPO)
    study: Any = None  # hpo.StudySummary when a search ran


def fit_or_search(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    config: TrainingConfig,
    label: str,
    context: DistributedContext = SINGLE,
    log: bool = False,
    task: TaskType = "binary_classification",
) -> Trained:
    """One fit on the ``label`` column for ``task``, or with ``hpo.trials > 0`` an Optuna search whose best
    trial's model is kept (not retrained: a trial is deterministic for its values, so retraining would
    reproduce it). With ``log`` (rank 0, inside an active MLflow run) epochs are logged, and each trial as a
    nested run with its values and score."""
    if not config.hpo.trials:
        fitted = fit(
            train_rows,
            val_rows,
            categorical,
            numeric,
            config,
            label,
            on_epoch=_log_epoch if log else None,
            context=context,
            task=task,
        )
        return Trained(fitted=fitted, config=config)
    import mlflow

    from loopline.training.hpo import better, run_study

    metric = config.hpo.metric
    kept: dict[str, Any] = {}

    def evaluate(trial_config: TrainingConfig, number: int, values: dict[str, Any]) -> float:
        nested = (
            mlflow.start_run(nested=True, run_name=f"trial-{number}") if log else contextlib.nullcontext()
        )
        with nested:
            if log:
                mlflow.log_params({key: _param_value(value) for key, value in values.items()})
                mlflow.set_tags({"loopline.component": "training.hpo_trial", "hpo.trial": str(number)})
            fitted = fit(
                train_rows,
                val_rows,
                categorical,
                numeric,
                trial_config,
                label,
                on_epoch=_log_epoch if log else None,
                context=context,
                task=task,
            )
            score = float(fitted.best[metric])
            if log and math.isfinite(score):
                mlflow.log_metric(f"best_{metric}", score)
        if math.isfinite(score) and better(score, kept.get("score"), config.hpo.direction):
            kept.update(score=score, fitted=fitted, config=trial_config)
        return score

    try:
        study = run_study(config, evaluate, context)
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    return Trained(fitted=kept["fitted"], config=kept["config"], study=study)


def _log_study(study: Any, history: list[dict[str, float]]) -> None:
    import mlflow

    mlflow.log_params(
        {
            "hpo.best_trial": str(study.best_trial),
            **{f"hpo.best.{k}": _param_value(v) for k, v in study.best_params.items()},
        }
    )
    mlflow.log_metrics(
        {
            "hpo.best_value": study.best_value,
            "hpo.trials_completed": float(sum(t.value is not None for t in study.trials)),
        }
    )
    mlflow.log_dict(study.to_dict(), "hpo/study.json")
    for row in history:  # the kept (best) trial's curve, also on the parent run
        _log_epoch(row)


def log_and_register(
    training_set: str | Path,
    manifest: dict[str, Any],
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    config: TrainingConfig,
    use_case: UseCase,
    *,
    context: DistributedContext,
    tracking_uri: str | None,
    register_name: str,
    config_path: str | Path | None,
    experiment: str,
    reason: str,
) -> TrainResult:
    import mlflow
    import torch

    from loopline.training.pyfunc import (
        BUNDLE_ARTIFACT,
        TabularPyfuncModel,
        as_model_input,
        save_bundle,
        signature_for,
    )
    from loopline.training.reference import build_reference, log_reference

    check_task(config, use_case)
    label, task = use_case.label_column, use_case.task
    classifier = task == "binary_classification"
    sha = git_sha()
    use_experiment(experiment, tracking_uri or _default_tracking_uri())
    started = time.monotonic()
    with mlflow.start_run() as run:
        mlflow.log_params(
            {
                "training_set.path": str(training_set),
                "training_set.content_hash": manifest["content_hash"],
                "training_set.feature_service": str(manifest.get("feature_service", "")),
                "training_set.feature_service_version": str(manifest.get("feature_service_version", "")),
                "data.train_rows": str(len(train_rows)),
                "data.val_rows": str(len(val_rows)),
                "model.inputs.categorical": json.dumps(categorical),
                "model.inputs.numeric": json.dumps(numeric),
                "git_sha": sha,
                "distributed.world_size": str(context.world_size),
            }
        )
        if classifier:
            mlflow.log_params(
                {
                    "data.train_positive_rows": str(int(train_rows[label].sum())),
                    "data.val_positive_rows": str(int(val_rows[label].sum())),
                }
            )
        tags = {
            "git_sha": sha,
            "training_set.content_hash": manifest["content_hash"],
            "loopline.component": "training",
            TASK_TAG: task,
        }
        if reason:
            tags[REASON_TAG] = reason
        mlflow.set_tags(tags)
        mlflow.log_dict(manifest, "training_set/manifest.json")
        if config_path is not None and Path(config_path).exists():
            mlflow.log_artifact(str(config_path), "config")

        trained = fit_or_search(
            train_rows, val_rows, categorical, numeric, config, label, context, log=True, task=task
        )
        fitted = trained.fitted
        # Logged after a search, so the run's params are the values the registered model was trained with.
        mlflow.log_params({k: _param_value(v) for k, v in trained.config.flat().items()})
        mlflow.log_text(
            yaml.safe_dump(trained.config.model_dump(), sort_keys=False), "config/training.resolved.yaml"
        )
        if trained.study is not None:
            _log_study(trained.study, fitted.history)
        metrics = {f"best_{name}": fitted.best[name] for name in TASK_METRICS[task]}
        metrics["best_epoch"] = float(fitted.best["epoch"])
        metrics["epochs_run"] = float(len(fitted.history))
        if classifier:
            metrics["val_base_rate"] = float(val_rows[label].mean())
        else:
            # The baseline a regressor must beat: predicting the training rows' mean for every validation row.
            truth = val_rows[label].to_numpy(dtype="float64")
            metrics["val_baseline_mae"] = float(np.mean(np.abs(truth - train_rows[label].mean())))
        metrics["train_seconds"] = time.monotonic() - started
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})
        mlflow.log_dict(
            {
                "torch": torch.__version__,
                "cuda_available": torch.cuda.is_available(),
                "device": fitted.device,
                "world_size": context.world_size,
                "python": sys.version.split()[0],
                "mlflow": mlflow.__version__,
                "numpy": np.__version__,
                "pandas": pd.__version__,
            },
            "environment.json",
        )
        mlflow.set_tags({"device": fitted.device, "torch_version": torch.__version__})

        inputs = [*categorical, *numeric]
        # The drift monitor compares serving traffic with this sample of what the model was trained on.
        log_reference(
            build_reference(
                fitted.model, train_rows, val_rows, categorical, numeric, use_case, seed=config.seed
            ),
            categorical,
            numeric,
            label,
        )
        example = as_model_input(val_rows[inputs].head(5).reset_index(drop=True), categorical, numeric)
        signature = signature_for(categorical, numeric)
        with tempfile.TemporaryDirectory() as tmp:
            bundle_path = save_bundle(fitted.model, Path(tmp) / "model.pkl")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=TabularPyfuncModel(),
                artifacts={BUNDLE_ARTIFACT: str(bundle_path)},
                signature=signature,
                input_example=example,
                registered_model_name=register_name,
                # Explicit (inference would import-trace in a subprocess). Loading also needs the loopline
                # package importable (the bundle pickles loopline.training.model classes): every Loopline
                # image installs it; it is not on PyPI, so it is not listed here.
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"mlflow=={mlflow.__version__}",
                    f"pandas=={pd.__version__}",
                    f"numpy=={np.__version__}",
                ],
            )
        version = str(info.registered_model_version)
        result = TrainResult(
            run_id=run.info.run_id,
            model_uri=f"models:/{register_name}/{version}",
            registered_model=register_name,
            version=version,
            metrics=metrics,
            training_set_hash=manifest["content_hash"],
            training_set=str(training_set),
            device=fitted.device,
            git_sha=sha,
            logged_model_uri=info.model_uri,
            feature_columns=inputs,
            reason=reason,
            world_size=context.world_size,
            hpo=trained.study.to_dict() if trained.study is not None else None,
        )
        mlflow.log_dict(result.to_dict(), "train_result.json")
    return result
