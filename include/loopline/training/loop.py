"""The training loop: ``fit`` trains the tabular model on one device (or one rank of a torchrun job) for the
use case's task — a binary classifier with class-weighted BCE and early stopping on validation PR-AUC, a
regressor with MSE on the standardised target and early stopping on validation MAE; the device choice,
seeding and the metrics it validates with.

No MLflow here: each epoch goes to the caller's ``on_epoch`` (``training.tracking`` logs it), so the
benchmarks and the distributed tests run the same loop as the trainer without a tracking server.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loopline import metrics
from loopline.config.use_case import TaskType
from loopline.training import distributed
from loopline.training.config import TrainingConfig, higher_is_better, stopping_metric
from loopline.training.data import TrainingError
from loopline.training.distributed import SINGLE, DistributedContext

if TYPE_CHECKING:
    import torch


def ranking_metrics(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(PR-AUC as average precision, ROC-AUC); NaN when the labels hold one class only."""
    return metrics.pr_auc(labels, scores), metrics.roc_auc(labels, scores)


def error_metrics(labels: np.ndarray, predictions: np.ndarray) -> tuple[float, float]:
    """(MAE, RMSE) of a regressor's predictions, in the label's units."""
    return metrics.mae(labels, predictions), metrics.rmse(labels, predictions)


def pick_device(config: TrainingConfig, context: DistributedContext = SINGLE) -> torch.device:
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


@dataclass
class Fitted:
    model: Any  # model.TabularModel
    history: list[dict[str, float]]
    best: dict[str, float]
    device: str


def fit(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    config: TrainingConfig,
    label: str,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    context: DistributedContext = SINGLE,
    task: TaskType = "binary_classification",
) -> Fitted:
    """Train on the column ``label`` (the use case's) for ``task`` (the use case's) and keep the best epoch.

    A binary classifier (0/1 labels): class-weighted BCE, each epoch's ``val_pr_auc`` and ``val_roc_auc``,
    early stopping on ``val_pr_auc`` (higher is better). A regressor (numeric labels): MSE on the target
    standardised with the training rows' mean and standard deviation (kept in the model, whose ``predict``
    answers in the label's units), each epoch's ``val_mae`` and ``val_rmse`` in the label's units, early
    stopping on ``val_mae`` (lower is better); ``config.class_weighting`` does not apply. ``train_loss`` is
    the loss the optimiser sees (for a regressor: in standardised units).

    Under torchrun (``context.enabled``, process group joined) each rank takes its share of every
    minibatch and DDP averages the gradients; the loss is scaled so that the update equals the
    single-process one on the whole minibatch. Validation scores are gathered, so every rank computes
    the same metrics and stops at the same epoch."""
    import torch

    from loopline.training.model import Preprocessor, TabularModel

    seed_everything(config.seed)
    device = pick_device(config, context)
    use_amp = device.type == "cuda" and config.mixed_precision

    pre = Preprocessor(
        numeric=numeric, categorical=categorical, log1p=[c for c in config.features.log1p if c in numeric]
    ).fit(train_rows)
    bundle = TabularModel.create(
        pre,
        [config.model.embedding_dim(c) for c in categorical],
        config.model.hidden_sizes,
        config.model.dropout,
        task=task,
    )
    regression = bundle.is_regressor
    # The target the network learns: 0/1 for a classifier; for a regressor the label standardised with the
    # training rows' mean and std (stored in the bundle), so the initial outputs and the loss are of order 1
    # whatever the label's units.
    bundle.fit_target(train_rows[label].to_numpy(dtype="float64"))
    module = bundle.build_module().to(device)
    model: torch.nn.Module = module
    if context.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # Same initial weights everywhere (DDP also broadcasts rank 0's); then distinct dropout per rank.
        model = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(config.seed + context.rank)

    def tensors(rows: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        num, cat = pre.transform(rows)
        y = (
            bundle.target(rows[label].to_numpy(dtype="float64"))
            if regression
            else rows[label].to_numpy(dtype="float32")
        )
        return (
            torch.from_numpy(num).to(device),
            torch.from_numpy(cat).to(device),
            torch.from_numpy(y).to(device),
        )

    x_num, x_cat, y = tensors(train_rows)
    # Each rank scores its block of the validation rows; the scores are gathered in order.
    val_share = distributed.contiguous_share(len(val_rows), context)
    v_num, v_cat, _ = tensors(val_rows.iloc[val_share])
    labels_val = val_rows[label].to_numpy(dtype="float64" if regression else "float32")
    # loss_sum_fn under DDP: gradients are averaged over ranks, and a rank's summed loss x world / batch makes
    # that average the gradient of the mean loss over the whole minibatch (also when a share is empty or uneven).
    loss_fn: torch.nn.Module
    loss_sum_fn: torch.nn.Module
    if regression:
        # MSE, not Huber: it makes the regressor predict the conditional mean, so predictions are unbiased
        # on average and RMSE (which the gate and the canary report next to MAE) is what it minimises; on the
        # standardised target a long tail of large labels sits a few units out, so its gradients stay tame
        # without Huber's clipping (which would pull predictions toward the median). Early stopping on
        # validation MAE then picks the epoch.
        loss_fn = torch.nn.MSELoss()
        loss_sum_fn = torch.nn.MSELoss(reduction="sum")
    else:
        positives = float(y.sum().item())
        negatives = float(len(y) - positives)
        if config.class_weighting == "balanced" and positives > 0:
            pos_weight = torch.tensor(max(negatives, 1.0) / positives, device=device)
        else:
            pos_weight = torch.tensor(1.0, device=device)
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        loss_sum_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="sum")
    watched = stopping_metric(task)
    higher = higher_is_better(watched)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)  # same order on every rank

    history: list[dict[str, float]] = []
    best: dict[str, float] = {}
    best_state: dict[str, Any] | None = None
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
            # A classifier's probabilities, a regressor's predictions in the label's units.
            val_scores = bundle.outputs(module(v_num, v_cat))
        val_scores = distributed.all_gather_concat(val_scores, context)
        row: dict[str, float] = {"epoch": epoch, "train_loss": train_loss}
        if regression:
            if not np.isfinite(val_scores).all():
                raise TrainingError(
                    f"the regressor diverged in epoch {epoch}: non-finite predictions on the validation rows "
                    f"(lower lr, now {config.lr})"
                )
            row["val_mae"], row["val_rmse"] = error_metrics(labels_val, val_scores)
        else:
            row["val_pr_auc"], row["val_roc_auc"] = ranking_metrics(labels_val, val_scores)
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        # One-class validation (NaN): no signal to stop on, keep the latest weights.
        score = row[watched]
        improved = (
            math.isnan(score) or not best or (score > best[watched] if higher else score < best[watched])
        )
        if improved:
            best = dict(row)
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            stale = 0
        else:
            stale += 1
            if stale >= config.early_stopping.patience:
                break
    assert best_state is not None  # config.epochs >= 1, and the first epoch always counts as improved
    module.load_state_dict(best_state)
    bundle.set_weights(module)
    return Fitted(model=bundle, history=history, best=best, device=str(device))
