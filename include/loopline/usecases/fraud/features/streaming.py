"""Fraud's fresh features at scoring time: its four tables as the platform's event windows keep them
(``loopline.features.streaming``), with exactly the offline rules of ``aggregates``.

A transaction is a :class:`StreamEvent`; per table, the running totals and window cursors its features need and
how its row is read from them. A missing merchant or card counts as one value of its own in distinct counts, a
missing country as foreign, a missing channel as not online; ``dev_first_seen_epoch_s`` covers all history
(the platform remembers an entity's first-seen time when its events are pruned). ``STREAMING`` is what
``FeatureDefinitions.streaming`` names; a test pins its states to the offline tables on simulated worlds.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from loopline.features import streaming
from loopline.features.streaming import (
    D1,
    D7,
    D30,
    FIXED_BITS,
    H1,
    LATEST,
    SCORING,
    US_PER_S,
    State,
    StreamingFeatures,
    StreamTable,
    Timeline,
    WindowCursor,
    count_in,
    count_out,
    cursor,
    epoch_us,
    fixed,
    frame_texts,
    frame_times_us,
    population_std,
    table_key,
    text,
)
from loopline.usecases.fraud.features.aggregates import HOME_COUNTRY, ONLINE
from loopline.usecases.fraud.features.tables import (
    CUSTOMER_CHANNEL,
    CUSTOMER_DEVICE,
    CUSTOMER_VELOCITY,
    MERCHANT_STATS,
    TABLES,
)

if TYPE_CHECKING:
    import pandas as pd

# A customer's row is read up to its view's TTL (30 d, feature_repo/fraud/features.py) after their newest
# transaction and counts the 30 days before it: a served row may depend on events 60 days old.
HISTORY_US = D30 + D30
TABLES_BY_NAME = {table.name: table for table in TABLES}


class StreamEvent(NamedTuple):
    """The fields of one transaction that the aggregates read."""

    transaction_id: str
    t_us: int  # event time, µs since the epoch
    amount: float
    customer_id: str | None
    merchant_id: str | None
    card_id: str | None
    device_id: str | None
    channel: str | None
    merchant_country: str | None

    @property
    def event_id(self) -> str:
        return self.transaction_id


def event_from_transaction(tx: Mapping[str, Any]) -> StreamEvent:
    """A request's (or a curated row's) transaction as an event."""
    return StreamEvent(
        transaction_id=str(tx["transaction_id"]),
        t_us=epoch_us(tx["event_timestamp"]),
        amount=float(tx["amount"]),
        customer_id=text(tx.get("customer_id")),
        merchant_id=text(tx.get("merchant_id")),
        card_id=text(tx.get("card_id")),
        device_id=text(tx.get("device_id")),
        channel=text(tx.get("channel")),
        merchant_country=text(tx.get("merchant_country")),
    )


def events_from_frame(frame: pd.DataFrame) -> list[StreamEvent]:
    """Curated transactions (the contract's columns) as events, vectorised."""
    if not len(frame):
        return []
    return [
        StreamEvent(*fields)
        for fields in zip(
            frame["transaction_id"].astype(str).tolist(),
            frame_times_us(frame, "event_timestamp"),
            frame["amount"].astype(float).tolist(),
            frame_texts(frame, "customer_id"),
            frame_texts(frame, "merchant_id"),
            frame_texts(frame, "card_id"),
            frame_texts(frame, "device_id"),
            frame_texts(frame, "channel"),
            frame_texts(frame, "merchant_country"),
            strict=True,
        )
    ]


# Field getters for the window scans (map with these runs in C; a comprehension runs bytecode per event).
_AMOUNT, _MERCHANT, _CARD = (operator.attrgetter(name) for name in ("amount", "merchant_id", "card_id"))
# The running totals of a customer's timeline, by position: amounts, online and foreign (abroad) events.
AMOUNT, ONLINE_COUNT, FOREIGN_COUNT = 0, 1, 2
_CUSTOMER_TOTALS = (
    _AMOUNT,
    lambda event: event.channel == ONLINE,
    lambda event: event.merchant_country != HOME_COUNTRY,
)


class _CustomerCursor(WindowCursor):
    """Distinct merchants in 24 h and 7 d, the 7 d maximum amount, exact sums of the 30 d amounts."""

    __slots__ = ("inexact", "max_7d", "merchants_24h", "merchants_7d", "squares_30d", "sum_30d")
    windows = (D1, D7, D30)

    def __init__(self) -> None:
        super().__init__()
        self.merchants_24h: dict[str | None, int] = {}
        self.merchants_7d: dict[str | None, int] = {}
        self.max_7d: float | None = None  # None: to be found again (the maximum left the window)
        self.sum_30d = self.squares_30d = 0  # of the amounts as exact (fixed) integers
        self.inexact = 0  # amounts in the 30 d window that ``fixed`` cannot hold exactly

    def add(self, window: int, event: StreamEvent) -> None:
        if window == 0:
            count_in(self.merchants_24h, event.merchant_id)
        elif window == 1:
            count_in(self.merchants_7d, event.merchant_id)
            if self.max_7d is not None and not event.amount <= self.max_7d:
                self.max_7d = event.amount
        else:
            exact = fixed(event.amount)
            if exact is None:
                self.inexact += 1
            else:
                self.sum_30d += exact
                self.squares_30d += exact * exact

    def remove(self, window: int, event: StreamEvent) -> None:
        if window == 0:
            count_out(self.merchants_24h, event.merchant_id)
        elif window == 1:
            count_out(self.merchants_7d, event.merchant_id)
            if self.max_7d is not None and not event.amount < self.max_7d:
                self.max_7d = None
        else:
            exact = fixed(event.amount)
            if exact is None:
                self.inexact -= 1
            else:
                self.sum_30d -= exact
                self.squares_30d -= exact * exact

    def std_30d(self, line: Timeline) -> float:
        """Population std of the 30 d amounts: exact (then rounded once), so 0.0 for one distinct amount."""
        start, end = self.starts[2], self.end
        if self.inexact:
            return population_std(list(map(_AMOUNT, line.events[start:end])))
        n = end - start
        return math.sqrt((n * self.squares_30d - self.sum_30d * self.sum_30d) / ((n * n) << (2 * FIXED_BITS)))

    def maximum_7d(self, line: Timeline) -> float:
        if self.max_7d is None:
            self.max_7d = max(map(_AMOUNT, line.events[self.starts[1] : self.end]))
        return self.max_7d


class _MerchantCursor(WindowCursor):
    """Distinct cards in 24 h."""

    __slots__ = ("cards_24h",)
    windows = (D1,)

    def __init__(self) -> None:
        super().__init__()
        self.cards_24h: dict[str | None, int] = {}

    def add(self, window: int, event: StreamEvent) -> None:
        count_in(self.cards_24h, event.card_id)

    def remove(self, window: int, event: StreamEvent) -> None:
        count_out(self.cards_24h, event.card_id)


def _customer_velocity(line: Timeline, end: int, newest: int, slot: int = SCORING) -> dict[str, Any]:
    windows = cursor(line, slot, _CustomerCursor, end)
    s24, s7, s30 = windows.starts
    s1 = line.start(newest, H1)
    n30, n7, n24 = end - s30, end - s7, end - s24
    sums, online, foreign = line.prefixes
    sum24 = sums[end] - sums[s24]
    return {
        "cust_tx_count_1h": end - s1,
        "cust_tx_count_24h": n24,
        "cust_tx_count_7d": n7,
        "cust_tx_count_30d": n30,
        "cust_amount_sum_24h": sum24,
        "cust_amount_mean_24h": sum24 / n24,
        "cust_amount_mean_7d": (sums[end] - sums[s7]) / n7,
        "cust_amount_mean_30d": (sums[end] - sums[s30]) / n30,
        "cust_amount_std_30d": windows.std_30d(line),
        "cust_amount_max_7d": windows.maximum_7d(line),
        "cust_distinct_merchants_24h": len(windows.merchants_24h),
        "cust_distinct_merchants_7d": len(windows.merchants_7d),
        "cust_online_share_30d": (online[end] - online[s30]) / n30,
        "cust_foreign_share_30d": (foreign[end] - foreign[s30]) / n30,
        "cust_last_tx_epoch_s": newest / US_PER_S,
    }


def _merchant_stats(line: Timeline, end: int, newest: int, slot: int = SCORING) -> dict[str, Any]:
    windows = cursor(line, slot, _MerchantCursor, end)
    s24, s7 = windows.starts[0], line.start(newest, D7)
    return {
        "merch_tx_count_24h": end - s24,
        "merch_tx_count_7d": end - s7,
        "merch_amount_mean_7d": line.window_total(AMOUNT, s7, end) / (end - s7),
        "merch_distinct_cards_24h": len(windows.cards_24h),
    }


def _count_30d(line: Timeline, end: int, newest: int) -> int:
    return end - line.start(newest, D30)


STREAMING = StreamingFeatures(
    tables=(
        StreamTable(
            CUSTOMER_VELOCITY, _customer_velocity, D30, totals=_CUSTOMER_TOTALS
        ),  # every transaction's
        StreamTable(MERCHANT_STATS, _merchant_stats, D7, totals=(_AMOUNT,)),
        StreamTable(
            CUSTOMER_DEVICE,
            lambda line, end, newest, slot: {"dev_tx_count_30d": _count_30d(line, end, newest)},
            D30,
            first_seen="dev_first_seen_epoch_s",
        ),
        StreamTable(
            CUSTOMER_CHANNEL,
            lambda line, end, newest, slot: {"chan_tx_count_30d": _count_30d(line, end, newest)},
            D30,
        ),
    ),
    history_us=HISTORY_US,
    event=event_from_transaction,
    events=events_from_frame,
)


class EventWindows(streaming.EventWindows):
    """The platform's event windows over fraud's four tables."""

    def __init__(self) -> None:
        super().__init__(STREAMING)


__all__ = [
    "D1",
    "D7",
    "D30",
    "H1",
    "HISTORY_US",
    "LATEST",
    "SCORING",
    "STREAMING",
    "TABLES_BY_NAME",
    "EventWindows",
    "State",
    "StreamEvent",
    "epoch_us",
    "event_from_transaction",
    "events_from_frame",
    "table_key",
]
