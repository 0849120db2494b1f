"""Issue 19, item 5: prediction-log retention. Old rows go, in short batches, counted in metrics and logs —
but never a row a reader still needs: fresh features (the fraud use case's 60-day streaming history plus a
day; its 30-day window before the materialisation watermark), the drift window and concept lookback, a running
canary since its start."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fake_models import InstantSource
from security_kit import bare_client, bare_config, postgres_database

from loopline.config import Settings
from loopline.lineage import history
from loopline.serving.config import RetentionConfig
from loopline.serving.prediction_log import (
    DAY_S,
    LoggedPrediction,
    PostgresPredictionLog,
    PredictionLog,
    Retention,
    retention_needs,
)

NOW = time.time()
AGES = (70, 68, 66, 64, 20, 1, 0.01)  # days; fresh features keep 61


def _rows(ages, per_age: int = 50, now: float = NOW) -> list[LoggedPrediction]:
    return [
        LoggedPrediction(
            request_id=f"r{age}",
            ts=now - age * DAY_S + i * 0.001,
            transaction_id=f"tx_{age}_{i}",
            customer_id="c",
            inputs={"amount": 1.0},
            features={"f": 1.0},
            score=0.1,
            decision=False,
            variant="champion",
            model_version="1",
            latency_ms=1.0,
        )
        for age in ages
        for i in range(per_age)
    ]


def _ages_left(plog) -> list[float]:
    frame = plog.read()
    return sorted({round((NOW - ts.timestamp()) / DAY_S, 2) for ts in frame["ts"]}, reverse=True)


@pytest.fixture
def world(tmp_path):
    settings = Settings(state_dir=tmp_path / "state")
    settings.state.ensure()
    plog = PredictionLog(tmp_path / "p.db")
    plog.append(_rows(AGES))
    yield settings, plog
    plog.close()


def _retention(world, **config) -> Retention:
    settings, plog = world
    return Retention(plog, settings, RetentionConfig(**config), clock=lambda: NOW)


def test_rows_older_than_max_age_go_in_small_batches(world) -> None:
    settings, plog = world
    statements: list[str] = []
    plog._conn.set_trace_callback(statements.append)
    run = _retention(world, max_age_days=65, batch_rows=20, pause_s=0).run_once()
    plog._conn.set_trace_callback(None)
    assert (run.outcome, run.deleted, run.kept_for) == ("deleted", 150, "")
    assert _ages_left(plog) == [64, 20, 1, 0.01]
    deletes = [s for s in statements if s.startswith("DELETE")]
    assert len(deletes) == 8 and all("LIMIT 20" in s for s in deletes), "150 rows in batches of at most 20"
    assert "150 row(s)" in run.describe()
    again = _retention(world, max_age_days=65).run_once()
    assert (again.outcome, again.deleted) == ("nothing_to_delete", 0)


def test_the_floor_wins_over_a_short_max_age(world) -> None:
    settings, plog = world
    run = _retention(world, max_age_days=1).run_once()
    assert run.kept_for == "fresh_features", run
    assert run.cutoff == pytest.approx(NOW - 61 * DAY_S)
    assert _ages_left(plog) == [20, 1, 0.01], "the 61 days fresh features read back stay"


def test_needs_follow_the_drift_policy_and_the_label_delay(world) -> None:
    settings, _ = world
    needs = {n.what: (NOW - n.since) / DAY_S for n in retention_needs(settings, NOW, label_delay_days=21)}
    assert needs["drift_window"] == pytest.approx(1.0)  # drift.yaml: window.hours 24
    assert needs["concept_drift"] == pytest.approx(21 + 7)  # label delay + 7 judged windows of 24 h
    assert needs["fresh_features"] == pytest.approx(61)  # fraud's history_us (60 d) plus a day
    longer = {n.what: (NOW - n.since) / DAY_S for n in retention_needs(settings, NOW, label_delay_days=40)}
    assert longer["concept_drift"] == pytest.approx(47)


def test_the_fresh_features_floor_follows_the_use_cases_streaming_history(tmp_path) -> None:
    # Delivery's served rows depend on 48 h of orders (a 24 h window, read up to a 24 h TTL later).
    delivery = Settings(state_dir=tmp_path / "state", use_case="delivery")
    needs = {n.what: (NOW - n.since) / DAY_S for n in retention_needs(delivery, NOW, label_delay_days=2)}
    assert needs["fresh_features"] == pytest.approx(3)


def test_a_running_canary_keeps_everything_since_its_start(world) -> None:
    settings, plog = world
    history.record(settings, "canary_started", version="7", at=datetime.fromtimestamp(NOW - 80 * DAY_S, UTC))
    run = _retention(world, max_age_days=1).run_once()
    assert (run.outcome, run.deleted, run.kept_for) == ("nothing_to_delete", 0, "canary of version 7")
    assert len(_ages_left(plog)) == len(AGES)
    history.record(settings, "rolled_back", version="7", at=datetime.fromtimestamp(NOW - 79 * DAY_S, UTC))
    history.record(settings, "canary_started", version="8", at=datetime.fromtimestamp(NOW - 67 * DAY_S, UTC))
    run = _retention(world, max_age_days=1).run_once()
    assert run.kept_for == "canary of version 8" and _ages_left(plog) == [66, 64, 20, 1, 0.01]
    history.record(settings, "promoted", version="8")
    run = _retention(world, max_age_days=1).run_once()
    assert run.kept_for == "fresh_features" and _ages_left(plog) == [20, 1, 0.01]


def test_the_materialisation_watermark_and_a_recorded_concept_window_hold_rows_back(
    world, monkeypatch
) -> None:
    settings, plog = world
    from loopline.features import watermark

    monkeypatch.setattr(
        watermark, "materialized_until", lambda s: datetime.fromtimestamp(NOW - 39 * DAY_S, UTC)
    )
    run = _retention(world, max_age_days=1).run_once()
    assert run.kept_for == "materialisation" and _ages_left(plog) == [68, 66, 64, 20, 1, 0.01]
    monkeypatch.setattr(watermark, "materialized_until", lambda s: None)
    window = [
        datetime.fromtimestamp(NOW - 67 * DAY_S, UTC).isoformat(),
        datetime.fromtimestamp(NOW, UTC).isoformat(),
    ]
    history.record(settings, "drift_checked", version="1", concept_window=window)
    run = _retention(world, max_age_days=1).run_once()
    assert run.kept_for == "concept_drift (recorded window)" and _ages_left(plog) == [66, 64, 20, 1, 0.01]


def test_max_rows_deletes_the_oldest_beyond_it_but_not_below_the_floor(tmp_path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    plog = PredictionLog(tmp_path / "p.db")
    plog.append(_rows((64, 63, 62), per_age=500))
    run = Retention(
        plog, settings, RetentionConfig(max_age_days=65, max_rows=1000), clock=lambda: NOW
    ).run_once()
    assert run.deleted == 500 and _ages_left(plog) == [63, 62]
    young = PredictionLog(tmp_path / "young.db")
    young.append(_rows((10, 5, 1), per_age=500))
    run = Retention(young, settings, RetentionConfig(max_rows=1000), clock=lambda: NOW).run_once()
    assert (run.deleted, run.kept_for) == (0, "fresh_features") and young.count() == 1500
    plog.close()
    young.close()


def test_when_needs_cannot_be_told_nothing_is_deleted(tmp_path, monkeypatch) -> None:
    from loopline.platform.processes import free_port

    broken = tmp_path / "drift.yaml"  # the use case's drift policy, broken
    broken.write_text("window: {hours: -1}\n")
    real_policy_file = Settings.policy_file
    monkeypatch.setattr(
        Settings,
        "policy_file",
        lambda self, kind: broken if self.state_dir == tmp_path / "s1" else real_policy_file(self, kind),
    )
    plog = PredictionLog(tmp_path / "p.db")
    plog.append(_rows((90,)))
    for settings, why in (
        (Settings(state_dir=tmp_path / "s1"), "drift policy"),
        (
            Settings(state_dir=tmp_path / "s2", history_url=f"postgresql://x@127.0.0.1:{free_port()}/none"),
            "history",
        ),
    ):
        run = Retention(plog, settings, RetentionConfig(max_age_days=1), clock=lambda: NOW).run_once()
        assert run.outcome == "skipped" and why in run.reason and run.deleted == 0
    assert plog.count() == 50
    plog.close()


def test_inserts_go_on_while_retention_deletes(tmp_path) -> None:
    """No long lock on the hot insert path: appends keep committing quickly during a large delete."""
    settings = Settings(state_dir=tmp_path / "state")
    plog = PredictionLog(tmp_path / "p.db")
    for _ in range(10):
        plog.append(_rows((90,), per_age=2000))
    retention = Retention(
        plog, settings, RetentionConfig(max_age_days=65, batch_rows=500, pause_s=0.002), clock=lambda: NOW
    )
    done: list = []
    worker = threading.Thread(target=lambda: done.append(retention.run_once()))
    worker.start()
    waits = []
    while worker.is_alive():
        started = time.monotonic()
        plog.append(_rows((0.001,), per_age=1))
        waits.append(time.monotonic() - started)
        time.sleep(0.002)
    worker.join()
    assert done[0].deleted == 20_000
    assert len(waits) > 5 and max(waits) < 0.5, (len(waits), max(waits))
    plog.close()


def test_the_app_runs_retention_and_reports_it_in_metrics(tmp_path) -> None:
    settings = Settings(state_dir=tmp_path)
    old = PredictionLog(settings.state.prediction_log)
    old.append(_rows((90,), per_age=100, now=time.time()) + _rows((2,), per_age=10, now=time.time()))
    old.close()
    config = bare_config()
    config = config.model_copy(
        update={
            "log": config.log.model_copy(
                update={"retention": RetentionConfig(start_delay_s=0.05, interval_s=3600)}
            )
        }
    )
    with bare_client(tmp_path, config, source_factory=InstantSource) as client:
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            text = client.get("/metrics").text
            if 'loopline_prediction_log_retention_runs_total{outcome="deleted"} 1.0' in text:
                break
            time.sleep(0.05)
        assert "loopline_prediction_log_retention_deleted_total 100.0" in text, text[-2000:]
        assert "loopline_prediction_log_retention_floor_timestamp_seconds" in text
    assert PredictionLog(settings.state.prediction_log, read_only=True).count() == 10


# --- Postgres: replicas take turns ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_database("retention") as url:
        yield url


def test_postgres_retention_deletes_in_batches_one_replica_at_a_time(tmp_path, pg_url) -> None:
    import psycopg

    settings = Settings(state_dir=tmp_path / "state")
    plog = PostgresPredictionLog(pg_url, timeout_s=2.0)
    plog.append(_rows(AGES))
    retention = Retention(plog, settings, RetentionConfig(max_age_days=65, batch_rows=40), clock=lambda: NOW)
    with psycopg.connect(pg_url, autocommit=True) as other_replica:
        other_replica.execute("SELECT pg_advisory_lock(7246003)")
        busy = retention.run_once()
        assert busy.outcome == "skipped" and "another replica" in busy.reason
        assert plog.count() == 50 * len(AGES)
        with contextlib.suppress(Exception):
            other_replica.execute("SELECT pg_advisory_unlock(7246003)")
    run = retention.run_once()
    assert (run.outcome, run.deleted) == ("deleted", 150)
    assert _ages_left(plog) == [64, 20, 1, 0.01]
    plog.close()
