"""``loopline traffic``'s two replays: re-stamped (a load test: every event at the moment it is sent) and
``recorded`` (the newest day at its recorded times, shuffled so any stretch spans the day's hours), checked
on a simulated delivery city's curated orders and against a real HTTP server that keeps what it was sent."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from loopline.config import Settings
from loopline.config.use_case import load_use_case
from loopline.data.ingest import publish
from loopline.serving.request import contract
from loopline.serving.traffic import load_events, replay
from loopline.usecases.delivery.simulator import DeliveryConfig, simulate

DELIVERY = load_use_case("delivery")
TIME = DELIVERY.time_column


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Settings:
    settings = Settings(use_case=DELIVERY.name, state_dir=tmp_path_factory.mktemp("city") / "state")
    settings.state.ensure()
    days = simulate(DeliveryConfig(seed=4, start=date(2026, 3, 2), days=3))
    publish(settings, pd.concat([d.orders for d in days], ignore_index=True), DELIVERY.batch_kinds[0], "sim")
    return settings


def test_a_load_test_replay_sends_the_newest_events_without_their_times(city) -> None:
    rows = load_events(city, limit=500)
    assert len(rows) == 500 and all(TIME not in row for row in rows)


def test_a_recorded_replay_is_the_newest_day_at_its_own_times_in_an_order_that_spans_it(city) -> None:
    rows = load_events(city, recorded=True)
    stamps = pd.to_datetime([row[TIME] for row in rows], utc=True)
    assert stamps.max() - stamps.min() < timedelta(hours=24)
    assert stamps.max().date() == date(2026, 3, 4)  # the city's last day
    assert len({row[DELIVERY.id_column] for row in rows}) == len(rows)
    first_fifth = stamps[: len(rows) // 5]
    assert first_fifth.hour.nunique() >= 12, "any stretch of the replay spans the day's hours"
    assert not stamps.is_monotonic_increasing


class _Keeper(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Keeper.bodies.append(body)
        answer = json.dumps({"predictions": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("recorded", [False, True])
def test_replay_stamps_events_now_unless_they_carry_their_recorded_time(city, recorded: bool) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Keeper)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Keeper.bodies = []
    try:
        rows = load_events(city, limit=50, recorded=recorded)
        sent_at = datetime.now(UTC)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        report = asyncio.run(
            replay(url, rows, rps=50, duration_s=0.2, batch=2, use_case=DELIVERY, headers={})
        )
    finally:
        server.shutdown()
    assert report.sent == report.ok == 10
    events = [e for body in _Keeper.bodies for e in body[contract(DELIVERY).list_key]]
    stamps = pd.to_datetime([e[TIME] for e in events], utc=True)
    if recorded:
        by_id = {row[DELIVERY.id_column]: row[TIME] for row in rows}
        assert all(e[TIME] == by_id[e[DELIVERY.id_column]] for e in events)
        assert stamps.max() < pd.Timestamp(sent_at) - pd.Timedelta(days=30)
    else:
        assert stamps.min() >= pd.Timestamp(sent_at) - pd.Timedelta(seconds=1)
