"""The gate policy (the use case's ``gate.yaml``, else ``include/config/gate.yaml``): typed, validated, with errors that name the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from loopline import metrics
from loopline.config.use_case import UseCase
from loopline.config.yaml_files import (
    StrictModel,
    describe_validation_error,
    load_policy_file,
    refuse_renamed,
)

# Each quality metric and whether a higher value is better; the direction decides which value threshold
# (min or max) makes sense and which way a regression against the champion points.
# The quality metrics of each task type: a use case is judged only by its task's.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary_classification": ("roc_auc", "pr_auc", "recall_at_fpr", "brier", "expected_cost"),
    "regression": ("mae", "rmse"),
}
QUALITY_METRICS = tuple(name for names in TASK_METRICS.values() for name in names)
HIGHER_IS_BETTER: dict[str, bool] = {name: metrics.HIGHER_IS_BETTER[name] for name in QUALITY_METRICS}


class GatePolicyError(ValueError):
    """The gate policy could not be read or is invalid; the message names the bad field."""


class MetricThreshold(StrictModel):
    """``min``/``max``: value thresholds; ``max_regression``: how much worse than the champion it may be."""

    min: float | None = None
    max: float | None = None
    max_regression: float | None = None

    def configured(self) -> bool:
        return self.min is not None or self.max is not None or self.max_regression is not None


class RecallAtFpr(MetricThreshold):
    fpr: float = Field(default=0.01, gt=0, lt=1)


class ExpectedCost(MetricThreshold):
    missed_positive_cost: float = Field(default=150.0, ge=0)  # a positive let through (was missed_fraud_cost)
    false_alarm_cost: float = Field(default=5.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return refuse_renamed(data, {"missed_fraud_cost": "missed_positive_cost"})


class Quality(StrictModel):
    roc_auc: MetricThreshold = Field(default_factory=MetricThreshold)
    pr_auc: MetricThreshold = Field(default_factory=MetricThreshold)
    recall_at_fpr: RecallAtFpr = Field(default_factory=RecallAtFpr)
    brier: MetricThreshold = Field(default_factory=MetricThreshold)
    expected_cost: ExpectedCost = Field(default_factory=ExpectedCost)
    mae: MetricThreshold = Field(default_factory=MetricThreshold)  # regression, in the label's units
    rmse: MetricThreshold = Field(default_factory=MetricThreshold)

    @model_validator(mode="after")
    def _directions(self) -> Quality:
        for name, higher in HIGHER_IS_BETTER.items():
            threshold: MetricThreshold = getattr(self, name)
            if higher and threshold.max is not None:
                raise ValueError(f"{name}: higher is better, so it takes `min`, not `max`")
            if not higher and threshold.min is not None:
                raise ValueError(f"{name}: lower is better, so it takes `max`, not `min`")
        return self

    def thresholds(self) -> dict[str, MetricThreshold]:
        return {name: getattr(self, name) for name in HIGHER_IS_BETTER}

    def wrong_task(self, task: str) -> list[str]:
        """The configured metrics that do not belong to ``task`` (they could never be computed)."""
        own = TASK_METRICS[task]
        return [name for name, t in self.thresholds().items() if t.configured() and name not in own]


class OperatingPoint(StrictModel):
    # None: serving's decision_threshold (include/config/serving.yaml), so the gate judges the decisions
    # serving will actually make.
    threshold: float | None = Field(default=None, gt=0, lt=1)


class GapIncrease(StrictModel):
    """How much larger than the champion's gap (same holdout rows) the candidate's may be, per rate.

    Separate bounds because the rates live on different scales: TPRs of groups with tens of positives move
    by tenths, FPRs of groups with hundreds of negative rows by hundredths. A regressor: ``mae_ratio``, how
    much the worst-over-best group MAE ratio may grow (0.1: from 1.20 to 1.30)."""

    tpr: float | None = Field(default=None, ge=0, le=1)
    fpr: float | None = Field(default=None, ge=0, le=1)
    mae_ratio: float | None = Field(default=None, ge=0)

    def configured(self) -> bool:
        return self.tpr is not None or self.fpr is not None or self.mae_ratio is not None


class Fairness(StrictModel):
    """Fairness across the groups of ``group_columns``.

    ``group_columns``: None (the default, when the policy file leaves it out) means the use case's fairness
    groups (``UseCase.group_columns``); a list overrides them. Kept unresolved in the policy, which knows no
    use case: the gate and the holdout, which load the use case, ask ``columns(use_case)``."""

    group_columns: list[str] | None = None
    min_group_size: int = Field(default=200, ge=1)
    # A classifier: TPR/FPR gaps at the operating point; a group's TPR needs min_group_positives positives.
    min_group_positives: int = Field(default=10, ge=1)
    max_tpr_gap: float | None = Field(default=None, ge=0, le=1)
    max_fpr_gap: float | None = Field(default=None, ge=0, le=1)
    # A regressor: the worst judged group's MAE over the best's (1.25: no group's estimates are more than
    # 25 % further off than another's). A ratio, so one policy fits any label unit and scale.
    max_mae_ratio: float | None = Field(default=None, ge=1)
    max_gap_increase: GapIncrease = Field(default_factory=GapIncrease)
    # A group too small to judge is always reported; `reject` also makes it a rejection (a model nobody
    # could check for that group does not go live), `report` lets the other groups decide.
    unjudged_groups: Literal["report", "reject"] = "report"
    # A classifier's gap is judged against its sampling noise: each group's TPR/FPR lies somewhere in its
    # Wilson interval at this confidence. A gap surely above the bound rejects, one surely within passes,
    # and one the group sizes cannot place on either side is undecided (reported, or a rejection under
    # unjudged_groups: reject). 10 of 10 frauds caught is not a certain 100 %.
    confidence: float = Field(default=0.95, gt=0, lt=1)

    def columns(self, use_case: UseCase) -> list[str]:
        """The group columns judged for ``use_case``: the policy's list, or the use case's groups."""
        return list(use_case.group_columns if self.group_columns is None else self.group_columns)

    def configured(self) -> bool:
        return (
            self.max_tpr_gap is not None
            or self.max_fpr_gap is not None
            or self.max_mae_ratio is not None
            or self.max_gap_increase.configured()
            or self.unjudged_groups == "reject"
        )

    def wrong_task(self, task: str) -> list[str]:
        """The configured fairness bounds that do not belong to ``task`` (they could never be judged)."""
        classifier = {
            "max_tpr_gap": self.max_tpr_gap,
            "max_fpr_gap": self.max_fpr_gap,
            "max_gap_increase.tpr": self.max_gap_increase.tpr,
            "max_gap_increase.fpr": self.max_gap_increase.fpr,
        }
        regressor = {
            "max_mae_ratio": self.max_mae_ratio,
            "max_gap_increase.mae_ratio": self.max_gap_increase.mae_ratio,
        }
        other = regressor if task == "binary_classification" else classifier
        return [f"fairness.{key}" for key, value in other.items() if value is not None]


class Latency(StrictModel):
    enabled: bool = True
    requests: int = Field(default=200, ge=10)
    warmup: int = Field(default=20, ge=0)
    p95_ms: float | None = Field(default=None, gt=0)
    p99_ms: float | None = Field(default=None, gt=0)

    def configured(self) -> bool:
        return self.enabled and (self.p95_ms is not None or self.p99_ms is not None)


class Infra(StrictModel):
    enabled: bool = True
    timeout_s: float = Field(default=120.0, gt=0)
    sample_requests: int = Field(default=20, ge=1)


class Holdout(StrictModel):
    """The newest labelled days held out for the gate: ``days`` at least, grown one day at a time up to
    ``max_days`` until every group of ``fairness.group_columns`` has enough rows (and, for a classifier,
    positive rows) to be judged, but never so far that training keeps fewer than ``min_train_days``
    labelled days. ``min_positive_rows`` (was ``min_fraud_rows``): a classifier's holdout minimum."""

    days: float = Field(default=2.0, gt=0)
    max_days: float | None = Field(default=None, gt=0)  # None: exactly `days` (no growth)
    min_train_days: float = Field(default=0.0, ge=0)
    min_labelled_rows: int = Field(default=200, ge=1)
    min_positive_rows: int = Field(default=5, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return refuse_renamed(data, {"min_fraud_rows": "min_positive_rows"})

    @model_validator(mode="after")
    def _range(self) -> Holdout:
        if self.max_days is not None and self.max_days < self.days:
            raise ValueError(
                f"max_days ({self.max_days}) must be >= days ({self.days}): the holdout only grows"
            )
        return self

    def longest(self) -> float:
        return self.days if self.max_days is None else self.max_days


class GatePolicy(StrictModel):
    version: int = 1
    operating_point: OperatingPoint = Field(default_factory=OperatingPoint)
    quality: Quality = Field(default_factory=Quality)
    fairness: Fairness = Field(default_factory=Fairness)
    latency: Latency = Field(default_factory=Latency)
    infra: Infra = Field(default_factory=Infra)
    holdout: Holdout = Field(default_factory=Holdout)

    def with_threshold(self, threshold: float) -> GatePolicy:
        """This policy with the operating point filled in (when it defers to serving's threshold)."""
        if self.operating_point.threshold is not None:
            return self
        return self.model_copy(update={"operating_point": OperatingPoint(threshold=threshold)})

    def threshold(self) -> float:
        if self.operating_point.threshold is None:
            raise GatePolicyError("operating_point.threshold is not resolved: call with_threshold() first")
        return self.operating_point.threshold

    def check_task(self, task: str, use_case: str) -> GatePolicy:
        """This policy, if its quality thresholds are of ``task``'s metrics and its fairness bounds of
        ``task``'s kind; else a GatePolicyError naming them."""
        wrong = self.quality.wrong_task(task)
        if wrong:
            raise GatePolicyError(
                f"quality thresholds {', '.join(wrong)} do not apply to the {use_case!r} use case "
                f"({task.replace('_', ' ')}): its metrics are {', '.join(TASK_METRICS[task])}"
            )
        unfair = self.fairness.wrong_task(task)
        if unfair:
            own = (
                "max_tpr_gap, max_fpr_gap, max_gap_increase.tpr/fpr (rates at the operating point)"
                if task == "binary_classification"
                else "max_mae_ratio and max_gap_increase.mae_ratio (the worst group's MAE over the best's)"
            )
            raise GatePolicyError(
                f"{', '.join(unfair)} do not apply to the {use_case!r} use case ({task.replace('_', ' ')}): "
                f"its fairness bounds are {own}"
            )
        return self

    def has_thresholds(self) -> bool:
        """Whether any threshold is configured (quality, fairness gaps, latency budgets). Infra validation
        is a smoke test, not a threshold: a policy with nothing else passes nothing."""
        return (
            any(t.configured() for t in self.quality.thresholds().values())
            or self.fairness.configured()
            or self.latency.configured()
        )


def policy_from_dict(data: dict[str, Any]) -> GatePolicy:
    """Validate a policy given as a mapping (missing sections get their defaults: no thresholds)."""
    try:
        return GatePolicy.model_validate(copy.deepcopy(data))
    except ValidationError as exc:
        raise GatePolicyError(describe_validation_error(exc, "invalid gate policy")) from None


def load_policy(path: str | Path) -> GatePolicy:
    """Read and validate the gate policy at ``path``."""
    return load_policy_file(path, GatePolicy, "gate policy", GatePolicyError)
