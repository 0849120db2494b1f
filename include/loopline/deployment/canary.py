"""The canary's steps, as the DAG ``deploy_canary`` runs them one task at a time and ``run_canary`` runs
them in one process (CLI, tests):

    begin → for each phase (optional shadow, then the traffic steps): begin_step → bake → judge_step
          → promote, or roll back at the first failed (or unjudgeable) step.

Everything handed between steps is a small JSON-safe dict (XCom, trigger kwargs). Failed predictions
are counted over every serving replica by the plan's ``ErrorSource`` (``error_source`` picks it; how it
counts: include/loopline/deployment/windows.py); counts it cannot give block promotion, with its reason.

Every bake poll also asks whether the challenger is broken in serving (``analysis.check_health``: it keeps
failing to load, or fails every request, and answered none): then the bake ends at once and the step's
verdict rolls it back with that reason, instead of waiting ``bake.max_seconds`` for traffic it cannot get.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from loopline.config import Settings
from loopline.config.use_case import load_use_case
from loopline.deployment import actions, windows
from loopline.deployment.analysis import (
    CanaryVerdict,
    ServingHealth,
    VariantWindow,
    analyse,
    check_health,
    check_labelled,
    holdout_score_shift,
)
from loopline.deployment.policy import CanaryPolicy, CanaryPolicyError
from loopline.deployment.windows import ErrorSource, ErrorsUnavailable, WindowCounts
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
    metrics_url: str  # one process's /metrics: where errors are counted when ``errors_from`` is None
    started_at: float = 0.0  # epoch seconds: the champion's reference window may reach back to here
    errors_at_start: dict[str, Any] | None = None  # ErrorSource.mark() then
    errors_from: ErrorSource | None = None  # where failed predictions are counted (every replica)
    # The two versions' score shift on the gate's holdout (None: not known); the live shift may exceed it by
    # score_shift.max_psi (``analysis.holdout_score_shift``).
    holdout_psi: float | None = None

    @property
    def error_source(self) -> ErrorSource:
        return self.errors_from or ErrorSource(metrics_urls=(self.metrics_url,))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors_from": self.errors_from.to_dict() if self.errors_from else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanaryPlan:
        errors_from = data.get("errors_from")
        return cls(
            version=str(data["version"]),
            champion=str(data["champion"]),
            phases=tuple(Phase(**p) for p in data["phases"]),
            metrics_url=data["metrics_url"],
            started_at=float(data.get("started_at", 0.0)),
            errors_at_start=data.get("errors_at_start"),
            errors_from=ErrorSource.from_dict(errors_from) if errors_from else None,
            holdout_psi=data.get("holdout_psi"),
        )


@dataclass(frozen=True)
class Start:
    """What ``begin`` did: ``canary`` (plan set), ``promoted`` (first model) or ``nothing`` (and why)."""

    action: str
    reason: str
    version: str | None = None
    plan: CanaryPlan | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "version": self.version,
            "plan": self.plan.to_dict() if self.plan else None,
        }


@dataclass(frozen=True)
class StepState:
    index: int
    started_at: float  # epoch seconds; the window is [started_at, analysis time)
    errors_before: dict[str, Any] | None  # ErrorSource.mark() at the start; None: counters unreadable then

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
    waiting_for: str = ""  # what keeps a bake going once traffic and time suffice (required labels)
    broken: str = ""  # why the bake ended early: the challenger is broken in serving (check_health)

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


def error_source(
    settings: Settings, policy: CanaryPolicy, metrics_url: str | Sequence[str] | None = None
) -> ErrorSource:
    """Where this canary counts failed predictions: the ``/metrics`` URL(s) given (CLI, tests); else the
    policy's ``analysis.errors.source.metrics_urls``; else Prometheus at ``LOOPLINE_PROMETHEUS_URL`` (every
    replica it scrapes); else the serving URL's own ``/metrics`` (one process)."""
    rule = policy.analysis.errors.source
    prometheus = (settings.prometheus_url or "").strip()
    if metrics_url:
        urls = (metrics_url,) if isinstance(metrics_url, str) else tuple(metrics_url)
        return _source("metrics_url", metrics_urls=urls)
    if rule.metrics_urls:
        return _source("analysis.errors.source.metrics_urls", metrics_urls=rule.metrics_urls)
    if prometheus:
        return _source(
            "LOOPLINE_PROMETHEUS_URL", prometheus_url=prometheus, selector=rule.prometheus_selector
        )
    return _source("LOOPLINE_SERVING_URL", metrics_urls=(default_metrics_url(settings),))


def _source(setting: str, **fields: Any) -> ErrorSource:
    try:
        return ErrorSource(**fields)
    except ValueError as exc:
        raise CanaryPolicyError(f"{setting}: {exc}") from None


def begin(
    settings: Settings,
    policy: CanaryPolicy,
    version: str | int | None = None,
    *,
    metrics_url: str | Sequence[str] | None = None,
    errors_from: ErrorSource | None = None,
    reason: str = "",
) -> Start:
    """Decide whether a canary runs for ``version`` (default: the current challenger). The first model is
    promoted directly (nothing to compare against); a version no longer the challenger is left alone.
    ``errors_from`` (else ``error_source(settings, policy, metrics_url)``): where errors are counted.
    A policy whose labelled keys judge the other task than the use case's is refused (CanaryPolicyError)."""
    use_case = load_use_case(settings.use_case)
    policy.check_task(use_case.task, use_case.name)
    state = actions.read_state(settings)
    if state.challenger is None:
        return Start(
            "nothing", "no @challenger alias: nothing to deploy", None if version is None else str(version)
        )
    if version is not None and str(version) != state.challenger:
        return Start(
            "nothing",
            f"version {version} is no longer the challenger (now {state.challenger}); "
            "the newer version's own canary run handles it",
            str(version),
        )
    version = state.challenger
    if state.champion is None:
        actions.promote(settings, version, FIRST_MODEL_REASON, **({"trigger": reason} if reason else {}))
        return Start("promoted", FIRST_MODEL_REASON, version)
    source = errors_from or error_source(settings, policy, metrics_url)
    plan = CanaryPlan(
        version,
        state.champion,
        phases(policy),
        next(iter(source.metrics_urls), ""),
        time.time(),
        source.mark(),
        source,
        _holdout_psi(settings, policy, version, state.champion),
    )
    history.record(
        settings,
        "canary_started",
        version=version,
        reason=reason or "passed the gate",
        champion=state.champion,
        steps=[asdict(p) for p in plan.phases],
        errors_from=source.describe(),
    )
    return Start("canary", f"canary of version {version} against champion {state.champion}", version, plan)


def _holdout_psi(settings: Settings, policy: CanaryPolicy, version: str, champion: str) -> float | None:
    """The score shift between ``version`` and ``champion`` on ``version``'s gate holdout, None when its gate
    did not score that champion (the live check then allows ``max_psi`` alone)."""
    from loopline.gating.gate import read_holdout_scores

    read = read_holdout_scores(settings.mlflow_uri, load_use_case(settings.use_case).model_name, version)
    return holdout_score_shift(policy.analysis.score_shift, read[1] if read else None, champion)


def _failed(
    plan: CanaryPlan, mark: dict[str, Any] | None, since: float, until: float
) -> tuple[WindowCounts | None, str | None]:
    """Failed predictions (and load attempts) per (variant, version) in the window, or None and why they
    cannot be counted."""
    try:
        return plan.error_source.count_all(mark, since, until), None
    except ErrorsUnavailable as exc:
        return None, str(exc)


def begin_step(
    settings: Settings,
    plan: CanaryPlan,
    index: int,
    *,
    clock: Callable[[], float] = time.time,
    **details: Any,
) -> StepState:
    """Shift traffic to phase ``index`` and remember where its window and error counters start."""
    phase = plan.phases[index]
    actions.shift_traffic(
        settings,
        plan.version,
        phase.share,
        mode=phase.mode,
        step=index + 1,
        steps=len(plan.phases),
        **details,
    )
    return StepState(index, clock(), plan.error_source.mark())


def _champion_since(
    settings: Settings, policy: CanaryPolicy, plan: CanaryPlan, step: StepState
) -> tuple[float, dict[str, Any] | None]:
    """Where the champion's reference window starts: the step's own start when the champion answered
    enough in it; else the canary's start (at 100 % the champion answers nobody, so the last step is
    compared with the champion's traffic of the earlier steps)."""
    answered = windows.logged_counts(settings, step.started_at).get((CHAMPION, plan.champion), 0)
    if answered >= policy.bake.min_requests or not plan.started_at:
        return step.started_at, step.errors_before
    return plan.started_at, plan.errors_at_start


def _errors_of(counts: WindowCounts | None, key: windows.Key) -> int | None:
    return None if counts is None else counts.errors.get(key, 0)


def serving_health(
    plan: CanaryPlan,
    step: StepState,
    answered: dict[windows.Key, int],
    champion_answered: int,
    champion_counts: WindowCounts | None,
    challenger_counts: WindowCounts | None,
) -> ServingHealth:
    """What serving saw of the challenger in the step (``answered``: the prediction log's counts since the
    step began; the counts: ``ErrorSource.count_all`` of the champion's and the step's windows)."""
    key = (plan.phases[step.index].variant, plan.version)
    counts = challenger_counts
    return ServingHealth(
        version=plan.version,
        answered=answered.get(key, 0),
        failed=_errors_of(counts, key),
        load_failures=None if counts is None else counts.load_failures_of(plan.version),
        champion_answered=champion_answered,
        champion_failed=_errors_of(champion_counts, (CHAMPION, plan.champion)),
        load_error="" if counts is None else counts.first_error("load", plan.version),
        request_error="" if counts is None else counts.first_error("score", plan.version, key[0]),
    )


def _observe(
    settings: Settings, policy: CanaryPolicy, plan: CanaryPlan, step: StepState, now: float
) -> tuple[dict[str, int], ServingHealth]:
    """Answered + failed per variant so far (failed ones that cannot be counted yet count as none), and the
    challenger's health in serving — from one read of the prediction log and of the error counters."""
    champion_since, champion_mark = _champion_since(settings, policy, plan, step)
    (champion_counts, _), (challenger_counts, _) = _failed_per_window(
        plan, step, champion_since, champion_mark, now
    )
    in_step = windows.logged_counts(settings, step.started_at)
    champion_key = (CHAMPION, plan.champion)
    champion_answered = (
        in_step if champion_since == step.started_at else windows.logged_counts(settings, champion_since)
    ).get(champion_key, 0)
    health = serving_health(plan, step, in_step, champion_answered, champion_counts, challenger_counts)
    requests: dict[str, int] = {
        CHAMPION: champion_answered + (_errors_of(champion_counts, champion_key) or 0),
        CHALLENGER: health.answered + (health.failed or 0),
    }
    return requests, health


def _failed_per_window(
    plan: CanaryPlan,
    step: StepState,
    champion_since: float,
    champion_mark: dict[str, Any] | None,
    until: float,
) -> tuple[tuple[WindowCounts | None, str | None], ...]:
    """``_failed`` of the champion's window and of the step's (the challenger's): one count (one Prometheus
    query, one scrape per URL) when they are the same window, as they are unless the champion reaches back."""
    challenger = _failed(plan, step.errors_before, step.started_at, until)
    if (champion_since, champion_mark) == (step.started_at, step.errors_before):
        return challenger, challenger
    return _failed(plan, champion_mark, champion_since, until), challenger


def bake_progress(
    settings: Settings, policy: CanaryPolicy, plan: CanaryPlan, step: StepState, *, now: float | None = None
) -> BakeProgress:
    """Done when both variants have ``bake.min_requests`` and ``bake.min_seconds`` passed; timed out
    after ``bake.max_seconds`` (the analysis then says whether there was enough traffic); done at once,
    with ``broken`` saying why, when the challenger is broken in serving (``check_health``)."""
    now = time.time() if now is None else now
    elapsed = now - step.started_at
    requests, health = _observe(settings, policy, plan, step, now)
    checked = check_health(policy, health)
    if checked.status == "fail":
        return BakeProgress(True, False, elapsed, requests, broken=checked.reason)
    enough = all(n >= policy.bake.min_requests for n in requests.values())
    waiting = ""
    if elapsed >= policy.bake.min_seconds and enough:
        if not policy.analysis.labelled.required:
            return BakeProgress(True, False, elapsed, requests)
        # Required labels arrive days late: bake on (up to max_seconds) rather than roll back for lack of them.
        check = check_labelled(policy, *_labelled_windows(settings, plan, step, now), _task(settings))
        if check.status != "insufficient":
            return BakeProgress(True, False, elapsed, requests)
        waiting = f"labels: {check.reason}"
    if elapsed >= policy.bake.max_seconds:
        return BakeProgress(True, True, elapsed, requests, waiting)
    return BakeProgress(False, False, elapsed, requests, waiting)


def _task(settings: Settings) -> str:
    """The use case's task: which metrics labelled quality judges (PR-AUC/recall, or MAE/RMSE)."""
    return load_use_case(settings.use_case).task


def _labelled_windows(
    settings: Settings, plan: CanaryPlan, step: StepState, until: float
) -> tuple[VariantWindow, VariantWindow, dict[str, float]]:
    """Labelled quality is judged on everything the canary has served so far — labels come late, so a step's
    own events rarely have theirs yet: the champion's rows and the challenger's (live and shadow)
    since the canary began, and the labels that have arrived for them."""
    import pandas as pd

    since = plan.started_at or step.started_at
    champion_rows = windows.read_predictions(settings, since, until, CHAMPION, plan.champion)
    challenger_rows = pd.concat(
        [
            windows.read_predictions(settings, since, until, variant, plan.version)
            for variant in sorted({p.variant for p in plan.phases})
        ],
        ignore_index=True,
    )
    champion = VariantWindow.from_frame(champion_rows, plan.champion, 0)
    challenger = VariantWindow.from_frame(challenger_rows, plan.version, 0)
    ids = set(champion.event_ids) | set(challenger.event_ids)
    return champion, challenger, (windows.arrived_labels(settings, ids) if ids else {})


def judge_step(
    settings: Settings, policy: CanaryPolicy, plan: CanaryPlan, step: StepState, *, until: float | None = None
) -> CanaryVerdict:
    """Analyse the step's window: the champion's and the challenger's rows, errors and arrived labels."""
    until = time.time() if until is None else until
    variant = plan.phases[step.index].variant
    champion_since, champion_mark = _champion_since(settings, policy, plan, step)
    (champion_counts, champion_why), (challenger_counts, challenger_why) = _failed_per_window(
        plan, step, champion_since, champion_mark, until
    )
    champion_rows = windows.read_predictions(settings, champion_since, until, CHAMPION, plan.champion)
    challenger_rows = windows.read_predictions(settings, step.started_at, until, variant, plan.version)
    champion = VariantWindow.from_frame(
        champion_rows, plan.champion, _errors_of(champion_counts, (CHAMPION, plan.champion))
    )
    challenger = VariantWindow.from_frame(
        challenger_rows, plan.version, _errors_of(challenger_counts, (variant, plan.version))
    )
    health = serving_health(
        plan,
        step,
        {(variant, plan.version): challenger.answered},
        champion.answered,
        champion_counts,
        challenger_counts,
    )
    labelled_champion, labelled_challenger, labels = _labelled_windows(settings, plan, step, until)
    verdict = analyse(
        policy,
        champion,
        challenger,
        labels,
        final=step.index + 1 == len(plan.phases),
        labelled=(labelled_champion, labelled_challenger),
        health=health,
        task=_task(settings),
        holdout_psi=plan.holdout_psi,
    )
    why = challenger_why or champion_why
    return _errors_unavailable_because(verdict, f"{why} ({plan.error_source.describe()})") if why else verdict


def _errors_unavailable_because(verdict: CanaryVerdict, why: str) -> CanaryVerdict:
    """The verdict with the errors check's reason saying why the counts were unavailable (the analysis
    only knows that they were; it still blocks promotion)."""
    checks = tuple(
        replace(c, reason=f"error counts unavailable: {why}: cannot judge errors")
        if c.name == "errors" and c.status == "insufficient"
        else c
        for c in verdict.checks
    )
    return replace(verdict, checks=checks)


def conclude(
    settings: Settings, plan: CanaryPlan, verdict: CanaryVerdict, step: StepState, timed_out: bool = False
) -> str:
    """After a step's verdict: ``next`` (ramp), ``promote`` (last step passed) or ``rolled_back`` (done here)."""
    phase = plan.phases[step.index]
    if not verdict.passed:
        why = verdict.why
        if timed_out and verdict.not_enough_traffic:
            why = f"bake timed out: {why}"
        actions.roll_back(
            settings,
            plan.version,
            f"step {step.index + 1} ({phase.mode} {phase.share:.0%}): {why}",
            verdict=verdict.to_dict(),
        )
        return "rolled_back"
    return "next" if step.index + 1 < len(plan.phases) else "promote"


def promote_reason(plan: CanaryPlan, approved_by: str | None = None) -> str:
    reason = f"passed {len(plan.phases)} canary step(s) against champion {plan.champion}"
    return f"{reason}; approved by {approved_by}" if approved_by else reason


def run_canary(
    settings: Settings,
    policy: CanaryPolicy,
    version: str | int | None = None,
    *,
    metrics_url: str | Sequence[str] | None = None,
    errors_from: ErrorSource | None = None,
    reason: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> CanaryOutcome:
    """The whole canary in this process (what the DAG does across tasks, without approval)."""
    start = begin(settings, policy, version, metrics_url=metrics_url, errors_from=errors_from, reason=reason)
    if start.plan is None:
        return CanaryOutcome(start.action, start.version, start.reason)
    plan, verdicts = start.plan, []
    index, previous = 0, None
    while True:
        details: dict[str, Any] = {"previous_verdict": previous} if previous else {}
        step = begin_step(settings, plan, index, **details)
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
