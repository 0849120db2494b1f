"""``EventWindows`` keeps each entity's window aggregates up to date event by event (its cursors); these
tests pin what it answers, whatever the order of events and questions, to a plain scan of the events."""

from __future__ import annotations

import math
import random

import pytest

from loopline.usecases.fraud.features.streaming import D1, D7, D30, H1, EventWindows, StreamEvent, table_key
from loopline.usecases.fraud.features.tables import CUSTOMER_VELOCITY, MERCHANT_STATS

BASE_US = 1_700_000_000_000_000
SPAN_US = 40 * D1


def scanned(events: list[StreamEvent], table: str, key: tuple[str, ...], at_us: int) -> dict | None:
    """The row of ``key`` as of ``at_us`` by the definition: windows (newest - w, newest] over a scan."""
    mine = sorted((e for e in events if table_key(table, e) == key and e.t_us <= at_us), key=lambda e: e.t_us)
    if not mine:
        return None
    newest = mine[-1].t_us

    def window(length: int) -> list[StreamEvent]:
        return [e for e in mine if e.t_us > newest - length]

    if table == MERCHANT_STATS.name:
        day, week = window(D1), window(D7)
        return {
            "merch_tx_count_24h": len(day),
            "merch_tx_count_7d": len(week),
            "merch_amount_mean_7d": sum(e.amount for e in week) / len(week),
            "merch_distinct_cards_24h": len({e.card_id for e in day}),
        }
    hour, day, week, month = window(H1), window(D1), window(D7), window(D30)
    amounts = [e.amount for e in month]
    mean = sum(amounts) / len(amounts)
    return {
        "cust_tx_count_1h": len(hour),
        "cust_tx_count_24h": len(day),
        "cust_tx_count_7d": len(week),
        "cust_tx_count_30d": len(month),
        "cust_amount_sum_24h": sum(e.amount for e in day),
        "cust_amount_mean_7d": sum(e.amount for e in week) / len(week),
        "cust_amount_mean_30d": mean,
        "cust_amount_std_30d": math.sqrt(sum((a - mean) ** 2 for a in amounts) / len(amounts)),
        "cust_amount_max_7d": max(e.amount for e in week),
        "cust_distinct_merchants_24h": len({e.merchant_id for e in day}),
        "cust_distinct_merchants_7d": len({e.merchant_id for e in week}),
        "cust_online_share_30d": sum(e.channel == "online" for e in month) / len(month),
        "cust_last_tx_epoch_s": newest / 1e6,
    }


def assert_row(got, expected, where: str) -> None:
    assert (got is None) == (expected is None), where
    if expected is not None:
        for feature, value in expected.items():
            assert math.isclose(got[1][feature], value, rel_tol=1e-9, abs_tol=1e-9), (where, feature)


@pytest.mark.parametrize("seed", range(6))
def test_states_equal_a_scan_whatever_the_order_of_events_and_questions(seed):
    """Events arrive out of order (late ones land inside windows a cursor already holds), states are asked
    for at any time (cursors move back and forth), the online writer asks for the newest states with cursors
    of its own, and old events are pruned: every answer equals the scan."""
    rng = random.Random(seed)
    windows, events = EventWindows(), []
    # Amounts with exact binary fractions, decimal ones, repeated ones and one too fine for the exact sums.
    amounts = [1.0, 2.5, 10.0, 12.34, 99.99, 1e-7]
    cutoff = BASE_US + 5 * D1
    for i in range(400):
        event = StreamEvent(
            f"tx_{i}",
            BASE_US + rng.randrange(SPAN_US // 1000) * 1000,
            rng.choice([*amounts, rng.uniform(0.01, 500.0)]),
            rng.choice(["c1", "c2"]),
            rng.choice(["m1", "m2", "m3", None]),
            rng.choice(["k1", "k2", "k3", None]),
            "d1",
            rng.choice(["online", "pos"]),
            "DE",
        )
        windows.add([event])
        events.append(event)
        for _ in range(2):
            at = BASE_US + rng.randrange(SPAN_US)
            for table, key in ((CUSTOMER_VELOCITY.name, ("c1",)), (MERCHANT_STATS.name, ("m1",))):
                assert_row(windows.state(table, key, at), scanned(events, table, key, at), f"{table} at {at}")
        newest = max((e.t_us for e in events if e.customer_id == "c2"), default=None)
        if newest is not None:
            assert_row(
                windows.latest(CUSTOMER_VELOCITY.name, [("c2",)])[("c2",)],
                scanned(events, CUSTOMER_VELOCITY.name, ("c2",), newest),
                "latest",
            )
        if i == 200:
            windows.prune(cutoff)
            events = [e for e in events if e.t_us > cutoff]


def test_a_window_of_one_repeated_amount_has_a_std_of_exactly_zero():
    windows = EventWindows()
    windows.add(
        [
            StreamEvent(f"tx_{i}", BASE_US + i, 0.1, "c1", "m1", "k1", "d1", "online", "DE")
            for i in range(1000)
        ]
    )
    for at in (BASE_US, BASE_US + 500, BASE_US + 999):
        assert windows.state(CUSTOMER_VELOCITY.name, ("c1",), at)[1]["cust_amount_std_30d"] == 0.0


def test_the_30_day_std_stays_exact_while_events_stream_through_the_window():
    """Large amounts with a small spread, thousands of events entering and leaving: sums of floats would
    drift; the cursor's sums are exact."""
    windows, events = EventWindows(), []
    step = D30 // 400
    for i in range(3000):
        event = StreamEvent(
            f"tx_{i}", BASE_US + i * step, 1e6 + (i % 7) * 0.01, "c1", "m1", "k1", "d1", "pos", "DE"
        )
        windows.add([event])
        events.append(event)
        if i % 97 == 0:
            got = windows.state(CUSTOMER_VELOCITY.name, ("c1",), event.t_us)[1]["cust_amount_std_30d"]
            window = [e.amount - 1e6 for e in events if e.t_us > event.t_us - D30]
            mean = sum(window) / len(window)
            assert got == pytest.approx(
                math.sqrt(sum((a - mean) ** 2 for a in window) / len(window)), rel=1e-9
            )
