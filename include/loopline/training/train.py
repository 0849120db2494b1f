"""Train the fraud detector on a point-in-time training set, track it in MLflow, register it.

    python -m loopline.training.train --training-set PATH_OR_URI --config include/config/training.yaml \
        [--set key=value ...] [--result-json PATH] [--register-name fraud_detector] [--tracking-uri URI] \
        [--reason TEXT]
    torchrun --standalone --nproc-per-node N -m loopline.training.train ...   # N GPUs, data parallel

Deterministic for a seed on CPU; on CUDA it trains with autocast (bf16) and keeps every tensor on
the GPU (no DataLoader: minibatches are index slices of device tensors). Under torchrun every process
trains on its share of each minibatch (DistributedDataParallel) and rank 0 alone logs, registers and
writes the result. With ``hpo.trials > 0`` an Optuna search runs first (nested MLflow runs) and the best
trial's model is the one registered.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import yaml

from loopline.platform.mlflow_util import use_experiment
from loopline.storage.file_helpers import sha256_file
from loopline.training import distributed
from loopline.training.config import FAIRNESS_GROUP_COLUMNS, TrainingConfig, TrainingConfigError, load_config
from loopline.training.distributed import SINGLE, DistributedContext, DistributedSetupError

DEFAULT_RESULT_JSON = Path("/airflow/xcom/return.json")
FALLBACK_RESULT_JSON = Path("train_result.json")
DEFAULT_REGISTER_NAME = "fraud_detector"
DEFAULT_EXPERIMENT = "fraud_detector_training"
LABEL = "is_fraud"


class TrainingError(RuntimeError):
    """The training set cannot be trained on (no labels, no fraud, inconsistent manifest, ...)."""


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


# --- data -------------------------------------------------------------------------------------------


def local_path(uri: str | Path) -> Path | None:
    """The local file a training-set reference names (a plain path or ``file://``); None for a remote URI."""
    if isinstance(uri, Path):
        return uri
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if "://" not in uri:
        return Path(uri)
    return None


def read_training_set(uri: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The parquet and its manifest (``<uri>.manifest.json``); the file must be the one the manifest describes.

    ``uri`` is a local path, ``file://`` or any fsspec URL the image can read (``s3://`` needs s3fs)."""
    from loopline.storage.files import StorageError, check_local_read

    path = local_path(uri)
    if path is None:
        return _read_remote(str(uri))
    try:
        check_local_read(path)
    except StorageError as exc:
        raise TrainingError(str(exc)) from None
    if not path.exists():
        raise TrainingError(f"training set not found: {path}")
    manifest_path = path.with_name(path.name + ".manifest.json")
    if not manifest_path.exists():
        raise TrainingError(
            f"training set manifest not found: {manifest_path} (build it with "
            "`loopline features training-set`)"
        )
    manifest = json.loads(manifest_path.read_text())
    _check_hash(path, manifest, sha256_file(path))
    return pd.read_parquet(path), manifest


def _check_hash(where: Any, manifest: dict[str, Any], actual: str) -> None:
    if manifest.get("content_hash") and manifest["content_hash"] != actual:
        raise TrainingError(
            f"{where} changed since its manifest was written: content hash {actual} "
            f"!= manifest {manifest['content_hash']}"
        )
    manifest["content_hash"] = actual


def _read_remote(uri: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    from loopline.storage.files import StorageError, fetch_bytes

    def fetch(url: str) -> bytes:
        try:
            return fetch_bytes(url)
        except StorageError as exc:
            raise TrainingError(f"training set unreadable: {exc}") from None
        except (ImportError, ValueError) as exc:  # unknown protocol, or its filesystem package missing
            raise TrainingError(
                f"cannot read {url}: {exc} (install the fsspec filesystem for this scheme "
                "in the trainer image, e.g. s3fs for s3://)"
            ) from None

    manifest = json.loads(fetch(uri + ".manifest.json"))
    # Download once, hash and parse the same bytes: the hash describes exactly what was trained on.
    data = fetch(uri)
    _check_hash(uri, manifest, hashlib.sha256(data).hexdigest())
    return pd.read_parquet(io.BytesIO(data)), manifest


def feature_columns(config: TrainingConfig, manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(categorical, numeric) model inputs; fairness group columns are never among them."""
    categorical = list(config.features.categorical)
    numeric: list[str] = list(manifest.get("features", [])) if config.features.numeric_from_manifest else []
    numeric += [c for c in config.features.extra_numeric if c not in numeric]
    excluded = set(config.features.excluded) | set(FAIRNESS_GROUP_COLUMNS) | {LABEL, "label_timestamp"}
    numeric = [c for c in numeric if c not in excluded and c not in categorical]
    leaked = sorted(excluded & set(categorical))
    if leaked:
        raise TrainingError(f"excluded columns configured as model inputs: {leaked}")
    return categorical, numeric


def labelled_split(frame: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labelled rows, ordered by event time; the last ``fraction`` of them is the validation set."""
    if LABEL not in frame.columns:
        raise TrainingError(f"the training set has no {LABEL!r} column")
    labelled = frame[frame[LABEL].notna()].copy()
    if labelled.empty:
        raise TrainingError(
            f"the training set has no labelled rows ({len(frame)} rows, all without a label): "
            "wait for labels to arrive or move labels_as_of later"
        )
    labelled[LABEL] = labelled[LABEL].astype("int64")
    if int(labelled[LABEL].sum()) == 0:
        raise TrainingError(
            f"the training set has no fraud rows among its {len(labelled)} labelled rows: "
            "a fraud model cannot learn from one class"
        )
    sort_cols = ["event_timestamp", "transaction_id"] if "transaction_id" in labelled else ["event_timestamp"]
    labelled = labelled.sort_values(sort_cols, kind="stable").reset_index(drop=True)
    n_val = max(1, int(round(len(labelled) * fraction)))
    if n_val >= len(labelled):
        raise TrainingError(
            f"only {len(labelled)} labelled rows: too few to hold out {fraction:.0%} for validation"
        )
    return labelled.iloc[: len(labelled) - n_val], labelled.iloc[len(labelled) - n_val :]


# --- metrics ----------------------------------------------------------------------------------------


def ranking_metrics(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(PR-AUC as average precision, ROC-AUC); NaN when the labels hold one class only."""
    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        return math.nan, math.nan
    from sklearn.metrics import average_precision_score, roc_auc_score

    return float(average_precision_score(labels, scores)), float(roc_auc_score(labels, scores))


# --- environment ------------------------------------------------------------------------------------


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


def pick_device(config: TrainingConfig, context: DistributedContext = SINGLE):
    """CPU, or under torchrun on a GPU machine the GPU of this process's local rank."""
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device=cuda requested but CUDA is not available")
    if config.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if context.enabled:
        if context.local_rank >= torch.cuda.device_count():
            raise TrainingError(
                f"LOCAL_RANK {context.local_rank} but only {torch.cuda.device_count()} GPUs "
                "visible: start torchrun with --nproc-per-node <= the pod's GPU limit"
            )
        return torch.device("cuda", context.local_rank)
    return torch.device("cuda")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


# --- training ---------------------------------------------------------------------------------------


@dataclass
class Fitted:
    model: Any  # FraudModel
    history: list[dict[str, float]]
    best: dict[str, float]
    device: str


def fit(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    config: TrainingConfig,
    on_epoch=None,
    context: DistributedContext = SINGLE,
) -> Fitted:
    """Train with class-weighted BCE and early stopping on validation PR-AUC; keep the best epoch.

    Under torchrun (``context.enabled``, process group joined) each rank takes its share of every
    minibatch and DDP averages the gradients; the loss is scaled so that the update equals the
    single-process one on the whole minibatch. Validation scores are gathered, so every rank computes
    the same metrics and stops at the same epoch."""
    import torch

    from loopline.training.model import FraudModel, Preprocessor

    seed_everything(config.seed)
    device = pick_device(config, context)
    use_amp = device.type == "cuda" and config.mixed_precision

    pre = Preprocessor(
        numeric=numeric, categorical=categorical, log1p=[c for c in config.features.log1p if c in numeric]
    ).fit(train_rows)
    bundle = FraudModel.create(
        pre,
        [config.model.embedding_dim(c) for c in categorical],
        config.model.hidden_sizes,
        config.model.dropout,
    )
    module = bundle.build_module().to(device)
    model = module
    if context.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # Same initial weights everywhere (DDP also broadcasts rank 0's); then distinct dropout per rank.
        model = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(config.seed + context.rank)

    def tensors(rows: pd.DataFrame):
        num, cat = pre.transform(rows)
        y = rows[LABEL].to_numpy(dtype="float32")
        return (
            torch.from_numpy(num).to(device),
            torch.from_numpy(cat).to(device),
            torch.from_numpy(y).to(device),
        )

    x_num, x_cat, y = tensors(train_rows)
    # Each rank scores its block of the validation rows; the scores are gathered in order.
    val_share = distributed.contiguous_share(len(val_rows), context)
    v_num, v_cat, _ = tensors(val_rows.iloc[val_share])
    labels_val = val_rows[LABEL].to_numpy(dtype="float32")
    positives = float(y.sum().item())
    negatives = float(len(y) - positives)
    if config.class_weighting == "balanced" and positives > 0:
        pos_weight = torch.tensor(max(negatives, 1.0) / positives, device=device)
    else:
        pos_weight = torch.tensor(1.0, device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    # DDP averages gradients over ranks: a rank's summed loss x world / batch makes that average the
    # gradient of the mean loss over the whole minibatch (also when a share is empty or uneven).
    loss_sum_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="sum")
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)  # same order on every rank

    history: list[dict[str, float]] = []
    best: dict[str, float] = {}
    best_state = None
    stale = 0
    n = len(y)
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        # Accumulated on the device in float64 (the same arithmetic as Python floats): no sync per step.
        total = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            mine = distributed.my_share(idx, context)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(x_num[mine], x_cat[mine])
            if context.enabled:
                summed = loss_sum_fn(logits.float(), y[mine])
                loss = summed * (context.world_size / len(idx))
                total += summed.detach().double()
            else:
                loss = loss_fn(logits.float(), y[idx])
                total += loss.detach().double() * len(idx)
            loss.backward()
            optimizer.step()
        train_loss = float(distributed.all_reduce_sum(total, context)) / n
        module.eval()
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            val_scores = torch.sigmoid(module(v_num, v_cat).float()).cpu().numpy()
        val_scores = distributed.all_gather_concat(val_scores, context)
        pr_auc, roc_auc = ranking_metrics(labels_val, val_scores)
        row = {"epoch": epoch, "train_loss": train_loss, "val_pr_auc": pr_auc, "val_roc_auc": roc_auc}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        # One-class validation (NaN): no signal to stop on, keep the latest weights.
        improved = math.isnan(pr_auc) or not best or pr_auc > best["val_pr_auc"]
        if improved:
            best = dict(row)
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            stale = 0
        else:
            stale += 1
            if stale >= config.early_stopping.patience:
                break
    module.load_state_dict(best_state)
    bundle.set_weights(module)
    return Fitted(model=bundle, history=history, best=best, device=str(device))


# --- MLflow -----------------------------------------------------------------------------------------


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _default_tracking_uri() -> str:
    from loopline.config import Settings

    return Settings().mlflow_uri


REASON_TAG = "loopline.reason"


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
    context: DistributedContext = SINGLE,
    log: bool = False,
) -> Trained:
    """One fit, or with ``hpo.trials > 0`` an Optuna search whose best trial's model is kept (not retrained:
    a trial is deterministic for its values, so retraining would reproduce it). With ``log`` (rank 0, inside
    an active MLflow run) epochs are logged, and each trial as a nested run with its values and score."""
    if not config.hpo.trials:
        fitted = fit(
            train_rows,
            val_rows,
            categorical,
            numeric,
            config,
            on_epoch=_log_epoch if log else None,
            context=context,
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
                on_epoch=_log_epoch if log else None,
                context=context,
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


def train(
    training_set: str | Path,
    config: TrainingConfig,
    *,
    tracking_uri: str | None = None,
    register_name: str = DEFAULT_REGISTER_NAME,
    config_path: str | Path | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    reason: str = "",
    context: DistributedContext | None = None,
) -> TrainResult | None:
    """Train on ``training_set``, log everything to MLflow, register a new version of ``register_name``.

    Under torchrun (``context`` defaults to what the environment says) every rank trains; rank 0 alone
    logs and registers and gets the result, the other ranks get None."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    context = context_from_environment() if context is None else context
    frame, manifest = read_training_set(training_set)
    categorical, numeric = feature_columns(config, manifest)
    missing = [c for c in [*categorical, *numeric, "event_timestamp"] if c not in frame.columns]
    if missing:
        raise TrainingError(f"the training set lacks columns the config needs: {missing}")
    train_rows, val_rows = labelled_split(frame, config.validation.fraction)
    with distributed.process_group(context, pick_device(config, context).type):
        if not context.is_main:
            fit_or_search(train_rows, val_rows, categorical, numeric, config, context)
            return None
        return _train_and_register(
            training_set,
            manifest,
            train_rows,
            val_rows,
            categorical,
            numeric,
            config,
            context=context,
            tracking_uri=tracking_uri,
            register_name=register_name,
            config_path=config_path,
            experiment=experiment,
            reason=reason,
        )


def context_from_environment() -> DistributedContext:
    try:
        return distributed.context_from_env(os.environ)
    except DistributedSetupError as exc:
        raise TrainingError(str(exc)) from None


def _train_and_register(
    training_set: str | Path,
    manifest: dict[str, Any],
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    config: TrainingConfig,
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
        FraudDetectorModel,
        as_model_input,
        save_bundle,
        signature_for,
    )
    from loopline.training.reference import build_reference, log_reference

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
                "data.train_fraud_rows": str(int(train_rows[LABEL].sum())),
                "data.val_fraud_rows": str(int(val_rows[LABEL].sum())),
                "model.inputs.categorical": json.dumps(categorical),
                "model.inputs.numeric": json.dumps(numeric),
                "git_sha": sha,
                "distributed.world_size": str(context.world_size),
            }
        )
        tags = {
            "git_sha": sha,
            "training_set.content_hash": manifest["content_hash"],
            "loopline.component": "training",
        }
        if reason:
            tags[REASON_TAG] = reason
        mlflow.set_tags(tags)
        mlflow.log_dict(manifest, "training_set/manifest.json")
        if config_path is not None and Path(config_path).exists():
            mlflow.log_artifact(str(config_path), "config")

        trained = fit_or_search(train_rows, val_rows, categorical, numeric, config, context, log=True)
        fitted = trained.fitted
        # Logged after a search, so the run's params are the values the registered model was trained with.
        mlflow.log_params({k: _param_value(v) for k, v in trained.config.flat().items()})
        mlflow.log_text(
            yaml.safe_dump(trained.config.model_dump(), sort_keys=False), "config/training.resolved.yaml"
        )
        if trained.study is not None:
            _log_study(trained.study, fitted.history)
        base_rate = float(val_rows[LABEL].mean())
        metrics = {
            "best_val_pr_auc": fitted.best["val_pr_auc"],
            "best_val_roc_auc": fitted.best["val_roc_auc"],
            "best_epoch": float(fitted.best["epoch"]),
            "epochs_run": float(len(fitted.history)),
            "val_base_rate": base_rate,
            "train_seconds": time.monotonic() - started,
        }
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
            build_reference(fitted.model, train_rows, val_rows, categorical, numeric, seed=config.seed),
            categorical,
            numeric,
        )
        example = as_model_input(val_rows[inputs].head(5).reset_index(drop=True), categorical, numeric)
        signature = signature_for(categorical, numeric)
        with tempfile.TemporaryDirectory() as tmp:
            bundle_path = save_bundle(fitted.model, Path(tmp) / "fraud_model.pkl")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=FraudDetectorModel(),
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


# --- CLI --------------------------------------------------------------------------------------------


def resolve_result_path(path: Path | None) -> tuple[Path, str | None]:
    """Where to write the result; the default XCom path falls back to ./train_result.json outside a pod."""
    if path is not None and path != DEFAULT_RESULT_JSON:
        return path, None
    if DEFAULT_RESULT_JSON.parent.is_dir():
        return DEFAULT_RESULT_JSON, None
    return FALLBACK_RESULT_JSON.resolve(), (
        f"{DEFAULT_RESULT_JSON.parent} does not exist (not in a pod): "
        f"writing the result to {FALLBACK_RESULT_JSON.resolve()} instead"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loopline.training.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--training-set",
        required=True,
        help="parquet path or URI (file://, s3://, ...) with <it>.manifest.json beside it",
    )
    parser.add_argument(
        "--config", required=True, type=Path, help="training YAML (include/config/training.yaml)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set epochs=5 --set model.dropout=0.2",
    )
    parser.add_argument(
        "--result-json",
        type=Path,
        default=None,
        help=f"where to write the result (default {DEFAULT_RESULT_JSON}, the KPO XCom file)",
    )
    parser.add_argument("--register-name", default=DEFAULT_REGISTER_NAME)
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: Loopline settings)"
    )
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    parser.add_argument("--reason", default="", help="why this run was started (MLflow tag loopline.reason)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        result = train(
            args.training_set,
            config,
            tracking_uri=args.tracking_uri,
            register_name=args.register_name,
            config_path=args.config,
            experiment=args.experiment,
            reason=args.reason,
        )
    except (TrainingError, TrainingConfigError) as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return 2
    if result is None:  # a torchrun rank other than 0: rank 0 writes the one result
        return 0
    path, note = resolve_result_path(args.result_json)
    if note:
        print(note, file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2))
    print(
        json.dumps(
            {
                "run_id": result.run_id,
                "model_uri": result.model_uri,
                "version": result.version,
                "best_val_pr_auc": result.metrics["best_val_pr_auc"],
                "result_json": str(path),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
