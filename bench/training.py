"""Benchmark: the trainer's epoch loop (minibatches as index slices of device tensors) vs a DataLoader loop.

Builds a synthetic training set of the feature service's width (3 categoricals, ~33 numerics; noise
columns pad the signal ones), then times, on the same split, model, optimiser and validation step:

* ``fit`` from ``loopline.training.loop`` — the real trainer: every tensor on the device once, each
  minibatch an index slice, the loss summed on the device;
* a baseline that is what the slicing replaces: ``DataLoader(TensorDataset(...), shuffle=True)`` over
  CPU tensors, each batch collated from single rows and copied to the device, ``loss.item()`` per step.

Epoch time is the wall time between consecutive epochs (training + validation scoring), the first epoch
left out (it carries the preprocessing and the first allocations): the median per run, the best of
``--repeats`` runs (trainer and baseline alternate, so a busy neighbour slows both alike); samples/s =
training rows / epoch time. The last line is ``RESULT ...`` with the ratio. One torch thread by default:
on a shared CPU box torch's one-per-core threads spin against the neighbours and epoch times swing by
10-50x (measured here), which says nothing about either loop.

    .venv/bin/python bench/training.py [--rows N] [--epochs N] [--batch-size N] [--device auto|cpu|cuda]
        [--threads N] [--repeats N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from loopline.config.use_case import load_use_case  # noqa: E402
from loopline.training.config import TrainingConfig, load_config  # noqa: E402
from loopline.training.data import feature_columns, labelled_split  # noqa: E402
from loopline.training.loop import fit, pick_device, ranking_metrics, seed_everything  # noqa: E402
from loopline.usecases.fraud.synthetic import FEATURES, extra_feature_names, synthetic_training_set  # noqa: E402

# The synthetic training set is fraud-shaped.
USE_CASE = load_use_case("fraud")
LABEL = USE_CASE.label_column

CONFIG_PATH = (
    Path(__file__).resolve().parents[1]
    / "include"
    / "loopline"
    / "usecases"
    / "fraud"
    / "policies"
    / "training.yaml"
)
EXTRA_FEATURES = 28  # 4 signal + 28 noise + amount = 33 numerics, the width of fraud_detection_v1


def dataloader_epochs(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    config: TrainingConfig,
) -> tuple[list[float], float]:
    """The naive loop: per-epoch wall times and the last validation PR-AUC."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from loopline.training.model import Preprocessor, TabularModel

    seed_everything(config.seed)
    device = pick_device(config)
    pre = Preprocessor(
        numeric=numeric, categorical=categorical, log1p=[c for c in config.features.log1p if c in numeric]
    ).fit(train_rows)
    bundle = TabularModel.create(
        pre,
        [config.model.embedding_dim(c) for c in categorical],
        config.model.hidden_sizes,
        config.model.dropout,
    )
    module = bundle.build_module().to(device)
    num, cat = pre.transform(train_rows)
    y = train_rows[LABEL].to_numpy(dtype="float32")
    dataset = TensorDataset(torch.from_numpy(num), torch.from_numpy(cat), torch.from_numpy(y))
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(config.seed),
    )
    v_num, v_cat = (torch.from_numpy(a).to(device) for a in pre.transform(val_rows))
    labels_val = val_rows[LABEL].to_numpy()
    pos_weight = torch.tensor(max(float(len(y) - y.sum()), 1.0) / float(y.sum()), device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    use_amp = device.type == "cuda" and config.mixed_precision
    times, pr_auc = [], float("nan")
    last = time.perf_counter()
    for _ in range(config.epochs):
        module.train()
        total = 0.0
        for b_num, b_cat, b_y in loader:
            b_num, b_cat, b_y = b_num.to(device), b_cat.to(device), b_y.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = module(b_num, b_cat)
            loss = loss_fn(logits.float(), b_y)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(b_y)
        module.eval()
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            scores = torch.sigmoid(module(v_num, v_cat).float()).cpu().numpy()
        pr_auc, _ = ranking_metrics(labels_val, scores)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times, pr_auc


def trainer_epochs(
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    config: TrainingConfig,
) -> tuple[list[float], float]:
    """The real trainer: per-epoch wall times (from its epoch callback) and the last validation PR-AUC."""
    stamps = [time.perf_counter()]
    fitted = fit(
        train_rows,
        val_rows,
        categorical,
        numeric,
        config,
        LABEL,
        on_epoch=lambda row: stamps.append(time.perf_counter()),
    )
    return list(np.diff(stamps)), fitted.history[-1]["val_pr_auc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads; 0: torch's default (one per core)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each loop; the best is reported")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the training config's")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--quick", action="store_true", help="20k rows, 3 epochs")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.epochs, args.repeats = 20_000, 3, 1
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not timed)")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = [f"epochs={args.epochs}", "early_stopping.patience=1000", f"device={args.device}"]
    if args.batch_size:
        overrides.append(f"batch_size={args.batch_size}")
    config = load_config(CONFIG_PATH, overrides)
    started = time.perf_counter()
    frame = synthetic_training_set(n=args.rows, seed=0, extra_features=EXTRA_FEATURES)
    train_rows, val_rows = labelled_split(frame, config.validation.fraction, USE_CASE)
    categorical, numeric = feature_columns(
        config, {"features": [*FEATURES, *extra_feature_names(EXTRA_FEATURES)]}, USE_CASE
    )
    device = pick_device(config)
    print(
        f"data: {len(train_rows)} training rows, {len(val_rows)} validation rows, {len(categorical)} categorical "
        f"+ {len(numeric)} numeric inputs, built in {time.perf_counter() - started:.1f} s"
    )
    print(
        f"device: {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {config.batch_size}, {args.epochs} epochs (first not timed)"
    )

    loops = {"trainer (device slices)": trainer_epochs, "baseline (DataLoader)": dataloader_epochs}
    best: dict[str, float] = {}
    for repeat in range(1, args.repeats + 1):
        for name, run in loops.items():
            times, pr_auc = run(train_rows, val_rows, categorical, numeric, config)
            epoch_s = statistics.median(times[1:])
            best[name] = min(epoch_s, best.get(name, float("inf")))
            print(
                f"run {repeat} {name:25s} epoch {epoch_s:7.3f} s (median; all: "
                f"{', '.join(f'{t:.2f}' for t in times)})  {len(train_rows) / epoch_s:10.0f} samples/s  "
                f"last val PR-AUC {pr_auc:.3f}"
            )
    ours_s, base_s = best.values()
    ours_rate, base_rate = len(train_rows) / ours_s, len(train_rows) / base_s
    print(
        f"RESULT training_samples_per_s={ours_rate:.0f} baseline_samples_per_s={base_rate:.0f} "
        f"speedup={base_s / ours_s:.2f}x epoch_s={ours_s:.3f} baseline_epoch_s={base_s:.3f} device={device} "
        f"rows={len(train_rows)} threads={torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
