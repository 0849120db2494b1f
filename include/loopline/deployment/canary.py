"""The canary's steps, as the DAG ``deploy_canary`` runs them one task at a time and ``run_canary`` runs
them in one process (CLI, tests):

    begin → for each phase (optional shadow, then the traffic steps): begin_step → bake → judge_step
          → promote, or roll back at the first failed (or unjudgeable) step.

Everything handed between steps is a small JSON-safe dict (XCom, trigger kwargs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from loopline.config import Settings
from loopline.deployment import actions, windows
from loopline.deployment.analysis import CanaryVerdict, VariantWindow, analyse
from loopline.deployment.policy import CanaryPolicy
from loopline.lineage import history
from loopline.serving.routing import CHALLENGER, CHAMPION, SHADOW

FIRST_MODEL_REASON = "first model: no champion to compare against, promoted without a canary"


@dataclass(frozen=True)
class Phase:
    share: float
    mode: str  # live | shadow

    @property
    def variant(self) -> str:
        """How the prediction log names the challenger's rows in this phase."""
        return SHADOW if self.mode == "shadow" else CHALLENGER


def phases(policy: CanaryPolicy) -> tuple[Phase, ...]:
    shadow = (Phase(0.0, "shadow"),) if policy.shadow.enabled else ()
    return shadow + tuple(Phase(share, "live") for share in policy.steps)


@dataclass(frozen=True)
class CanaryPlan:
    version: str
    champion: str
    phases: tuple[Phase, ...]
    metrics_url: str
    started_at: float = 0.0  # epoch seconds: the champion's reference window may reach back to here
    errors_at_start: dict[str, float] | None = None  # encoded error counters then

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanaryPlan:
        return cls(version=str(data["version"]), champion=str(data["champion"]),
                   phases=tuple(Phase(**p) for p in data["phases"]), metrics_url=data["metrics_url"],
                   started_at=float(data.get("started_at", 0.0)), errors_at_start=data.get("errors_at_start"))


@dataclass(frozen=True)
class Start:
    """What ``begin`` did: ``canary`` (plan set), ``promoted`` (first model) or ``nothing`` (and why)."""

    action: str
    reason: str
    version: str | None = None
    plan: CanaryPlan | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "version": self.version,
                "plan": self.plan.to_dict() if self.plan else None}


@dataclass(frozen=True)
class StepState:
    index: int
    started_at: float  # epoch seconds; the window is [started_at, analysis time)
    errors_before: dict[str, float] | None  # encoded counters; None: /metrics unreadable at the start

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepState:
        return cls(int(data["index"]), float(data["started_at"]), data.get("errors_before"))


@dataclass(frozen=True)
class BakeProgress:
    done: bool
    timed_out: bool
    elapsed_s: float
    requests: dict[str, int] = field(default_factory=dict)  # champion / challenger: answered + failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CanaryOutcome:
    action: str  # promoted | rolled_back | nothing
    version: str | None
    reason: str
    verdicts: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_metrics_url(settings: Settings) -> str:
    return f"{settings.serving_base_url}/metrics"


def begin(settings: Settings, policy: CanaryPolicy, version: str | int | None = None, *,
          metrics_url: str | None = None, reason: str = "") -> Start:
    """Decide whether a canary runs for ``version`` (default: the current challenger). The first model is
    promoted directly (nothing to compare against); a version no longer the challenger is left alone."""
    state = actions.read_state(settings)
    if state.challenger is None:
        return Start("nothing", "no @challenger alias: nothing to deploy", None if version is None else str(version))
    if version is not None and str(version) != state.challenger:
        return Start("nothing", f"version {version} is no longer the challenger (now {state.challenger}); "
                                "the newer version's own canary run handles it", str(version))
    version = state.challenger
    if state.champion is None:
        actions.promote(settings, version, FIRST_MODEL_REASON, trigger=reason or None)
        return Start("promoted", FIRST_MODEL_REASON, version)
    metrics_url = metrics_url or default_metrics_url(settings)
    errors = _errors_now(metrics_url)
    plan = CanaryPlan(version, state.champion, phases(policy), metrics_url, time.time(),
                      None if errors is None else windows.encode_counters(errors))
    history.record(settings, "canary_started", version=version, reason=reason or "passed the gate",
                   champion=state.champion, steps=[asdict(p) for p in plan.phases])
    return Start("canary", f"canary of version {version} against champion {state.champion}", version, plan)


def _errors_now(metrics_url: str) -> dict[windows.Key, float] | None:
    try:
        return windows.scrape_errors(metrics_url)
    except ConnectionError:
        return None


def begin_step(settings: Settings, plan: CanaryPlan, index: int, *, clock: Callable[[], float] = time.time,
               **details: Any) -> StepState:
    """Shift traffic to phase ``index`` and remember where its window and error counters start."""
    phase = plan.phases[index]
    actions.shift_traffic(settings, plan.version, phase.share, mode=phase.mode, step=index + 1,
                          steps=len(plan.phases), **details)
    errors = _errors_now(plan.metrics_url)
    return StepState(index, clock(), None if errors is None else windows.encode_counters(errors))


def _champion_since(settings: Settings, policy: CanaryPolicy, plan: CanaryPlan,
                    step: StepState) -> tuple[float, dict[str, float] | None]:
    """Where the champion's reference window starts: the step's own start when the champion answered
    enough in it; else the canary's start (at 100 % the champion answers nobody, so the last step is
    compared with the champion's traffic of the earlier steps)."""
    answered = windows.logged_counts(settings.state.prediction_log, step.started_at).get((CHAMPION, plan.champion), 0)
    if answered >= policy.bake.min_requests or not plan.started_at:
        return step.started_at, step.errors_before
    return plan.started_at, plan.errors_at_start


def _requests(settings: Settings, policy: CanaryPolicy, plan: CanaryPlan, step: StepState,
              errors_after: dict[windows.Key, float] | None) -> dict[str, int]:
    champion_since, champion_errors = _champion_since(settings, policy, plan, step)
    out = {}
    for name, key, since, before in ((CHAMPION, (CHAMPION, plan.champion), champion_since, champion_errors),
                                     (CHALLENGER, (plan.phases[step.index].variant, plan.version),
                                      step.started_at, step.errors_before)):
        answered = windows.logged_counts(settings.state.prediction_log, since).get(key, 0)
        failed = (windows.error_delta(windows.decode_counters(before), errors_after, key)
                  if errors_after is not None and before is not None else 0)
        out[name] = answered + failed
    return out


def bake_progress(settings: Settings, policy: CanaryPolicy, plan: CanaryPlan, step: StepState, *,
                  now: float | None = None) -> BakeProgress:
    """Done when both variants have ``bake.min_requests`` and ``bake.min_seconds`` passed; timed out
    after ``bake.max_seconds`` (the analysis then says whether there was enough traffic)."""
    now = time.time() if now is None else now
    elapsed = now - step.started_at
    requests = _requests(settings, policy, plan, step, _errors_now(plan.metrics_url))
    enough = all(n >= policy.bake.min_requests for n in requests.values())
    if elapsed >= policy.bake.min_seconds and enough:
        return BakeProgress(True, False, elapsed, requests)
    if elapsed >= policy.bake.max_seconds:
        return BakeProgress(True, True, elapsed, requests)
    return BakeProgress(False, False, elapsed, requests)


def judge_step(settings: Settings, policy: CanaryPolicy, plan: CanaryPlan, step: StepState, *,
               until: float | None = None) -> CanaryVerdict:
    """Analyse the step's window: the champion's and the challenger's rows, errors and arrived labels."""
    until = time.time() if until is None else until
    variant = plan.phases[step.index].variant
    log_path = settings.state.prediction_log
    after = _errors_now(plan.metrics_url)
    champion_since, champion_errors = _champion_since(settings, policy, plan, step)

    def errors(key: windows.Key, before: dict[str, float] | None) -> int | None:
        if before is None or after is None:
            return None
        return windows.error_delta(windows.decode_counters(before), after, key)

    champion_rows = windows.read_predictions(log_path, champion_since, until, CHAMPION, plan.champion)
    challenger_rows = windows.read_predictions(log_path, step.started_at, until, variant, plan.version)
    champion = VariantWindow.from_frame(champion_rows, plan.champion,
                                        errors((CHAMPION, plan.champion), champion_errors))
    challenger = VariantWindow.from_frame(challenger_rows, plan.version,
                                          errors((variant, plan.version), step.errors_before))
    ids = set(champion.transaction_ids) | set(challenger.transaction_ids)
    labels = windows.arrived_labels(settings, ids) if ids else {}
    return analyse(policy, champion, challenger, labels, final=step.index + 1 == len(plan.phases))


def conclude(settings: Settings, plan: CanaryPlan, verdict: CanaryVerdict, step: StepState,
             timed_out: bool = False) -> str:
    """After a step's verdict: ``next`` (ramp), ``promote`` (last step passed) or ``rolled_back`` (done here)."""
    phase = plan.phases[step.index]
    if not verdict.passed:
        why = verdict.why
        if timed_out and verdict.not_enough_traffic:
            why = f"bake timed out: {why}"
        actions.roll_back(settings, plan.version, f"step {step.index + 1} ({phase.mode} {phase.share:.0%}): {why}",
                          verdict=verdict.to_dict())
        return "rolled_back"
    return "next" if step.index + 1 < len(plan.phases) else "promote"


def promote_reason(plan: CanaryPlan, approved_by: str | None = None) -> str:
    reason = f"passed {len(plan.phases)} canary step(s) against champion {plan.champion}"
    return f"{reason}; approved by {approved_by}" if approved_by else reason


def run_canary(settings: Settings, policy: CanaryPolicy, version: str | int | None = None, *,
               metrics_url: str | None = None, reason: str = "",
               sleep: Callable[[float], None] = time.sleep) -> CanaryOutcome:
    """The whole canary in this process (what the DAG does across tasks, without approval)."""
    start = begin(settings, policy, version, metrics_url=metrics_url, reason=reason)
    if start.plan is None:
        return CanaryOutcome(start.action, start.version, start.reason)
    plan, verdicts = start.plan, []
    index, previous = 0, None
    while True:
        step = begin_step(settings, plan, index, **({"previous_verdict": previous} if previous else {}))
        while not (progress := bake_progress(settings, policy, plan, step)).done:
            sleep(policy.bake.poll_seconds)
        verdict = judge_step(settings, policy, plan, step)
        verdicts.append(verdict.to_dict())
        outcome = conclude(settings, plan, verdict, step, progress.timed_out)
        if outcome == "rolled_back":
            return CanaryOutcome("rolled_back", plan.version, verdict.why, tuple(verdicts))
        if outcome == "promote":
            why = promote_reason(plan)
            actions.promote(settings, plan.version, why, verdict=verdict.to_dict())
            return CanaryOutcome("promoted", plan.version, why, tuple(verdicts))
        index, previous = index + 1, verdict.why
