"""When a step has baked: minimum requests per variant AND minimum time, or the maximum time; failed
requests count as traffic; the champion's reference reaches back to the canary's start at 100 %."""

from __future__ import annotations

import time
from pathlib import Path

from loopline.config import Settings
from loopline.deployment.canary import CanaryPlan, Phase, StepState, bake_progress
from loopline.deployment.policy import CanaryPolicy
from loopline.serving.prediction_log import LoggedPrediction, PredictionLog

UNREACHABLE = "http://127.0.0.1:9/metrics"  # discard port: nothing listens


def rows(n: int, ts: float, variant: str, version: str) -> list[LoggedPrediction]:
    return [
        LoggedPrediction(
            request_id=f"{variant}{i}",
            ts=ts,
            transaction_id=f"tx{i}",
            customer_id="c",
            inputs={},
            features={},
            score=0.1,
            decision=False,
            variant=variant,
            model_version=version,
            latency_ms=1.0,
        )
        for i in range(n)
    ]


def setup(tmp_path: Path, share: float = 0.5) -> tuple[Settings, PredictionLog, CanaryPlan, CanaryPolicy]:
    settings = Settings(state_dir=tmp_path)
    log = PredictionLog(settings.state.prediction_log)
    plan = CanaryPlan(
        "2", "1", (Phase(0.5, "live"), Phase(share, "live")), UNREACHABLE, started_at=time.time() - 100
    )
    policy = CanaryPolicy().with_overrides(bake_seconds=10, min_requests=20, max_bake_seconds=60)
    return settings, log, plan, policy


def test_needs_both_minimum_requests_and_minimum_time(tmp_path: Path) -> None:
    settings, log, plan, policy = setup(tmp_path)
    step = StepState(0, time.time(), None)
    log.append(
        rows(25, step.started_at + 1, "champion", "1") + rows(19, step.started_at + 1, "challenger", "2")
    )
    assert not bake_progress(settings, policy, plan, step, now=step.started_at + 30).done  # 19 < 20
    log.append(rows(1, step.started_at + 2, "challenger", "2"))
    assert not bake_progress(settings, policy, plan, step, now=step.started_at + 5).done  # too early
    progress = bake_progress(settings, policy, plan, step, now=step.started_at + 11)
    assert (
        progress.done and not progress.timed_out and progress.requests == {"champion": 25, "challenger": 20}
    )
    log.close()


def test_times_out_at_the_maximum_bake(tmp_path: Path) -> None:
    settings, log, plan, policy = setup(tmp_path)
    step = StepState(0, time.time(), None)
    progress = bake_progress(settings, policy, plan, step, now=step.started_at + 61)
    assert progress.done and progress.timed_out and progress.requests == {"champion": 0, "challenger": 0}
    log.close()


def test_at_full_traffic_the_champion_reference_is_the_whole_canary(tmp_path: Path) -> None:
    settings, log, plan, policy = setup(tmp_path, share=1.0)
    step = StepState(1, time.time(), None)
    log.append(rows(30, plan.started_at + 1, "champion", "1"))  # answered during step 1
    log.append(rows(20, step.started_at + 1, "challenger", "2"))  # step 2: the challenger answers everyone
    progress = bake_progress(settings, policy, plan, step, now=step.started_at + 11)
    assert progress.done and progress.requests == {"champion": 30, "challenger": 20}
    log.close()


def labelled_rows(
    n: int, ts: float, variant: str, version: str, fraud_every: int = 4
) -> list[LoggedPrediction]:
    return [
        LoggedPrediction(
            request_id=f"{variant}{i}",
            ts=ts,
            transaction_id=f"{variant}-tx{i}",
            customer_id=f"c{i}",
            inputs={},
            features={},
            score=0.9 if i % fraud_every == 0 else 0.1,
            decision=i % fraud_every == 0,
            variant=variant,
            model_version=version,
            latency_ms=1.0,
        )
        for i in range(n)
    ]


def test_required_labels_keep_the_bake_going_and_earlier_steps_labels_count(tmp_path: Path) -> None:
    import pandas as pd

    from loopline.data.ingest import publish

    settings, log, plan, _ = setup(tmp_path)
    policy = CanaryPolicy.model_validate(
        {
            **CanaryPolicy()
            .with_overrides(bake_seconds=10, min_requests=20, max_bake_seconds=60)
            .model_dump(),
            "analysis": {
                **CanaryPolicy().model_dump()["analysis"],
                "labelled": {"required": True, "min_labelled": 20, "min_positives": 5},
            },
        }
    )
    # Step 1's traffic, served before this step began: its labels may arrive while step 2 bakes.
    earlier = labelled_rows(30, plan.started_at + 1, "champion", "1") + labelled_rows(
        30, plan.started_at + 1, "challenger", "2"
    )
    step = StepState(1, time.time(), None)
    log.append(
        earlier
        + rows(25, step.started_at + 1, "champion", "1")
        + rows(25, step.started_at + 1, "challenger", "2")
    )
    waiting = bake_progress(settings, policy, plan, step, now=step.started_at + 11)
    assert not waiting.done and waiting.waiting_for.startswith("labels: waiting for labels")
    assert bake_progress(settings, policy, plan, step, now=step.started_at + 61).timed_out

    landed = pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=1)
    publish(
        settings,
        pd.DataFrame(
            {
                "transaction_id": [r.transaction_id for r in earlier],
                "is_fraud": [int(r.decision) for r in earlier],
                "label_timestamp": [landed] * len(earlier),
            }
        ),
        "labels",
        "late-labels",
    )
    progress = bake_progress(settings, policy, plan, step, now=step.started_at + 11)
    assert progress.done and not progress.timed_out and progress.waiting_for == ""
    log.close()
