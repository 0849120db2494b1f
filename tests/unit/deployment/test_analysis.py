"""analyse(): each check's semantics, minimum sample sizes included (too little traffic never promotes)."""

from __future__ import annotations

import numpy as np
import pytest

from loopline.deployment.analysis import VariantWindow, analyse, average_precision, psi
from loopline.deployment.policy import CanaryPolicy

POLICY = CanaryPolicy().with_overrides(min_requests=100)


def window(version: str, n: int = 400, *, errors: int | None = 0, latency_ms: float = 4.0, shift: float = 0.0,
           seed: int = 0, prefix: str = "tx") -> VariantWindow:
    rng = np.random.default_rng(seed)
    scores = np.clip(rng.beta(1, 12, n) + shift, 0, 1)
    latencies = rng.gamma(4.0, latency_ms / 4.0, n)
    return VariantWindow(version=version, scores=tuple(scores.tolist()), latencies_ms=tuple(latencies.tolist()),
                         transaction_ids=tuple(f"{prefix}{i}" for i in range(n)),
                         decisions=tuple(bool(s >= 0.5) for s in scores), errors=errors)


def statuses(verdict) -> dict[str, str]:
    return {c.name: c.status for c in verdict.checks}


def test_an_equivalent_challenger_passes_and_labels_pending_do_not_block() -> None:
    verdict = analyse(POLICY, window("1", seed=1), window("2", seed=2))
    assert verdict.passed, verdict.why
    assert statuses(verdict) == {"errors": "pass", "latency": "pass", "score_shift": "pass", "labelled": "skipped"}


@pytest.mark.parametrize("n", [0, 1, 99])
def test_too_little_traffic_never_promotes(n: int) -> None:
    verdict = analyse(POLICY, window("1"), window("2", n=n))
    assert not verdict.passed and verdict.not_enough_traffic
    assert {statuses(verdict)[c] for c in ("errors", "latency", "score_shift")} == {"insufficient"}
    assert verdict.why.startswith("not enough traffic")


def test_the_champion_needs_its_minimum_sample_too() -> None:
    verdict = analyse(POLICY, window("1", n=50), window("2"))
    assert not verdict.passed and statuses(verdict)["latency"] == "insufficient"


def test_error_rate_above_the_limit_fails_and_failures_count_as_traffic() -> None:
    # 60 answered + 60 failed = 120 >= 100 requests: judged (a broken model is not "too little traffic").
    verdict = analyse(POLICY, window("1"), window("2", n=60, errors=60))
    assert statuses(verdict)["errors"] == "fail" and not verdict.not_enough_traffic
    assert "50.00%" in verdict.why


def test_error_rate_is_relative_to_a_bad_champion() -> None:
    bad_champion = window("1", n=900, errors=100)  # 10 %
    assert statuses(analyse(POLICY, bad_champion, window("2", n=900, errors=100)))["errors"] == "pass"
    assert statuses(analyse(POLICY, bad_champion, window("2", n=900, errors=130)))["errors"] == "fail"


def test_unreadable_error_counts_block_promotion() -> None:
    verdict = analyse(POLICY, window("1"), window("2", errors=None))
    assert statuses(verdict)["errors"] == "insufficient" and not verdict.passed
    assert "metrics" in verdict.why


def test_a_slow_challenger_fails_latency() -> None:
    verdict = analyse(POLICY, window("1", latency_ms=4), window("2", latency_ms=40))
    assert statuses(verdict)["latency"] == "fail"
    # Within ratio x champion + slack: passes (noise at a few milliseconds is not a regression).
    assert statuses(analyse(POLICY, window("1", latency_ms=4), window("2", latency_ms=5)))["latency"] == "pass"


def test_absolute_p95_ceiling_applies_even_when_the_champion_is_slow() -> None:
    verdict = analyse(POLICY, window("1", latency_ms=60), window("2", latency_ms=60, seed=3))
    assert statuses(verdict)["latency"] == "fail"


def test_a_shifted_score_distribution_fails() -> None:
    verdict = analyse(POLICY, window("1", seed=1), window("2", seed=2, shift=0.3))
    assert statuses(verdict)["score_shift"] == "fail"
    assert next(c for c in verdict.checks if c.name == "score_shift").values["psi"] > POLICY.analysis.score_shift.max_psi


def test_psi_is_zero_for_the_same_sample_and_grows_with_shift() -> None:
    base = np.random.default_rng(0).beta(1, 12, 2000)
    assert psi(base, base) == pytest.approx(0.0, abs=1e-9)
    assert psi(base, base + 0.05) < psi(base, base + 0.2)
    constant = np.zeros(500)  # collapsed quantiles: falls back to equal-width bins
    assert psi(constant, constant) == pytest.approx(0.0, abs=1e-9)
    assert psi(constant, constant + 0.9) > 1


def labels_for(w: VariantWindow, rng: np.random.Generator, informative: bool) -> dict[str, int]:
    """Ground truth: fraud mostly where the score is high (informative) or at random."""
    out = {}
    for tx, s in zip(w.transaction_ids, w.scores, strict=True):
        p = min(1.0, s * 3) if informative else 0.15
        out[tx] = int(rng.random() < p)
    return out


def test_labelled_quality_fails_a_worse_challenger_once_labels_arrive() -> None:
    rng = np.random.default_rng(5)
    champion, challenger = window("1", seed=1, prefix="a"), window("2", seed=2, prefix="b")
    # The challenger's scores carry no information about its labels; the champion's do.
    labels = {**labels_for(champion, rng, True), **labels_for(challenger, rng, False)}
    verdict = analyse(POLICY, champion, challenger, labels)
    assert statuses(verdict)["labelled"] == "fail" and "PR-AUC" in verdict.why
    good = {**labels_for(champion, rng, True), **labels_for(challenger, rng, True)}
    assert statuses(analyse(POLICY, champion, challenger, good))["labelled"] == "pass"


def test_few_labels_wait_unless_labels_are_required() -> None:
    champion, challenger = window("1", prefix="a"), window("2", prefix="b")
    few = {"a1": 1, "b1": 1}
    assert statuses(analyse(POLICY, champion, challenger, few))["labelled"] == "skipped"
    strict = CanaryPolicy.model_validate({**POLICY.model_dump(), "analysis": {
        **POLICY.analysis.model_dump(), "labelled": {**POLICY.analysis.labelled.model_dump(), "required": True}}})
    verdict = analyse(strict, champion, challenger, few)
    assert statuses(verdict)["labelled"] == "insufficient" and not verdict.passed


def test_average_precision_matches_known_values() -> None:
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision([0, 1], [0.9, 0.1]) == pytest.approx(0.5)
    assert np.isnan(average_precision([0, 0], [0.2, 0.1]))


def test_verdict_serialises_with_every_check() -> None:
    data = analyse(POLICY, window("1"), window("2", n=10)).to_dict()
    assert data["passed"] is False and [c["name"] for c in data["checks"]] == [
        "errors", "latency", "score_shift", "labelled"]


def test_score_shift_is_not_judged_on_a_handful_of_sticky_customers() -> None:
    few = window("2", seed=2, shift=0.3)
    few = VariantWindow(**{**few.__dict__, "customers": 5})
    verdict = analyse(POLICY, window("1", seed=1), few, final=False)
    assert statuses(verdict)["score_shift"] == "skipped" and "customers" in verdict.why and verdict.passed
    # Never promoted unjudged: at the last step too few customers block.
    final = analyse(POLICY, window("1", seed=1), few, final=True)
    assert statuses(final)["score_shift"] == "insufficient" and not final.passed
    assert statuses(analyse(POLICY, window("1", seed=1), VariantWindow(**{**few.__dict__, "customers": 300})))[
        "score_shift"] == "fail"


def test_repeated_transactions_count_once_towards_the_labelled_sample() -> None:
    champion, challenger = window("1", n=400, prefix="a"), window("2", n=400, prefix="b")  # the same scores
    truth = labels_for(champion, np.random.default_rng(5), True)
    labels = {**truth, **{f"b{tx[1:]}": y for tx, y in truth.items()}}
    assert statuses(analyse(POLICY, champion, challenger, labels))["labelled"] == "pass"
    # The same 50 transactions scored 8 times each: 400 rows but only 50 labelled transactions.
    repeated = VariantWindow(**{**challenger.__dict__, "transaction_ids": challenger.transaction_ids[:50] * 8})
    assert statuses(analyse(POLICY, champion, repeated, labels))["labelled"] == "skipped"
