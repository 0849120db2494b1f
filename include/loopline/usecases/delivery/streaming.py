"""Delivery's fresh features at scoring time: ``restaurant_load`` and ``zone_load`` kept by the platform's
event windows (``loopline.features.streaming``), with exactly the offline definitions of ``features``.

An order is a :class:`StreamEvent` (its id, time and the two keys). Every feature is a count of the entity's
orders in ``(t - w, t]`` after its newest order at or before ``t``: the index after that order minus the index
of the first order inside the window, so no running total or window cursor is needed. ``STREAMING`` is what
``FeatureDefinitions.streaming`` names; a test pins the served rows to the offline point-in-time ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from loopline.features.streaming import (
    RowBuilder,
    StreamingFeatures,
    StreamTable,
    Timeline,
    epoch_us,
    frame_texts,
    frame_times_us,
    text,
)
from loopline.features.tables import AggregateTable
from loopline.usecases.delivery import USE_CASE

if TYPE_CHECKING:
    import pandas as pd


class StreamEvent(NamedTuple):
    """The fields of one order that the counts read: its id, its time and the keys of both tables."""

    order_id: str
    t_us: int  # ordered_at, µs since the epoch
    restaurant_id: str | None
    pickup_zone: str | None

    @property
    def event_id(self) -> str:
        return self.order_id


KEYS = StreamEvent._fields[2:]  # the key columns of both tables, as an order's fields name them


def event_from_order(order: Mapping[str, Any]) -> StreamEvent:
    """A request's (or a logged prediction's) order as an event."""
    keys = (text(order.get(column)) for column in KEYS)
    return StreamEvent(str(order[USE_CASE.id_column]), epoch_us(order[USE_CASE.time_column]), *keys)


def events_from_frame(frame: pd.DataFrame) -> list[StreamEvent]:
    """Curated orders as events, vectorised."""
    ids = frame[USE_CASE.id_column].astype(str).tolist()
    keys = (frame_texts(frame, column) for column in KEYS)
    return list(map(StreamEvent, ids, frame_times_us(frame, USE_CASE.time_column), *keys))


def counts(windows: Mapping[str, int]) -> RowBuilder:
    """A row builder of count features (feature -> window in µs): the entity's orders in
    ``(newest - w, newest]``, where ``end`` is the index after its newest order."""

    def row(line: Timeline, end: int, newest: int, slot: int) -> dict[str, Any]:
        return {name: end - line.start(newest, window) for name, window in windows.items()}

    return row


def count_stream_table(table: AggregateTable, windows: Mapping[str, int]) -> StreamTable:
    """``table`` kept fresh, when each of its features is a count over the window ``windows`` gives it."""
    if set(windows) != set(table.features):
        raise ValueError(f"{table.name}: windows for {sorted(windows)}, features {sorted(table.features)}")
    return StreamTable(table, counts(windows), window_us=max(windows.values()))


def streaming_features(
    tables: tuple[AggregateTable, ...], windows: Mapping[str, Mapping[str, int]], history_us: int
) -> StreamingFeatures:
    """Delivery's tables (the first holds every order: each has a restaurant) as streaming features."""
    return StreamingFeatures(
        tables=tuple(count_stream_table(table, windows[table.name]) for table in tables),
        history_us=history_us,
        event=event_from_order,
        events=events_from_frame,
    )
