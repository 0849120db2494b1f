"""The SQLite prediction log's checkpoints: never inside a commit (the request path), always in the
background, so the WAL stays bounded and no data waits in it for long."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_testkit import wait_until

from loopline.serving import prediction_log
from loopline.serving.prediction_log import LoggedPrediction, PredictionLog


def predictions(n: int, prefix: str) -> list[LoggedPrediction]:
    """Rows of about a kilobyte, like the service's (the transaction plus ~30 features)."""
    features = {f"feature_{j}": j * 1.5 for j in range(30)}
    return [
        LoggedPrediction(
            request_id=f"{prefix}r{i}",
            ts=1_800_000_000.0 + i,
            transaction_id=f"{prefix}{i}",
            customer_id=f"c{i % 50}",
            inputs={"amount": 10.0 + i, "channel": "online"},
            features=features,
            score=0.25,
            decision=False,
            variant="champion",
            model_version="1",
            latency_ms=2.0,
        )
        for i in range(n)
    ]


def test_commits_never_checkpoint_and_a_background_thread_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prediction_log, "CHECKPOINT_INTERVAL_S", 0.2)
    db, wal = tmp_path / "predictions.db", tmp_path / "predictions.db-wal"
    log = PredictionLog(db)
    try:
        assert log._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        wait_until(lambda: wal.stat().st_size == 0 or db.stat().st_size > 0, what="the schema checkpointed")
        before = db.stat().st_size
        log._closed.set()  # pause the checkpointer: the commit alone must leave the database file as it was
        log._checkpointer.join(timeout=10)
        log.append(predictions(4000, "a"))
        first_wal = wal.stat().st_size
        assert first_wal > 2_000_000 and db.stat().st_size == before
        log._closed.clear()
        log._checkpointer = prediction_log.threading.Thread(target=log._checkpoint_loop, daemon=True)
        log._checkpointer.start()
        wait_until(lambda: db.stat().st_size > before + 2_000_000, timeout=10, what="a background checkpoint")
        log.append(predictions(4000, "b"))  # a fully checkpointed WAL is reused from its start
        assert wal.stat().st_size < 1.5 * first_wal
        assert log.count() == 8000
    finally:
        log.close()
    assert not log._checkpointer.is_alive()
    assert PredictionLog(db, read_only=True).count() == 8000
