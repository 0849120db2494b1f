"""Optional hyperparameter search with Optuna (TPE, seeded): config ``hpo``, ``trials: 0`` = off.

Optuna's ask/tell loop keeps the trainer in charge: rank 0 asks for a trial's values, every rank (one
under a plain run, N under torchrun) trains with them, rank 0 tells the score. The caller's ``evaluate``
trains and returns the trial's score (its best epoch's ``hpo.metric``: a classifier's ``val_pr_auc`` or
``val_roc_auc``, a regressor's ``val_mae`` or ``val_rmse``, with ``hpo.direction`` to match); it also keeps the
best model, so nothing is retrained.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from loopline.training.config import (
    TASK_METRICS,
    Choice,
    FloatRange,
    IntRange,
    TrainingConfig,
    with_values,
)
from loopline.training.distributed import SINGLE, DistributedContext, broadcast_from_main

_PRIMITIVE = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class TrialRecord:
    number: int
    params: dict[str, Any]
    value: float | None  # None: the trial produced no finite score (e.g. one-class validation)


@dataclass(frozen=True)
class StudySummary:
    metric: str
    direction: str
    sampler_seed: int
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    trials: list[TrialRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _encodes(dimension: Choice) -> bool:
    # Optuna stores only primitive categorical choices; lists (layer sizes) travel as their JSON text.
    return not all(isinstance(choice, _PRIMITIVE) for choice in dimension.choices)


def suggest(trial: Any, space: dict[str, FloatRange | IntRange | Choice]) -> dict[str, Any]:
    """One value per search-space key, drawn through the Optuna ``trial``."""
    values: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, FloatRange):
            values[key] = trial.suggest_float(key, dim.low, dim.high, step=dim.step, log=dim.log)
        elif isinstance(dim, IntRange):
            values[key] = trial.suggest_int(key, dim.low, dim.high, step=dim.step, log=dim.log)
        elif _encodes(dim):
            values[key] = json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in dim.choices]))
        else:
            values[key] = trial.suggest_categorical(key, dim.choices)
    return values


def better(value: float, than: float | None, direction: str) -> bool:
    """Strictly better (ties keep the earlier trial, so the winner does not depend on float noise)."""
    if than is None:
        return True
    return value > than if direction == "maximize" else value < than


def run_study(
    config: TrainingConfig,
    evaluate: Callable[[TrainingConfig, int, dict[str, Any]], float],
    context: DistributedContext = SINGLE,
) -> StudySummary:
    """``config.hpo.trials`` trials; ``evaluate(trial_config, number, values)`` trains one and scores it.

    Deterministic for a seed: the TPE sampler is seeded and every trial trains with the training seed."""
    import optuna

    hpo = config.hpo
    seed = config.seed if hpo.seed is None else hpo.seed
    study = None
    if context.is_main:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction=hpo.direction, sampler=optuna.samplers.TPESampler(seed=seed))
    records: list[TrialRecord] = []
    best: TrialRecord | None = None
    for number in range(hpo.trials):
        trial = study.ask() if study is not None else None
        values = broadcast_from_main(suggest(trial, hpo.search_space) if trial is not None else None, context)
        score = evaluate(with_values(config, values), number, values)
        finite = score is not None and math.isfinite(score)
        if study is not None:
            assert trial is not None  # asked of the study above
            if finite:
                study.tell(trial, score)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        record = TrialRecord(number=number, params=values, value=float(score) if finite else None)
        records.append(record)
        if record.value is not None and better(record.value, best.value if best else None, hpo.direction):
            best = record
    if best is None or best.value is None:  # best only ever holds a record with a value
        hint = (
            " (does the validation split hold both classes?)"
            if hpo.metric in TASK_METRICS["binary_classification"]
            else ""
        )
        raise ValueError(
            f"hyperparameter search: none of the {hpo.trials} trials produced a finite {hpo.metric}{hint}"
        )
    return StudySummary(
        metric=hpo.metric,
        direction=hpo.direction,
        sampler_seed=seed,
        best_trial=best.number,
        best_value=float(best.value),
        best_params=best.params,
        trials=records,
    )
