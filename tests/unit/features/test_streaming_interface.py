"""The platform's streaming machinery with a use case of its own (not fraud's): what a use case provides
(``StreamingFeatures``) is all the event windows need, and ``feature_definitions`` checks it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import pytest

from loopline.config.use_case import UseCaseError, load_use_case
from loopline.features.definitions import feature_definitions
from loopline.features.streaming import (
    H1,
    SCORING,
    US_PER_S,
    EventWindows,
    StreamingFeatures,
    StreamTable,
    Timeline,
    WindowCursor,
    count_in,
    count_out,
    cursor,
    epoch_us,
    table_key,
    text,
)
from loopline.features.tables import AggregateTable

SHOP_LOAD = AggregateTable(
    name="test_shop_load",
    keys=("shop_id",),
    features={
        "orders_1h": "int64",
        "value_1h": "float64",
        "couriers_1h": "int64",
        "first_order_s": "float64",
    },
)
BASE = 1_700_000_000 * US_PER_S


class Order(NamedTuple):
    order_id: str
    t_us: int
    shop_id: str | None
    courier_id: str | None
    value: float

    @property
    def event_id(self) -> str:
        return self.order_id


class Couriers(WindowCursor):
    __slots__ = ("seen",)
    windows = (H1,)

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[Any, int] = {}

    def add(self, window: int, event: Order) -> None:
        count_in(self.seen, event.courier_id)

    def remove(self, window: int, event: Order) -> None:
        count_out(self.seen, event.courier_id)


def shop_row(line: Timeline, end: int, newest: int, slot: int = SCORING) -> dict[str, Any]:
    couriers = cursor(line, slot, Couriers, end)
    start = couriers.starts[0]
    return {
        "orders_1h": end - start,
        "value_1h": line.window_total(0, start, end),
        "couriers_1h": len(couriers.seen),
    }


def order(row: Any) -> Order:
    return Order(
        str(row["order_id"]),
        epoch_us(row["ordered_at"]),
        text(row.get("shop_id")),
        text(row.get("courier_id")),
        float(row["value"]),
    )


STREAMING = StreamingFeatures(
    tables=(StreamTable(SHOP_LOAD, shop_row, H1, totals=(lambda e: e.value,), first_seen="first_order_s"),),
    history_us=H1,
    event=order,
    events=lambda frame: [order(r) for r in frame.to_dict("records")],
)


def test_a_use_cases_own_table_is_kept_with_the_offline_rules() -> None:
    windows = EventWindows(STREAMING)
    at = [BASE, BASE + 10 * 60 * US_PER_S, BASE + 10 * 60 * US_PER_S, BASE + 69 * 60 * US_PER_S]
    events = [Order(f"o{i}", t, "s1", f"c{i % 2}", 10.0 * (i + 1)) for i, t in enumerate(at)]
    assert windows.add([events[0], events[3], events[1]]) == [events[0], events[3], events[1]]  # one late
    assert windows.add([events[0]]) == [] and "o0" in windows and len(windows) == 3
    windows.add([events[2], Order("o_nobody", BASE, None, "c9", 1.0)])  # no shop: no row, as offline
    # Ties: the state at a time is after every event of that instant.
    newest, row = windows.state(SHOP_LOAD.name, ("s1",), at[1])
    assert newest == at[1] and row == {
        "orders_1h": 3,
        "value_1h": 60.0,
        "couriers_1h": 2,
        "first_order_s": BASE / US_PER_S,
    }
    assert windows.state(SHOP_LOAD.name, ("s1",), at[1] - 1)[1]["orders_1h"] == 1
    # Windows (newest - 1 h, newest]: the first order has left it, the two of minute 10 have not.
    assert windows.latest(SHOP_LOAD.name, [("s1",)])[("s1",)][1]["orders_1h"] == 3
    assert windows.touched(events) == {SHOP_LOAD.name: {("s1",)}}
    assert table_key(SHOP_LOAD.name, {"shop_id": 7}) == ("7",) and table_key(SHOP_LOAD.name, events[0]) == (
        "s1",
    )
    # Pruned events are forgotten, their entity's first event is remembered.
    assert windows.prune(at[1]) == 3
    newest, row = windows.state(SHOP_LOAD.name, ("s1",), at[3])
    assert (row["orders_1h"], row["first_order_s"]) == (1, BASE / US_PER_S)
    windows.remember_first_seen(SHOP_LOAD.name, {("s1",): BASE / US_PER_S - 5})
    windows.add([Order("o_next", at[3] + 1, "s1", "c1", 1.0)])
    assert windows.state(SHOP_LOAD.name, ("s1",), at[3] + 1)[1]["first_order_s"] == BASE / US_PER_S - 5


def test_streaming_features_that_do_not_fit_the_definitions_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fraud = load_use_case("fraud")
    definitions = feature_definitions(fraud)
    assert isinstance(definitions.streaming, StreamingFeatures)
    for wrong, message in (
        (True, "streaming is not a loopline.features.streaming.StreamingFeatures"),
        (STREAMING, r"streaming table\(s\) \['test_shop_load'\] are not among its features' tables"),
    ):
        monkeypatch.setattr(
            type(fraud), "load_features", lambda self, wrong=wrong: replace(definitions, streaming=wrong)
        )
        with pytest.raises(UseCaseError, match=message):
            feature_definitions(fraud)
