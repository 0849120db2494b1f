"""The triggerer's watch on the landing zone: one event per settled file, on the local disk and on object
storage (where the triggerer shares no disk with whoever delivers the batch)."""

from __future__ import annotations

import asyncio

import pytest
from local_servers import s3_server

from loopline.config import get_settings
from loopline_airflow.triggers import LandingZoneTrigger


async def _first_events(trigger: LandingZoneTrigger, n: int) -> list[dict]:
    events = []
    async for event in trigger.run():
        events.append(event.payload)
        if len(events) == n:
            return events
    return events


def _deliver_and_watch(landing, names: list[str]) -> list[dict]:
    for name in names:
        target = landing / "transactions" / name
        if not hasattr(target, "protocol"):
            target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"not read by the trigger")
    (landing / "transactions" / ".hidden.parquet").write_bytes(b"x")  # never a batch
    trigger = LandingZoneTrigger(str(landing), poll_interval=0.05, settle_seconds=0)
    return asyncio.run(asyncio.wait_for(_first_events(trigger, len(names)), 20))


def test_a_settled_file_in_the_local_landing_zone_fires_once(state_dir):
    landing = get_settings().state.landing
    events = _deliver_and_watch(landing, ["a.parquet"])
    assert events == [
        {"path": str(landing / "transactions" / "a.parquet"), "kind": "transactions", "size": 23}
    ]


def test_the_landing_zone_on_object_storage_is_watched_through_the_s3_api(state_dir, monkeypatch):
    with s3_server("loopline") as endpoint:
        monkeypatch.setenv("LOOPLINE_STORAGE_URL", "s3://loopline/team")
        monkeypatch.setenv("LOOPLINE_STORAGE_ENDPOINT_URL", endpoint)
        landing = get_settings().state.landing
        assert str(landing) == "s3://loopline/team/data/landing"
        events = _deliver_and_watch(landing, ["a.parquet", "b.csv"])
    assert sorted(e["path"] for e in events) == [
        f"s3://loopline/team/data/landing/transactions/{n}" for n in ("a.parquet", "b.csv")
    ]
    assert {e["kind"] for e in events} == {"transactions"}


@pytest.mark.parametrize("url", ["gs://bucket", "s3://", "/local/path"])
def test_a_storage_url_that_is_not_s3_is_refused_with_what_to_use(url, monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("LOOPLINE_STORAGE_URL", url)
    with pytest.raises(ValidationError, match="use s3://<bucket>"):
        get_settings()
