"""The canary's pure decision: is the challenger at least as good as the champion on the same live window?

``analyse(policy, champion, challenger, labels)`` returns a ``CanaryVerdict`` with one result per check:
errors, p95 latency, score-distribution shift (PSI) and labelled quality. No I/O here: the windows are
read by ``loopline.deployment.windows`` and the decision is acted on by ``loopline.deployment.actions``.

A check is ``pass``, ``fail``, ``insufficient`` (below its minimum sample: blocks promotion, so too
little traffic never promotes) or ``skipped`` (labelled quality before labels arrive, when not required).

``check_health`` is asked first: a challenger that cannot load in serving, or fails every request it is
routed, has nothing the other checks could measure, and is rolled back at once with that reason (the bake
asks it on every poll, so this waits neither for ``bake.min_requests`` nor for ``bake.max_seconds``).

Labelled quality compares two different sets of units (routing is sticky per the use case's unit, e.g. a
customer), and errors cluster on a few of them (fraud comes in bursts on a few cards; one slow restaurant
makes many late deliveries): a few hundred labels hold a handful of incidents, and the same model's recall
differs by tens of points between two such samples. So a labelled metric fails only when the challenger is
worse than the allowed loss with the policy's ``labelled.confidence``, judged by a bootstrap that resamples
whole units. A classifier is judged by PR-AUC and recall, a regressor by MAE and RMSE (``task``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from loopline.deployment.policy import CanaryPolicy, ScoreShiftCheck
from loopline.metrics import average_precision_of_curve, tie_ends

# The prediction log's columns naming each prediction's event and its unit (serving's stored names, whatever
# the use case's id and unit columns are called).
from loopline.serving.prediction_log import EVENT_ID_COLUMN as LOG_EVENT_ID
from loopline.serving.prediction_log import UNIT_ID_COLUMN as LOG_UNIT

Status = Literal["pass", "fail", "insufficient", "skipped"]

# A labelled metric fails only when its drop beyond the allowance is this sure; two metrics at 97.5 % each
# roll back an equal challenger about one time in twenty (Bonferroni) and a backwards-ranking one ~always.
BOOTSTRAP_ROUNDS = 400  # resamples of units (O(labelled rows) each)


@dataclass(frozen=True)
class VariantWindow:
    """One variant's live predictions in the analysis window.

    ``errors`` counts its events that failed to score (from the service's metrics; the prediction
    log holds answered ones only); None when they could not be read, which blocks promotion.
    ``unit_ids`` (per row, "" when unknown) lets labelled quality resample whole units (routing is sticky
    per unit, so rows of one unit are not independent).
    """

    version: str
    scores: tuple[float, ...] = ()
    latencies_ms: tuple[float, ...] = ()
    event_ids: tuple[str, ...] = ()
    decisions: tuple[bool, ...] = ()
    errors: int | None = 0
    units: int | None = None  # distinct units in the window (None: unknown)
    unit_ids: tuple[str, ...] = ()

    @property
    def answered(self) -> int:
        return len(self.scores)

    @property
    def total(self) -> int:
        return self.answered + (self.errors or 0)

    @classmethod
    def from_frame(cls, frame: Any, version: str, errors: int | None) -> VariantWindow:
        """From ``PredictionLog.read`` rows of one variant and version."""
        units = frame[LOG_UNIT] if LOG_UNIT in frame else None
        return cls(
            version=str(version),
            scores=tuple(float(s) for s in frame["score"]),
            latencies_ms=tuple(float(v) for v in frame["latency_ms"]),
            event_ids=tuple(str(t) for t in frame[LOG_EVENT_ID]),
            decisions=tuple(bool(d) for d in frame["decision"]),
            errors=errors,
            units=None if units is None else int(units.nunique()),
            unit_ids=() if units is None else tuple(u if isinstance(u, str) else "" for u in units),
        )


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    reason: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        return self.status in ("fail", "insufficient")


@dataclass(frozen=True)
class CanaryVerdict:
    """The analysis of one step: passed only when no check failed or lacked its minimum sample."""

    challenger_version: str
    champion_version: str
    checks: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return not any(c.blocks for c in self.checks)

    @property
    def not_enough_traffic(self) -> bool:
        """Nothing failed, but some check lacked its minimum sample."""
        return not any(c.status == "fail" for c in self.checks) and any(
            c.status == "insufficient" for c in self.checks
        )

    @property
    def reasons(self) -> list[str]:
        return [f"{c.name}: {c.reason}" for c in self.checks if c.blocks]

    @property
    def why(self) -> str:
        if self.passed:
            return "all checks passed: " + "; ".join(f"{c.name}: {c.reason}" for c in self.checks)
        prefix = ""
        if self.not_enough_traffic:
            short = {c.name for c in self.checks if c.status == "insufficient"}
            prefix = (
                "not enough labels to judge: " if short == {"labelled"} else "not enough traffic to judge: "
            )
        return prefix + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "not_enough_traffic": self.not_enough_traffic,
            "why": self.why,
            "challenger_version": self.challenger_version,
            "champion_version": self.champion_version,
            "checks": [asdict(c) for c in self.checks],
        }


@dataclass(frozen=True)
class ServingHealth:
    """What serving saw of the challenger in the step so far, summed over every replica.

    ``answered``: its rows in the prediction log; ``failed``: its failed predictions; ``load_failures``:
    failed attempts to load it (None: could not be counted). ``champion_*``: the champion's window, to tell
    a challenger's own failure from a shared outage. The error texts are the first each replica reported.
    """

    version: str
    answered: int
    failed: int | None
    load_failures: int | None
    champion_answered: int = 0
    champion_failed: int | None = 0
    load_error: str = ""
    request_error: str = ""


def check_health(policy: CanaryPolicy, health: ServingHealth) -> CheckResult:
    """``fail`` when the challenger answered nothing in the step and either kept failing to load
    (``health.min_load_failures`` attempts) or failed at least ``health.min_failed_requests`` requests while
    the champion's error rate stays within the errors check's reach (so the challenger's 100 % is its own).
    No traffic yet is not a failure; counts that cannot be read are ``skipped`` here (the errors check
    already blocks promotion on them)."""
    rule, errors_rule = policy.analysis.health, policy.analysis.errors
    version = health.version
    values: dict[str, Any] = {
        "answered": health.answered,
        "failed": health.failed,
        "load_failures": health.load_failures,
        "load_error": health.load_error,
        "request_error": health.request_error,
    }
    if health.answered == 0 and (health.load_failures or 0) >= rule.min_load_failures:
        also = f"; {health.failed} request(s) routed to it failed" if health.failed else ""
        return CheckResult(
            "health",
            "fail",
            f"challenger v{version} cannot load in serving: "
            f"{health.load_error or 'no error text reported (see the serving logs)'} "
            f"({health.load_failures} failed load attempts since the step began, summed over the "
            f"replicas, and not one request answered{also})",
            values,
        )
    if health.answered == 0 and (health.failed or 0) >= rule.min_failed_requests:
        if health.champion_failed is None:
            return CheckResult(
                "health",
                "skipped",
                f"challenger v{version} failed all {health.failed} of its "
                "requests, but the champion's errors could not be counted: not judged here "
                "(the errors check blocks promotion)",
                values,
            )
        champion_total = health.champion_answered + health.champion_failed
        champion_rate = health.champion_failed / champion_total if champion_total else 0.0
        values["champion_rate"] = champion_rate
        if max(errors_rule.max_rate, champion_rate + errors_rule.max_increase) >= 1:
            return CheckResult(
                "health",
                "skipped",
                f"challenger v{version} failed all {health.failed} of its "
                f"requests, and the champion {champion_rate:.0%} of its {champion_total}: a shared "
                "outage, not the challenger's own failure (the errors check compares the rates)",
                values,
            )
        return CheckResult(
            "health",
            "fail",
            f"challenger v{version} failed every one of its {health.failed} "
            f"requests: {health.request_error or 'no error text reported (see the serving logs)'} "
            f"(answered none; the champion failed {champion_rate:.2%} of its {champion_total} requests)",
            values,
        )
    if health.failed is None or health.load_failures is None:
        unknown = "failed requests" if health.failed is None else "failed load attempts"
        return CheckResult(
            "health",
            "skipped",
            f"{unknown} could not be counted: cannot tell whether the "
            "challenger is broken in serving (the errors check blocks promotion)",
            values,
        )
    if health.answered == 0:
        return CheckResult(
            "health",
            "pass",
            f"no request answered yet, {health.failed} failed, "
            f"{health.load_failures} failed load attempt(s): not (yet) broken",
            values,
        )
    return CheckResult(
        "health",
        "pass",
        f"answered {health.answered}, failed {health.failed}, {health.load_failures} failed load attempt(s)",
        values,
    )


def per_variant(values: Mapping[str, Any]) -> str:
    """``{"champion": 120, "challenger": 80}`` as people read it in a reason: ``champion 120, challenger 80``."""
    return ", ".join(f"{name} {value}" for name, value in values.items())


def _short(name: str, have: Mapping[str, int], need: int) -> CheckResult | None:
    lacking = {k: v for k, v in have.items() if v < need}
    if not lacking:
        return None
    said = ", ".join(f"{k} {v}" for k, v in lacking.items())
    return CheckResult(name, "insufficient", f"{said} of the {need} requests needed", dict(have))


def check_errors(policy: CanaryPolicy, champion: VariantWindow, challenger: VariantWindow) -> CheckResult:
    """Challenger error rate <= max(max_rate, champion's rate + max_increase): a challenger may be as bad as
    a (bad) champion plus a little, never worse than the absolute limit otherwise."""
    rule = policy.analysis.errors
    if champion.errors is None or challenger.errors is None:
        return CheckResult(
            "errors",
            "insufficient",
            "error counts unavailable (the service's /metrics could not be read): cannot judge errors",
        )
    short = _short("errors", {"champion": champion.total, "challenger": challenger.total}, rule.min_requests)
    if short:
        return short
    rates = {"champion": champion.errors / champion.total, "challenger": challenger.errors / challenger.total}
    limit = max(rule.max_rate, rates["champion"] + rule.max_increase)
    values = {
        **{f"{k}_rate": v for k, v in rates.items()},
        "limit": limit,
        "challenger_errors": challenger.errors,
        "challenger_total": challenger.total,
    }
    text = f"challenger {rates['challenger']:.2%} vs champion {rates['champion']:.2%} (limit {limit:.2%})"
    return CheckResult("errors", "pass" if rates["challenger"] <= limit else "fail", text, values)


def check_latency(policy: CanaryPolicy, champion: VariantWindow, challenger: VariantWindow) -> CheckResult:
    """Challenger p95 <= min(max_p95_ms, ratio x champion p95 + slack)."""
    rule = policy.analysis.latency
    short = _short(
        "latency", {"champion": champion.answered, "challenger": challenger.answered}, rule.min_requests
    )
    if short:
        return short
    p95 = {
        k: float(np.percentile(w.latencies_ms, 95))
        for k, w in (("champion", champion), ("challenger", challenger))
    }
    limit = min(rule.max_p95_ms, rule.max_p95_ratio * p95["champion"] + rule.slack_ms)
    text = f"p95 challenger {p95['challenger']:.1f} ms vs champion {p95['champion']:.1f} ms (limit {limit:.1f} ms)"
    return CheckResult(
        "latency",
        "pass" if p95["challenger"] <= limit else "fail",
        text,
        {"champion_p95_ms": p95["champion"], "challenger_p95_ms": p95["challenger"], "limit_ms": limit},
    )


def psi(
    expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, bins: int = 10
) -> float:
    """Population stability index of ``actual`` against ``expected``: bins are ``expected``'s quantiles
    (equal-width on [0, 1] when those collapse, e.g. a near-constant score), counts smoothed by 0.5."""
    reference = np.asarray(expected, dtype="float64")
    observed = np.asarray(actual, dtype="float64")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        edges = np.linspace(0, 1, bins + 1)
    inner = edges[1:-1]  # the outer bins are open: scores outside the reference's range still count
    ref_counts = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=len(inner) + 1)
    obs_counts = np.bincount(np.searchsorted(inner, observed, side="right"), minlength=len(inner) + 1)
    p = (ref_counts + 0.5) / (ref_counts.sum() + 0.5 * len(ref_counts))
    q = (obs_counts + 0.5) / (obs_counts.sum() + 0.5 * len(obs_counts))
    return float(np.sum((q - p) * np.log(q / p)))


def score_psi(rule: ScoreShiftCheck, champion: Any, challenger: Any) -> float:
    """PSI of the challenger's scores against the champion's as the score-shift check measures it: scores below
    ``resolution`` are one band (quantile bins of a near-zero crowd would measure calibration nobody acts on)."""
    floor = rule.resolution
    return psi(np.maximum(champion, floor), np.maximum(challenger, floor), rule.bins)


def holdout_score_shift(rule: ScoreShiftCheck, holdout: Any, champion_version: str) -> float | None:
    """The score shift between the challenger and ``champion_version`` on the gate's holdout rows (the
    challenger's gate holdout frame: ``score`` and, when the gate compared it with a champion,
    ``champion_score`` and ``champion_version``), or None when the gate compared it with another version or none.

    Two versions trained differently (more epochs, another class weighting) score the same events
    differently; the gate saw that and judged the challenger's quality anyway. What the canary must catch is
    a shift beyond that one: a challenger that behaves differently live than it did offline."""
    if holdout is None or "champion_score" not in holdout or "champion_version" not in holdout:
        return None
    compared = {str(v) for v in holdout["champion_version"].unique()}
    if compared != {str(champion_version)}:
        return None
    return score_psi(rule, holdout["champion_score"].to_numpy(), holdout["score"].to_numpy())


def check_score_shift(
    policy: CanaryPolicy,
    champion: VariantWindow,
    challenger: VariantWindow,
    final: bool = True,
    holdout_psi: float | None = None,
) -> CheckResult:
    """PSI of the challenger's scores against the champion's, scores below ``resolution`` counted as one band,
    within ``max_psi`` above ``holdout_psi`` (the shift between the same two versions on the gate's holdout,
    ``holdout_score_shift``; None: not known, the limit is ``max_psi``). Too few distinct units: not judged at
    an intermediate step, insufficient (blocking) at the final one — a model is never promoted unjudged."""
    rule = policy.analysis.score_shift
    short = _short(
        "score_shift", {"champion": champion.answered, "challenger": challenger.answered}, rule.min_requests
    )
    if short:
        return short
    few = {
        k: w.units
        for k, w in (("champion", champion), ("challenger", challenger))
        if w.units is not None and w.units < rule.min_units
    }
    if few:
        # Routing is sticky per unit: a handful of units make a lumpy distribution whatever the
        # model. Not judged at an early step (larger steps have the units); at the last, blocking.
        return CheckResult(
            "score_shift",
            "insufficient" if final else "skipped",
            f"distinct units {per_variant(few)}, fewer than the {rule.min_units} needed",
            {"units": few},
        )
    value = score_psi(rule, champion.scores, challenger.scores)
    limit = rule.max_psi + (holdout_psi or 0.0)
    offline = (
        f"{rule.max_psi} above the {holdout_psi:.3f} between the two versions on the gate's holdout"
        if holdout_psi is not None
        else f"{rule.max_psi}; the gate's holdout shift between the two versions is not known"
    )
    return CheckResult(
        "score_shift",
        "pass" if value <= limit else "fail",
        f"PSI {value:.3f} (limit {limit:.3f}: {offline}; scores below {rule.resolution:g} as one band)",
        {"psi": value, "limit": limit, "holdout_psi": holdout_psi, "resolution": rule.resolution},
    )


@dataclass(frozen=True)
class LabelledSample:
    """A variant's distinct labelled events, highest score first (the order of the PR curve).

    For a classifier ``labels`` are 0/1 and ``scores`` probabilities; for a regressor ``labels`` are the true
    values and ``scores`` the predictions (in the label's units)."""

    labels: np.ndarray  # 0/1 (a classifier) or the true value (a regressor)
    decisions: np.ndarray  # flagged at the service's threshold (a classifier)
    units: np.ndarray  # index of each row's unit: what routing assigns and the bootstrap resamples
    last_of_tie: np.ndarray  # where each run of equal scores ends: tied rows cross a threshold together
    scores: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def size(self) -> int:
        return int(self.labels.size)

    @property
    def positives(self) -> int:
        return int(self.labels.sum())

    @property
    def positive_units(self) -> int:
        """Distinct units with a positive row (a classifier's positives come in bursts on a few)."""
        return int(np.unique(self.units[self.labels == 1]).size)

    @property
    def distinct_units(self) -> int:
        return int(np.unique(self.units).size)

    @classmethod
    def join(cls, window: VariantWindow, labels: Mapping[str, float]) -> LabelledSample:
        """The window's events whose labels arrived. An event scored again (a retry, a replay) counts once,
        with its latest score, so repeats cannot pass for a large labelled sample. Rows of an unknown unit
        are each their own unit."""
        latest: dict[str, tuple[float, float, bool, str]] = {}
        for i, (event, score, decision) in enumerate(
            zip(window.event_ids, window.scores, window.decisions, strict=False)
        ):
            label = labels.get(event)
            if label is not None:
                unit = window.unit_ids[i] if i < len(window.unit_ids) else ""
                latest[event] = (float(label), float(score), bool(decision), unit or f"event:{event}")
        rows = list(latest.values())
        scores = np.array([r[1] for r in rows], dtype="float64")
        order = np.argsort(-scores, kind="mergesort")
        _, units = np.unique(np.array([r[3] for r in rows], dtype=str), return_inverse=True)
        ends = tie_ends(scores[order]) if rows else np.empty(0)
        return cls(
            labels=np.array([r[0] for r in rows], dtype="float64")[order],
            decisions=np.array([r[2] for r in rows], dtype=bool)[order],
            units=units.reshape(-1)[order],
            last_of_tie=ends.astype("int64"),
            scores=scores[order],
        )

    def quality(self, weights: np.ndarray | None = None) -> tuple[float, float]:
        """(PR-AUC, recall at the decision threshold), each row counted ``weights`` times (default once).
        PR-AUC is scikit-learn's average precision, ties included; NaN without both classes."""
        if not self.size:
            return np.nan, np.nan
        weights = np.ones(self.size) if weights is None else weights
        hits = weights * self.labels
        tps = np.cumsum(hits)[self.last_of_tie]
        fps = np.cumsum(weights - hits)[self.last_of_tie]
        if tps[-1] <= 0 or fps[-1] <= 0:
            return np.nan, np.nan
        return average_precision_of_curve(tps, fps), float(hits[self.decisions].sum() / tps[-1])

    def errors(self, weights: np.ndarray | None = None) -> tuple[float, float]:
        """A regressor's (MAE, RMSE) in the label's units, each row counted ``weights`` times; NaN when empty."""
        weights = np.ones(self.size) if weights is None else weights
        total = float(weights.sum())
        if not self.size or total <= 0:
            return np.nan, np.nan
        diff = self.scores - self.labels
        return float(np.sum(weights * np.abs(diff)) / total), float(
            np.sqrt(np.sum(weights * diff**2) / total)
        )

    def _unit_weights(self, rng: np.random.Generator) -> np.ndarray:
        """A Poisson bootstrap of units: each unit's rows weigh Poisson(1), together."""
        weights: np.ndarray = rng.poisson(1.0, int(self.units.max()) + 1)[self.units].astype("float64")
        return weights

    def resampled(self, rng: np.random.Generator) -> tuple[float, float]:
        """``quality`` on a Poisson bootstrap of units."""
        return self.quality(self._unit_weights(rng))

    def resampled_errors(self, rng: np.random.Generator) -> tuple[float, float]:
        """``errors`` on a Poisson bootstrap of units."""
        return self.errors(self._unit_weights(rng))


def beyond(measured: Mapping[str, float], limits: Mapping[str, float | None]) -> list[str]:
    """The metrics (keys of ``limits``) whose sure loss ``measured`` exceeds the allowance (None: not judged)."""
    return [key for key, limit in limits.items() if limit is not None and measured[key] > limit]


def surely_dropped(
    champion: LabelledSample, challenger: LabelledSample, confidence: float, rounds: int = BOOTSTRAP_ROUNDS
) -> dict[str, float]:
    """Per metric, how far below the champion's the challenger's value is at least, with ``confidence``: the
    lower quantile of (champion - challenger) over bootstrap resamples of units, each variant on its own."""
    rng = np.random.default_rng(0)  # a pure decision: the same windows give the same verdict
    drops = np.array([np.subtract(champion.resampled(rng), challenger.resampled(rng)) for _ in range(rounds)])
    usable = ~np.isnan(drops).any(axis=1)  # a resample left without positives (or negatives) ranks nothing
    # No usable resample (never seen with both classes present): no spread to measure, the observed drop stands.
    low = (
        np.quantile(drops[usable], 1 - confidence, axis=0)
        if usable.any()
        else np.subtract(champion.quality(), challenger.quality())
    )
    return {"pr_auc": float(low[0]), "recall": float(low[1])}


def surely_worse_errors(
    reference: LabelledSample,
    current: LabelledSample,
    confidence: float,
    rounds: int = BOOTSTRAP_ROUNDS,
    day_shocks: np.ndarray | None = None,
) -> dict[str, float]:
    """A regressor's errors: per metric (MAE, RMSE), how much larger than ``reference``'s the ``current``
    one is at least, as a ratio (0.10: 10 % larger), with ``confidence``: the lower quantile of
    current / reference - 1 over bootstrap resamples of units, each sample on its own.

    ``day_shocks`` (``rounds`` x 2, per metric): how far shocks shared by a whole day (weather, an event)
    moved log(current / reference) in each round, drawn by the caller when the two samples come from
    different days (the concept check); a unit bootstrap cannot see them. None when both samples share
    their days (the canary's variants)."""
    rng = np.random.default_rng(0)  # a pure decision: the same windows give the same verdict
    ratios = []
    for _ in range(rounds):
        ref, cur = reference.resampled_errors(rng), current.resampled_errors(rng)
        ratios.append([c / r if r > 0 else np.nan for r, c in zip(ref, cur, strict=True)])
    table = np.array(ratios, dtype="float64")
    if day_shocks is not None:
        table = table * np.exp(-day_shocks)
    table -= 1
    usable = ~np.isnan(table).any(axis=1)
    if usable.any():
        low = np.quantile(table[usable], 1 - confidence, axis=0)
    else:  # a reference without error (a perfect model) or empty resamples: the observed ratio stands
        ref, cur = reference.errors(), current.errors()
        low = np.array(
            [c / r - 1 if r > 0 else (np.inf if c > 0 else 0.0) for r, c in zip(ref, cur, strict=True)]
        )
    return {"mae": float(low[0]), "rmse": float(low[1])}


def check_labelled(
    policy: CanaryPolicy,
    champion: VariantWindow,
    challenger: VariantWindow,
    labels: Mapping[str, float] | None,
    task: str = "binary_classification",
) -> CheckResult:
    """The challenger's labelled quality not worse than the champion's by more than the policy allows, on
    the events of this window whose labels have arrived: failed only when the loss beyond the allowance is
    sure (``labelled.confidence``) given how few units carry the errors. A classifier: PR-AUC and recall
    (absolute drops); a regressor: MAE and RMSE (increases as a ratio of the champion's)."""
    samples = {
        k: LabelledSample.join(w, labels or {})
        for k, w in (("champion", champion), ("challenger", challenger))
    }
    if task == "regression":
        return _check_labelled_errors(policy, samples)
    rule = policy.analysis.labelled
    waiting: Status = "insufficient" if rule.required else "skipped"
    counts = {k: s.size for k, s in samples.items()}
    positives = {k: s.positives for k, s in samples.items()}
    if any(
        s.size < rule.min_labelled or s.positives < rule.min_positives or s.positives == s.size
        for s in samples.values()
    ):
        return CheckResult(
            "labelled",
            waiting,
            f"waiting for labels: labelled {per_variant(counts)}; positives {per_variant(positives)} "
            f"(need {rule.min_labelled} and {rule.min_positives} per variant, and negative ones)",
            {"labelled": counts, "positives": positives},
        )
    quality = {k: s.quality() for k, s in samples.items()}
    ap = {k: q[0] for k, q in quality.items()}
    recall = {k: q[1] for k, q in quality.items()}
    dropped = surely_dropped(samples["champion"], samples["challenger"], rule.confidence)
    limits = {"pr_auc": rule.max_pr_auc_drop, "recall": rule.max_recall_drop}
    names = {"pr_auc": "PR-AUC", "recall": "recall"}
    worse = [names[key] for key in beyond(dropped, limits)]
    positive_units = {k: s.positive_units for k, s in samples.items()}
    text = (
        f"PR-AUC challenger {ap['challenger']:.3f} vs champion {ap['champion']:.3f}, recall "
        f"{recall['challenger']:.3f} vs {recall['champion']:.3f} on labelled {per_variant(counts)} (positives: "
        + ", ".join(f"{k} {positives[k]} on {positive_units[k]} unit(s)" for k in samples)
        + ")"
    )
    if worse:
        sure = ", ".join(
            f"{name} by >= {dropped[key]:.3f} (allowed {limits[key]})"
            for name, key in (("PR-AUC", "pr_auc"), ("recall", "recall"))
            if name in worse
        )
        text = (
            f"{' and '.join(worse)} worse than allowed: {text}; {rule.confidence:.1%} sure it dropped {sure}"
        )
    return CheckResult(
        "labelled",
        "fail" if worse else "pass",
        text,
        {
            "pr_auc": ap,
            "recall": recall,
            "dropped_at_least": dropped,
            "labelled": counts,
            "positives": positives,
            "positive_units": positive_units,
        },
    )


def _check_labelled_errors(policy: CanaryPolicy, samples: dict[str, LabelledSample]) -> CheckResult:
    """A regressor's labelled quality: MAE and RMSE of the challenger at most ``max_mae_increase`` /
    ``max_rmse_increase`` (ratios) above the champion's, failed only when a bootstrap over units is
    ``confidence`` sure the increase exceeds them. Too few labelled rows or distinct units: not judged."""
    rule = policy.analysis.labelled
    waiting: Status = "insufficient" if rule.required else "skipped"
    counts = {k: s.size for k, s in samples.items()}
    units = {k: s.distinct_units for k, s in samples.items()}
    if any(s.size < rule.min_labelled or s.distinct_units < rule.min_units for s in samples.values()):
        return CheckResult(
            "labelled",
            waiting,
            f"waiting for labels: labelled {per_variant(counts)} on distinct units {per_variant(units)} "
            f"(need {rule.min_labelled} labelled rows and {rule.min_units} units per variant)",
            {"labelled": counts, "units": units},
        )
    errors = {k: s.errors() for k, s in samples.items()}
    mae = {k: e[0] for k, e in errors.items()}
    rmse = {k: e[1] for k, e in errors.items()}
    increased = surely_worse_errors(samples["champion"], samples["challenger"], rule.confidence)
    limits = {"mae": rule.max_mae_increase, "rmse": rule.max_rmse_increase}
    worse = beyond(increased, limits)
    text = (
        f"MAE challenger {mae['challenger']:.3f} vs champion {mae['champion']:.3f}, RMSE "
        f"{rmse['challenger']:.3f} vs {rmse['champion']:.3f} on labelled {per_variant(counts)} "
        f"(units {per_variant(units)})"
    )
    if worse:
        sure = ", ".join(
            f"{key.upper()} by >= {increased[key]:.1%} (allowed {limits[key]:.0%})" for key in worse
        )
        text = (
            f"{' and '.join(k.upper() for k in worse)} worse than allowed: {text}; "
            f"{rule.confidence:.1%} sure it increased {sure}"
        )
    return CheckResult(
        "labelled",
        "fail" if worse else "pass",
        text,
        {
            "mae": mae,
            "rmse": rmse,
            "increased_at_least": increased,
            "labelled": counts,
            "units": units,
        },
    )


def analyse(
    policy: CanaryPolicy,
    champion: VariantWindow,
    challenger: VariantWindow,
    labels: Mapping[str, float] | None = None,
    *,
    final: bool = True,
    labelled: tuple[VariantWindow, VariantWindow] | None = None,
    health: ServingHealth | None = None,
    task: str = "binary_classification",
    holdout_psi: float | None = None,
) -> CanaryVerdict:
    """Compare the challenger with the champion on one live window (``labels``: event id → label, 0/1 for a
    classifier (``task``), the true value for a regressor);
    ``final``: the last step before promotion (nothing may stay unjudged there but labelled quality);
    ``labelled``: the (champion, challenger) windows labelled quality is judged on, when wider than the
    step's (labels arrive late: the canary judges everything it has served so far); ``health``: what
    serving saw of the challenger (``check_health``): when it is broken, that is the verdict and the other
    checks, with nothing of it to measure, are not judged; ``holdout_psi``: the two versions' score shift on
    the gate's holdout (``holdout_score_shift``), which the live shift may exceed by ``max_psi``."""
    checked = check_health(policy, health) if health is not None else None
    if checked is not None and checked.status == "fail":
        skipped = tuple(
            CheckResult(name, "skipped", "not judged: the challenger is broken in serving (see health)")
            for name in ("errors", "latency", "score_shift", "labelled")
        )
        return CanaryVerdict(challenger.version, champion.version, (*skipped, checked))
    labelled_champion, labelled_challenger = labelled or (champion, challenger)
    checks = (
        check_errors(policy, champion, challenger),
        check_latency(policy, champion, challenger),
        check_score_shift(policy, champion, challenger, final, holdout_psi),
        check_labelled(policy, labelled_champion, labelled_challenger, labels, task),
    )
    return CanaryVerdict(challenger.version, champion.version, checks + ((checked,) if checked else ()))
