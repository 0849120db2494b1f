"""Train the use case's model on a point-in-time training set, track it in MLflow, register it.

    python -m loopline.training.train --training-set PATH_OR_URI [--use-case NAME] [--config YAML] \
        [--set key=value ...] [--result-json PATH] [--register-name NAME] [--tracking-uri URI] \
        [--reason TEXT]
    torchrun --standalone --nproc-per-node N -m loopline.training.train ...   # N GPUs, data parallel

Deterministic for a seed on CPU; on CUDA it trains with autocast (bf16) and keeps every tensor on
the GPU (no DataLoader: minibatches are index slices of device tensors). Under torchrun every process
trains on its share of each minibatch (DistributedDataParallel) and rank 0 alone logs, registers and
writes the result. With ``hpo.trials > 0`` an Optuna search runs first (nested MLflow runs) and the best
trial's model is the one registered. The use case's task decides what is trained: a binary classifier
(class-weighted BCE, PR-AUC) or a regressor (MSE on the standardised label, MAE); a config whose metrics
belong to the other task is refused before anything is read. The use case (``--use-case``, default
``LOOPLINE_USE_CASE``) also gives the default config (its training policy, ``usecases/<name>/policies/
training.yaml``), the registered model (``UseCase.model_name``) and the experiment (``<model_name>_training``).

This module is the entry point (``train`` and the command line); the training set is read and split by
``training.data``, trained by ``training.loop`` and logged and registered by ``training.tracking``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from loopline.config.use_case import UseCase, load_use_case
from loopline.training import distributed
from loopline.training.config import (
    TrainingConfig,
    TrainingConfigError,
    check_task,
    load_config,
    stopping_metric,
)
from loopline.training.data import TrainingError, feature_columns, labelled_split, read_training_set
from loopline.training.distributed import DistributedContext, DistributedSetupError
from loopline.training.loop import pick_device
from loopline.training.tracking import TrainResult, fit_or_search, log_and_register

DEFAULT_RESULT_JSON = Path("/airflow/xcom/return.json")
FALLBACK_RESULT_JSON = Path("train_result.json")


def train(
    training_set: str | Path,
    config: TrainingConfig,
    *,
    tracking_uri: str | None = None,
    register_name: str | None = None,
    config_path: str | Path | None = None,
    experiment: str | None = None,
    reason: str = "",
    context: DistributedContext | None = None,
    use_case: UseCase | None = None,
) -> TrainResult | None:
    """Train on ``training_set``, log everything to MLflow, register a new version of ``register_name``
    (default: the use case's ``model_name``) in ``experiment`` (default: its ``training_experiment``).

    ``use_case`` (default: the one ``Settings().use_case`` names) says which columns are the label, the
    event time and the fairness groups (never model inputs), and the task (classifier or regressor); a
    ``config`` whose ``early_stopping.metric`` or ``hpo.metric`` belongs to the other task is refused
    (``TrainingConfigError``) before the training set is read. Under torchrun (``context`` defaults to what
    the environment says) every rank trains; rank 0 alone logs and registers and gets the result, the other
    ranks get None."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    context = context_from_environment() if context is None else context
    use_case = use_case or configured_use_case()
    check_task(config, use_case)
    frame, manifest = read_training_set(training_set)
    categorical, numeric = feature_columns(config, manifest, use_case)
    missing = [c for c in [*categorical, *numeric, use_case.time_column] if c not in frame.columns]
    if missing:
        raise TrainingError(f"the training set lacks columns the config needs: {missing}")
    train_rows, val_rows = labelled_split(frame, config.validation.fraction, use_case)
    with distributed.process_group(context, pick_device(config, context).type):
        if not context.is_main:
            fit_or_search(
                train_rows,
                val_rows,
                categorical,
                numeric,
                config,
                use_case.label_column,
                context,
                task=use_case.task,
            )
            return None
        return log_and_register(
            training_set,
            manifest,
            train_rows,
            val_rows,
            categorical,
            numeric,
            config,
            use_case,
            context=context,
            tracking_uri=tracking_uri,
            register_name=register_name or use_case.model_name,
            config_path=config_path,
            experiment=experiment or use_case.training_experiment,
            reason=reason,
        )


def configured_use_case(name: str | None = None) -> UseCase:
    """The use case ``name`` (default: the one ``Settings().use_case``, env ``LOOPLINE_USE_CASE``, names), as
    a ``TrainingError`` if it cannot be loaded (the trainer reports it and exits 2)."""
    from loopline.config import Settings
    from loopline.config.use_case import UseCaseError

    try:
        return load_use_case(name or Settings().use_case)
    except UseCaseError as exc:
        raise TrainingError(str(exc)) from None


def training_policy(use_case: UseCase) -> Path:
    """The use case's training policy, or the platform default (``include/config/training.yaml``) when it
    ships none: what ``--config`` defaults to."""
    from loopline.config import Settings

    return use_case.policy_file("training", Settings().config_dir)


def context_from_environment() -> DistributedContext:
    try:
        return distributed.context_from_env(os.environ)
    except DistributedSetupError as exc:
        raise TrainingError(str(exc)) from None


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
        "--use-case",
        default=None,
        help="the use case whose model is trained (default: LOOPLINE_USE_CASE)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="training YAML (default: the use case's policy, usecases/<name>/policies/training.yaml)",
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
    parser.add_argument(
        "--register-name", default=None, help="registered model (default: the use case's model_name)"
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default: Loopline settings)"
    )
    parser.add_argument(
        "--experiment", default=None, help="MLflow experiment (default: <the use case's model_name>_training)"
    )
    parser.add_argument("--reason", default="", help="why this run was started (MLflow tag loopline.reason)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        use_case = configured_use_case(args.use_case)
        config_path = args.config or training_policy(use_case)
        config = load_config(config_path, args.overrides)
        result = train(
            args.training_set,
            config,
            tracking_uri=args.tracking_uri,
            register_name=args.register_name,
            config_path=config_path,
            experiment=args.experiment or use_case.training_experiment,
            reason=args.reason,
            use_case=use_case,
        )
    except (TrainingError, TrainingConfigError) as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return 2
    if result is None:  # a torchrun rank other than 0: rank 0 writes the one result
        return 0
    best = f"best_{stopping_metric(use_case.task)}"  # best_val_pr_auc for a classifier, best_val_mae ...
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
                best: result.metrics[best],
                "result_json": str(path),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
