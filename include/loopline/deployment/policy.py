"""The versioned canary policy (``include/config/canary.yaml``), validated by pydantic.

Decisions made here, and why:
- every check has a minimum sample size, and a check short of it is *insufficient*, never a pass: too
  little traffic never promotes;
- a step whose bake reaches ``max_seconds`` without ``min_requests`` per variant is rolled back with the
  reason "not enough traffic to judge" rather than promoted or held forever: an unjudged model must not
  take more traffic, and holding the challenger alias would block the next candidate (the gate re-runs,
  the canary can be re-triggered once traffic is back);
- labelled quality waits for labels (they arrive days later): short of ``min_labelled`` it is skipped,
  unless ``required`` makes it blocking;
- failed predictions are counted over every serving replica (``analysis.errors.source``; how, and why
  that way: include/loopline/deployment/windows.py), and counts that cannot be read block promotion;
- a challenger broken in serving (it cannot load, or fails every request it is routed) is rolled back at
  the next bake poll (``analysis.health``), not after ``max_seconds`` as "not enough traffic": waiting
  would only hold the challenger alias and tell the operator the wrong cause.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, field_validator, model_validator

from loopline.config.yaml_files import StrictModel, describe_validation_error, load_model_file, refuse_renamed
from loopline.deployment.windows import check_http_url, check_selector

if TYPE_CHECKING:
    from loopline.config import Settings


class CanaryPolicyError(ValueError):
    """The canary policy could not be read or is invalid; the message names the bad field."""


class Shadow(StrictModel):
    enabled: bool = False


class Bake(StrictModel):
    min_requests: int = Field(default=200, ge=1)
    min_seconds: float = Field(default=300, ge=0)
    max_seconds: float = Field(default=3600, gt=0)
    poll_seconds: float = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _max_after_min(self) -> Bake:
        if self.max_seconds < self.min_seconds:
            raise ValueError(
                f"bake.max_seconds ({self.max_seconds}) must be >= bake.min_seconds ({self.min_seconds})"
            )
        return self


class ErrorSourcePolicy(StrictModel):
    """Where failed predictions are counted. ``metrics_urls``: each of a fixed set of replicas, summed
    (wins over Prometheus); else Prometheus at ``LOOPLINE_PROMETHEUS_URL`` (every replica it scrapes,
    narrowed by ``prometheus_selector``); else the serving URL's own ``/metrics`` (one process)."""

    metrics_urls: tuple[str, ...] = ()
    prometheus_selector: str = ""

    @field_validator("metrics_urls")
    @classmethod
    def _urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        urls = tuple(check_http_url(url, "every metrics URL") for url in urls)
        if len(set(urls)) != len(urls):
            raise ValueError(f"a URL is listed twice (its replica would be counted twice): {list(urls)}")
        return urls

    @field_validator("prometheus_selector")
    @classmethod
    def _selector(cls, selector: str) -> str:
        return check_selector(selector)

    @model_validator(mode="after")
    def _one_source(self) -> ErrorSourcePolicy:
        if self.metrics_urls and self.prometheus_selector:
            raise ValueError(
                "prometheus_selector narrows what Prometheus counts, but metrics_urls are counted "
                "instead of Prometheus: remove one of the two"
            )
        return self


class ErrorCheck(StrictModel):
    max_rate: float = Field(default=0.01, ge=0, le=1)
    max_increase: float = Field(default=0.005, ge=0, le=1)
    min_requests: int = Field(default=200, ge=1)
    source: ErrorSourcePolicy = ErrorSourcePolicy()


class LatencyCheck(StrictModel):
    max_p95_ratio: float = Field(default=1.5, ge=1)
    slack_ms: float = Field(default=5.0, ge=0)
    max_p95_ms: float = Field(default=50.0, gt=0)
    min_requests: int = Field(default=200, ge=1)


class ScoreShiftCheck(StrictModel):
    max_psi: float = Field(default=0.25, gt=0)
    bins: int = Field(default=10, ge=2, le=100)
    min_requests: int = Field(default=200, ge=1)
    # Distinct units (routing's, e.g. customers) per variant; fewer: skipped, at the last step blocking.
    min_units: int = Field(default=30, ge=1)
    # Scores below this are one band: a fraud score sits ~99 % near zero, and two models that differ only in
    # how confidently they score the obvious genuine traffic make the same decisions (0: no band).
    resolution: float = Field(default=0.01, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # The key said "customers" while it counts any use case's unit; an old file must not silently
        # fall back to the default minimum.
        return refuse_renamed(data, {"min_customers": "min_units"})


# The labelled check's keys that judge one task only: set for the other task's use case, they are refused.
CLASSIFIER_LABELLED_KEYS = ("min_positives", "max_pr_auc_drop", "max_recall_drop")
REGRESSOR_LABELLED_KEYS = ("min_units", "max_mae_increase", "max_rmse_increase")


class LabelledCheck(StrictModel):
    min_labelled: int = Field(default=200, ge=1)
    # A classifier: PR-AUC and recall, absolute drops.
    min_positives: int = Field(default=10, ge=1)
    max_pr_auc_drop: float = Field(default=0.05, ge=0, le=1)
    max_recall_drop: float = Field(default=0.10, ge=0, le=1)
    # A regressor: MAE and RMSE, increases as a ratio of the champion's (0.10: at most 10 % larger);
    # min_units: distinct units (routing's, e.g. restaurants) per variant, fewer: not judged. None: not judged.
    min_units: int = Field(default=20, ge=2)
    max_mae_increase: float | None = Field(default=0.10, ge=0)
    max_rmse_increase: float | None = Field(default=None, ge=0)
    # A loss fails only when a bootstrap over units is this sure it exceeds the allowance (sticky routing gives
    # each variant different units, and errors cluster on a few: raw differences are noise).
    confidence: float = Field(default=0.975, gt=0.5, lt=1)
    required: bool = False

    def wrong_task(self, task: str) -> list[str]:
        """The keys set, away from their defaults, that judge the other task (they would be silently ignored)."""
        other = REGRESSOR_LABELLED_KEYS if task == "binary_classification" else CLASSIFIER_LABELLED_KEYS
        fields = type(self).model_fields
        return [key for key in other if getattr(self, key) != fields[key].default]


class HealthCheck(StrictModel):
    """When a challenger counts as broken in serving while it has answered no request in the step (summed
    over replicas): at least ``min_load_failures`` failed load attempts (each replica retries on every
    registry poll, so 2 means a retry failed too: not a passing hiccup), or at least
    ``min_failed_requests`` failed requests while the champion answers (a shared outage, e.g. the feature
    store down, fails both and is not the challenger's fault)."""

    min_load_failures: int = Field(default=2, ge=1)
    min_failed_requests: int = Field(default=10, ge=1)


class Analysis(StrictModel):
    errors: ErrorCheck = ErrorCheck()
    latency: LatencyCheck = LatencyCheck()
    score_shift: ScoreShiftCheck = ScoreShiftCheck()
    labelled: LabelledCheck = LabelledCheck()
    health: HealthCheck = HealthCheck()


class Approval(StrictModel):
    required: bool = False
    timeout_minutes: float = Field(default=1440, gt=0)


class CanaryPolicy(StrictModel):
    version: int = 1
    steps: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)
    shadow: Shadow = Shadow()
    bake: Bake = Bake()
    analysis: Analysis = Analysis()
    approval: Approval = Approval()

    @field_validator("steps")
    @classmethod
    def _increasing_shares(cls, steps: tuple[float, ...]) -> tuple[float, ...]:
        if not steps:
            raise ValueError("give at least one traffic step, e.g. [0.05, 0.25, 0.5, 1.0]")
        if any(not 0 < s <= 1 for s in steps):
            raise ValueError(f"every step must be a share in (0, 1], got {list(steps)}")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError(
                f"steps must increase strictly (a ramp only moves units to the challenger), got {list(steps)}"
            )
        return steps

    @model_validator(mode="after")
    def _champion_traffic_to_compare(self) -> CanaryPolicy:
        if self.steps[0] >= 1 and not self.shadow.enabled:
            raise ValueError(
                "steps: the first step gives the challenger all traffic, so the champion answers "
                "nothing to compare with: start below 1.0 (e.g. [0.05, 1.0]) or enable the shadow phase"
            )
        return self

    def check_task(self, task: str, use_case: str) -> CanaryPolicy:
        """This policy, if its labelled keys judge ``task``; else a CanaryPolicyError naming them."""
        wrong = self.analysis.labelled.wrong_task(task)
        if wrong:
            own = CLASSIFIER_LABELLED_KEYS if task == "binary_classification" else REGRESSOR_LABELLED_KEYS
            raise CanaryPolicyError(
                f"analysis.labelled keys {', '.join(wrong)} do not apply to the {use_case!r} use case "
                f"({task.replace('_', ' ')}): its keys are min_labelled, {', '.join(own)}, confidence, required"
            )
        return self

    def with_overrides(
        self,
        *,
        bake_seconds: float | None = None,
        min_requests: int | None = None,
        max_bake_seconds: float | None = None,
        steps: list[float] | None = None,
    ) -> CanaryPolicy:
        """The policy with a faster bake for tests and demos (DAG Params / CLI flags): ``bake_seconds``
        sets the minimum bake time, ``min_requests`` every minimum sample size (bake and checks)."""
        data: dict[str, Any] = self.model_dump()
        if bake_seconds is not None:
            data["bake"]["min_seconds"] = bake_seconds
            data["bake"]["max_seconds"] = max(data["bake"]["max_seconds"], bake_seconds)
        if max_bake_seconds is not None:
            data["bake"]["max_seconds"] = max_bake_seconds
        if min_requests is not None:
            data["bake"]["min_requests"] = min_requests
            for check in ("errors", "latency", "score_shift"):
                data["analysis"][check]["min_requests"] = min_requests
        if steps is not None:
            data["steps"] = steps
        try:
            return CanaryPolicy.model_validate(data)
        except ValidationError as exc:
            raise CanaryPolicyError(describe_validation_error(exc, "invalid canary overrides")) from None


def load_canary_policy(path: Path | None = None, settings: Settings | None = None) -> CanaryPolicy:
    """``path``, else the canary policy of ``settings``' use case (``Settings.policy_file("canary")``: its own
    ``canary.yaml`` or the platform's; ``settings`` default: the configured ones); an explicit path must exist,
    a missing default file means the defaults."""
    if settings is None:
        from loopline.config import get_settings

        settings = get_settings()
    return load_model_file(
        CanaryPolicy, path, settings.policy_file("canary"), "canary policy", CanaryPolicyError
    )
