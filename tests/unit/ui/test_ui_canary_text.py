"""The canary's decisions read as sentences on the "Model loop" page: the reasons and details the canary
records (``deployment.canary`` / ``analysis`` / ``actions``, from real verdicts) render without a Python
dict or list repr anywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_ui_event_runs_recorded import FakeRegistry

from loopline.config import Settings
from loopline.deployment import actions, canary
from loopline.deployment.analysis import VariantWindow, analyse, check_labelled, check_score_shift
from loopline.deployment.policy import CanaryPolicy
from loopline.deployment.windows import ErrorSource
from loopline.gating import gate
from loopline.lineage import history
from loopline_airflow.ui.render import PageLinks, details_lines, render_page

REPO_ROOT = Path(__file__).resolve().parents[3]
REPRS = ("{'", "['", "{&#x27;", "[&#x27;", '{"', '["')


def _window(version: str, n: int, *, units: int, errors: int = 0, shift: float = 0.0) -> VariantWindow:
    rng = np.random.default_rng(int(version))
    scores = np.clip(rng.beta(1, 20, n) + shift, 0, 1)
    return VariantWindow(
        version=version,
        scores=tuple(float(s) for s in scores),
        latencies_ms=tuple(float(v) for v in rng.uniform(2, 4, n)),
        event_ids=tuple(f"{version}-{i}" for i in range(n)),
        decisions=tuple(bool(s > 0.5) for s in scores),
        errors=errors,
        units=units,
        unit_ids=tuple(f"c{i % units}" for i in range(n)),
    )


def _labels(window: VariantWindow, every: int, fraud_every: int) -> dict[str, int]:
    ids = window.event_ids
    return {tx: int(i % fraud_every == 0) for i, tx in enumerate(ids) if i % every == 0}


def test_canary_check_reasons_say_per_variant_counts_in_words():
    policy = CanaryPolicy()
    champion, challenger = _window("4", 400, units=12), _window("7", 400, units=8)
    few = check_score_shift(policy, champion, challenger, final=True)
    assert few.status == "insufficient"
    assert few.reason == "distinct units champion 12, challenger 8, fewer than the 30 needed"
    waiting = check_labelled(
        policy, champion, challenger, {**_labels(champion, 4, 10), **_labels(challenger, 8, 10)}
    )
    assert waiting.reason.startswith(
        "waiting for labels: labelled champion 100, challenger 50; positives champion"
    )
    judged = check_labelled(
        policy, champion, challenger, {**_labels(champion, 1, 15), **_labels(challenger, 1, 15)}
    )
    assert judged.status in (
        "pass",
        "fail",
    ) and "on labelled champion 400, challenger 400 (positives: champion 27 on" in (judged.reason)
    for reason in (few.reason, waiting.reason, judged.reason):
        assert not any(r in reason for r in REPRS), reason


@pytest.fixture
def canary_history(tmp_path, clean_loopline_env, monkeypatch) -> list[dict]:
    """A canary recorded by its own producers: started, two steps, one rolled back on a real verdict (too
    few customers and labels, a surge of errors), one promoted after a passing one, then a production
    rollback and a first model promoted without a canary."""
    settings = Settings(state_dir=tmp_path / "state", project_dir=REPO_ROOT)
    policy = CanaryPolicy()
    errors = ErrorSource(prometheus_url="http://prometheus.example:9090")
    fake = FakeRegistry({"champion": "4", "challenger": "7"})
    monkeypatch.setattr(actions, "client_for", lambda s: fake)
    # No tracking server behind the fake: the versions have no gate holdout to read (canary.begin asks).
    monkeypatch.setattr(gate, "read_holdout_scores", lambda uri, model, version: None)
    start = canary.begin(settings, policy, "7", errors_from=errors, reason="gate passed (drift: 6 of 10)")
    assert start.plan is not None
    plan = start.plan
    champion = _window("4", 400, units=40)
    good = analyse(policy, champion, _window("7", 400, units=40), _labels(champion, 1, 15), final=False)
    step = canary.begin_step(settings, plan, 0)
    assert canary.conclude(settings, plan, good, step) == "next"
    canary.begin_step(settings, plan, 1, previous_verdict=good.why)
    actions.promote(settings, "7", canary.promote_reason(plan, "alice (HITL)"), verdict=good.to_dict())

    fake.aliases.update(challenger="8", champion="7")
    start = canary.begin(settings, policy, "8", errors_from=errors, reason="manual run")
    assert start.plan is not None
    bad_champion = _window("7", 400, units=12)
    bad = analyse(
        policy,
        bad_champion,
        _window("8", 400, units=8, errors=40, shift=0.3),
        _labels(bad_champion, 8, 10),
        final=True,
    )
    assert not bad.passed
    step = canary.begin_step(settings, start.plan, 0)
    assert canary.conclude(settings, start.plan, bad, step, timed_out=True) == "rolled_back"

    fake.aliases.update(previous_champion="4")
    actions.rollback_production(settings, "errors up since the promotion")
    fake.aliases.clear()
    fake.aliases["challenger"] = "9"
    canary.begin(settings, policy, "9", errors_from=errors)
    return [e.to_dict() for e in history.read(settings)]


def test_no_rendered_canary_event_shows_a_python_repr(canary_history):
    kinds = {e["kind"] for e in canary_history}
    assert kinds == {"canary_started", "traffic_shifted", "promoted", "rolled_back"}
    state = {"model_name": "fraud_detector", "champion": {"version": "4"}, "history": canary_history}
    html = render_page(state, PageLinks(mlflow_url="http://mlflow.example:5000"))
    for marker in REPRS:
        assert marker not in html, (marker, html[max(html.find(marker) - 200, 0) : html.find(marker) + 200])
    for event in canary_history:
        cells = [event["reason"], *(text for _, text in details_lines(event))]
        assert not any(r in cell for cell in cells for r in REPRS), event
    rolled_back = next(e for e in canary_history if e["kind"] == "rolled_back" and e["version"] == "8")
    assert (
        "errors: challenger" in rolled_back["reason"]
        and "distinct units champion 12" in rolled_back["reason"]
    )
    assert "verdict" not in dict(details_lines(rolled_back)), "the verdict's sentence is the reason already"
    promoted = next(e for e in canary_history if e["kind"] == "promoted" and e["version"] == "7")
    assert dict(details_lines(promoted))["verdict"].startswith("all checks passed: errors: challenger 0.00%")
