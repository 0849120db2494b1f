"""The drift policy (the use case's ``drift.yaml``, else ``include/config/drift.yaml``): typed, validated, with errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from loopline.config.yaml_files import (
    StrictModel,
    describe_validation_error,
    load_policy_file,
    refuse_renamed,
)

# The methods the fast path implements exactly (Evidently's names), and Loopline's own two for a score whose
# mass sits near zero (Jensen-Shannon over the reference's quantile bins; the share of scores at or above a
# cutoff, i.e. the alert rate); anything else is refused at load time.
Method = Literal["wasserstein", "jensenshannon", "quantile_jensenshannon", "flagged_share"]
RETRAIN_REASONS: tuple[Literal["dataset_drift", "prediction_drift", "concept_drift"], ...] = (
    "dataset_drift",
    "prediction_drift",
    "concept_drift",
)


class DriftConfigError(ValueError):
    """The drift policy could not be read or is invalid; the message names the bad field."""


class MethodSpec(StrictModel):
    method: Method
    threshold: float = Field(gt=0)  # the fixed threshold, used when the reference cannot be calibrated
    bins: int = Field(default=20, ge=2, le=1000)  # quantile_jensenshannon only: equal-mass reference bins
    cutoff: float | None = Field(
        default=None, gt=0, lt=1
    )  # flagged_share only; None: serving's decision threshold


class Window(StrictModel):
    hours: float = Field(default=24, gt=0)
    min_rows: int = Field(default=1000, ge=1)
    variants: list[str] = Field(default_factory=lambda: ["champion", "challenger"])


class Features(StrictModel):
    monitor: Literal["model_inputs"] | list[str] = "model_inputs"
    exclude: list[str] = Field(default_factory=list)
    log_scale: list[str] = Field(default_factory=list)  # compared as log1p(max(x, 0)): money, durations


class Methods(StrictModel):
    numeric: MethodSpec = MethodSpec(method="wasserstein", threshold=0.1)
    categorical: MethodSpec = MethodSpec(method="jensenshannon", threshold=0.1)
    per_feature: dict[str, MethodSpec] = Field(default_factory=dict)

    def for_column(self, column: str, categorical: bool) -> MethodSpec:
        """The pinned method of ``column``; a categorical column can only be compared by its shares."""
        spec = self.per_feature.get(column) or (self.categorical if categorical else self.numeric)
        if categorical and spec.method != "jensenshannon":  # neither a distance nor quantiles over categories
            raise DriftConfigError(
                f"methods.per_feature.{column}: {spec.method} needs a numeric column; "
                f"{column!r} is categorical (use jensenshannon)"
            )
        return spec


class Quality(StrictModel):
    max_missing_share: float = Field(default=0.2, ge=0, le=1)
    max_out_of_range_share: float = Field(default=0.05, ge=0, le=1)
    range_margin: float = Field(default=0.5, ge=0)


class Calibration(StrictModel):
    enabled: bool = True
    min_days: int = Field(default=7, ge=3)
    min_day_rows: int = Field(default=200, ge=10)
    margin: float = Field(default=1.5, ge=1)
    min_threshold: float = Field(default=0.02, gt=0)
    trend_rank_correlation: float = Field(default=0.9, gt=0, le=1)


class Concept(StrictModel):
    """The concept-drift check (``loopline.monitoring.concept``). A classifier: ``min_positive_rows``,
    ``max_pr_auc_drop`` and ``max_recall_drop``; a regressor: ``min_units`` (distinct units, the bootstrap's
    clusters) and ``max_mae_increase`` / ``max_rmse_increase`` (ratios of the gate holdout's error; None:
    not judged)."""

    window_hours: float = Field(default=24, gt=0)
    judged_windows: int = Field(default=7, ge=1)
    min_labelled_rows: int = Field(default=1000, ge=1)
    min_positive_rows: int = Field(default=30, ge=1)
    max_pr_auc_drop: float = Field(default=0.15, gt=0)
    max_recall_drop: float = Field(default=0.2, gt=0)
    min_units: int = Field(default=20, ge=2)
    max_mae_increase: float | None = Field(default=0.15, ge=0)
    max_rmse_increase: float | None = Field(default=None, ge=0)
    confidence: float = Field(default=0.975, gt=0.5, lt=1)
    decision_threshold: float | None = Field(default=None, gt=0, lt=1)  # None: serving's

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return refuse_renamed(data, {"min_fraud_rows": "min_positive_rows"})


class Retrain(StrictModel):
    triggers: list[Literal["dataset_drift", "prediction_drift", "concept_drift"]] = Field(
        default_factory=lambda: list(RETRAIN_REASONS)
    )
    cooldown_hours: float = Field(default=24, ge=0)
    training_max_age_hours: float = Field(default=6, gt=0)


class ServedFeatures(StrictModel):
    """Served vs offline point-in-time features on the window's answered traffic (``monitoring.served_check``):
    a data-quality alarm above ``max_mismatch_rate`` (a serving bug, never a retrain)."""

    max_mismatch_rate: float = Field(default=0.01, ge=0, le=1)
    sample: int = Field(default=500, ge=1, le=100_000)


class DriftConfig(StrictModel):
    version: int = 1
    window: Window = Field(default_factory=Window)
    features: Features = Field(default_factory=Features)
    methods: Methods = Field(default_factory=Methods)
    dataset_drift_share: float = Field(default=0.3, gt=0, le=1)
    prediction: MethodSpec = MethodSpec(method="flagged_share", threshold=0.1)
    calibration: Calibration = Field(default_factory=Calibration)
    quality: Quality = Field(default_factory=Quality)
    concept: Concept = Field(default_factory=Concept)
    retrain: Retrain = Field(default_factory=Retrain)
    served_features: ServedFeatures = Field(default_factory=ServedFeatures)

    def monitored(self, available: list[str]) -> list[str]:
        """The columns to compare, in ``available``'s order (the reference's model inputs)."""
        wanted = available if self.features.monitor == "model_inputs" else list(self.features.monitor)
        return [c for c in wanted if c not in set(self.features.exclude)]


def drift_config_from_dict(data: dict[str, Any]) -> DriftConfig:
    try:
        return DriftConfig.model_validate(data)
    except ValidationError as exc:
        raise DriftConfigError(describe_validation_error(exc, "invalid drift policy")) from None


def load_drift_config(path: str | Path) -> DriftConfig:
    """Read and validate the drift policy at ``path`` (``Settings.policy_file("drift")``)."""
    return load_policy_file(path, DriftConfig, "drift policy", DriftConfigError)
