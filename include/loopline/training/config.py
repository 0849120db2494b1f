"""The versioned training configuration (``include/config/training.yaml``), validated by pydantic."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from loopline.config.use_case import TaskType, UseCase
from loopline.config.yaml_files import StrictModel, describe_validation_error, read_yaml_mapping
from loopline.metrics import HIGHER_IS_BETTER

# The validation metrics the loop computes per task (each epoch's row, ``best_<metric>`` in MLflow); the first
# is the one early stopping watches.
TASK_METRICS: dict[TaskType, tuple[str, ...]] = {
    "binary_classification": ("val_pr_auc", "val_roc_auc"),
    "regression": ("val_mae", "val_rmse"),
}
ValidationMetric = Literal["val_pr_auc", "val_roc_auc", "val_mae", "val_rmse"]


def stopping_metric(task: TaskType) -> str:
    """The validation metric early stopping watches for ``task``."""
    return TASK_METRICS[task][0]


def higher_is_better(metric: str) -> bool:
    """``val_pr_auc`` → True, ``val_mae`` → False (``loopline.metrics.HIGHER_IS_BETTER``)."""
    return HIGHER_IS_BETTER[metric.removeprefix("val_")]


class TrainingConfigError(ValueError):
    """The training config could not be read or is invalid; the message names the bad field."""


class EarlyStopping(StrictModel):
    """Stop after ``patience`` epochs without improvement of ``metric``: a classifier's validation PR-AUC
    (higher is better) or a regressor's validation MAE (lower is better); the task decides which is valid."""

    metric: Literal["val_pr_auc", "val_mae"] = "val_pr_auc"
    patience: int = Field(default=5, ge=1)


class Validation(StrictModel):
    fraction: float = Field(default=0.2, gt=0, lt=1)


class ModelConfig(StrictModel):
    hidden_sizes: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    embedding_dims: dict[str, int] = Field(default_factory=dict)
    default_embedding_dim: int = Field(default=8, ge=1)

    @field_validator("hidden_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError("every hidden size must be >= 1")
        return value

    @field_validator("embedding_dims")
    @classmethod
    def _positive_dims(cls, value: dict[str, int]) -> dict[str, int]:
        bad = [k for k, v in value.items() if v < 1]
        if bad:
            raise ValueError(f"embedding dims must be >= 1 (bad: {bad})")
        return value

    def embedding_dim(self, column: str) -> int:
        return self.embedding_dims.get(column, self.default_embedding_dim)


class FeatureConfig(StrictModel):
    """The model's inputs. ``excluded``: columns never fed to the model beyond the use case's own, which
    ``training.data.feature_columns`` always excludes (its fairness group columns, label and label time).

    The use case's group columns are not a default of ``excluded`` (a config model knows no use case):
    they are excluded where the use case is known, and a config naming one as an input is refused there
    (``feature_columns``, before any training), as an ``excluded`` column is refused here at load."""

    # Event columns by name (a use case's training policy lists its own); the manifest's features come on top.
    categorical: list[str] = Field(default_factory=list)
    numeric_from_manifest: bool = True
    extra_numeric: list[str] = Field(default_factory=list)
    log1p: list[str] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_excluded_inputs(self) -> FeatureConfig:
        leaked = sorted(self.inputs() & set(self.excluded))
        if leaked:
            raise ValueError(f"fairness group / excluded columns must not be model inputs: {leaked}")
        return self

    def inputs(self) -> set[str]:
        """The columns configured by name as model inputs (the manifest's features come on top)."""
        return set(self.categorical) | set(self.extra_numeric)


class _Range(StrictModel):
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> _Range:
        low, high = self.low, self.high
        if low >= high:
            raise ValueError(
                f"low ({low}) must be below high ({high}); for a fixed value set the field itself"
            )
        if self.log and low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {low})")
        if self.log and self.stepped():
            raise ValueError("a range cannot be both log and stepped (Optuna refuses it)")
        return self

    def stepped(self) -> bool:
        raise NotImplementedError


class FloatRange(_Range):
    """A float drawn from [low, high] (log-uniform with ``log``; on a grid with ``step``)."""

    type: Literal["float"]
    step: float | None = Field(default=None, gt=0)

    def stepped(self) -> bool:
        return self.step is not None


class IntRange(_Range):
    """An integer drawn from [low, high] (every ``step``; log-uniform with ``log``)."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)

    def stepped(self) -> bool:
        return self.step != 1


class Choice(StrictModel):
    """One of ``choices`` (any YAML values, lists included, e.g. hidden layer sizes)."""

    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)


SearchDimension = Annotated[FloatRange | IntRange | Choice, Field(discriminator="type")]

# Fields a search must not change: they define the data, the device or the search itself, not the model.
NOT_SEARCHABLE = (
    "version",
    "seed",
    "device",
    "mixed_precision",
    "features",
    "validation",
    "hpo",
    "early_stopping.metric",
)


class HpoConfig(StrictModel):
    """Optional Optuna search; ``trials: 0`` trains once with the config as written."""

    trials: int = Field(default=0, ge=0)
    # A trial's score: one of the use case's task's metrics (TASK_METRICS), checked by check_task.
    metric: ValidationMetric = "val_pr_auc"
    direction: Literal["maximize", "minimize"] = "maximize"
    seed: int | None = None  # the TPE sampler's seed; None: the training seed
    search_space: dict[str, SearchDimension] = Field(default_factory=dict)


class TrainingConfig(StrictModel):
    version: int = 1
    seed: int = 42
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=512, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    validation: Validation = Field(default_factory=Validation)
    # A classifier's BCE: balanced = pos_weight negatives / positives. Ignored by a regressor (no classes).
    class_weighting: Literal["balanced", "none"] = "balanced"
    model: ModelConfig = Field(default_factory=ModelConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: bool = True
    hpo: HpoConfig = Field(default_factory=HpoConfig)

    @model_validator(mode="after")
    def _searchable(self) -> TrainingConfig:
        if self.hpo.trials and not self.hpo.search_space:
            raise ValueError("hpo.trials > 0 needs an hpo.search_space (or set hpo.trials: 0)")
        for key, dimension in self.hpo.search_space.items():
            _check_search_key(self, key, dimension)
        return self

    def flat(self) -> dict[str, Any]:
        """Dotted keys → values (MLflow params)."""
        return flatten(self.model_dump())


def check_task(config: TrainingConfig, use_case: UseCase) -> None:
    """Refuse a config whose metrics do not fit the use case's task (a regressor has no PR-AUC, a classifier no
    MAE), or whose HPO direction contradicts its metric; the message names the field and the valid values."""
    task = use_case.task
    valid = TASK_METRICS[task]
    where = f"use case {use_case.name!r} is a {task} task"
    if config.early_stopping.metric != stopping_metric(task):
        raise TrainingConfigError(
            f"early_stopping.metric: {config.early_stopping.metric!r} does not fit: {where}, "
            f"whose early stopping metric is {stopping_metric(task)!r}"
        )
    if config.hpo.metric not in valid:
        raise TrainingConfigError(
            f"hpo.metric: {config.hpo.metric!r} does not fit: {where}; valid metrics: {', '.join(valid)}"
        )
    direction = "maximize" if higher_is_better(config.hpo.metric) else "minimize"
    if config.hpo.trials and config.hpo.direction != direction:
        raise TrainingConfigError(
            f"hpo.direction: {config.hpo.direction!r} contradicts hpo.metric {config.hpo.metric!r}, "
            f"which is better {'higher' if direction == 'maximize' else 'lower'}: set {direction!r}"
        )


def _check_search_key(config: TrainingConfig, key: str, dimension: FloatRange | IntRange | Choice) -> None:
    """Every value the search can pick must make a valid config: catches unknown keys and bad bounds early."""
    if any(key == blocked or key.startswith(blocked + ".") for blocked in NOT_SEARCHABLE):
        raise ValueError(
            f"hpo.search_space.{key}: this field cannot be searched (not searchable: "
            f"{', '.join(NOT_SEARCHABLE)})"
        )
    candidates = dimension.choices if isinstance(dimension, Choice) else [dimension.low, dimension.high]
    base = config.model_dump(exclude={"hpo"})
    for value in candidates:
        data = copy.deepcopy(base)
        try:
            set_dotted(data, key, value)
            TrainingConfig.model_validate(data)
        except (TrainingConfigError, ValidationError) as exc:
            detail = (
                "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                if isinstance(exc, ValidationError)
                else str(exc)
            )
            raise ValueError(
                f"hpo.search_space.{key}: candidate value {value!r} is not valid: {detail}"
            ) from None


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``data[a][b][c] = value`` for ``key="a.b.c"``, creating missing sections."""
    target = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            raise TrainingConfigError(f"{key}: {part!r} is not a section")
        target = node
    target[parts[-1]] = value


def with_values(config: TrainingConfig, values: dict[str, Any]) -> TrainingConfig:
    """A copy of ``config`` with dotted-key ``values`` applied (an HPO trial's parameters), validated."""
    data = config.model_dump()
    for key, value in values.items():
        set_dotted(data, key, value)
    return from_dict(data)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML (numbers, lists)."""
    if "=" not in assignment:
        raise TrainingConfigError(f"override {assignment!r} is not of the form key=value")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if not key:
        raise TrainingConfigError(f"override {assignment!r} has an empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise TrainingConfigError(f"override {key}: value {raw!r} is not valid YAML: {exc}") from exc
    try:
        set_dotted(data, key, value)
    except TrainingConfigError as exc:
        raise TrainingConfigError(f"override {exc}") from None


def from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> TrainingConfig:
    data = copy.deepcopy(data)
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return TrainingConfig.model_validate(data)
    except ValidationError as exc:
        raise TrainingConfigError(describe_validation_error(exc, "invalid training config")) from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainingConfig:
    """Read the YAML at ``path``, apply ``key=value`` overrides, validate."""
    data = read_yaml_mapping(path, "training config", TrainingConfigError)
    return from_dict(data, overrides)
