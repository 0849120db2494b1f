"""Fresh features at scoring time: the aggregate state after every transaction, kept per entity.

The offline tables (``features.aggregates``) hold, for every transaction, the state *after* it; a
training row joins at its transaction's time minus 1 µs. Batch materialisation alone would leave the
online store up to a day behind that: the transactions scored today are only ingested tonight. So the
request is also an event. :class:`EventWindows` keeps the last 30 days of events of every entity of
the four aggregate tables (customer, merchant, customer+device, customer+channel) and computes the
state after any of them with exactly the offline rules:

* windows ``(t - w, t]`` end at the entity's newest event at or before the time asked for;
* ties: the state at ``t`` is after *all* events at ``t`` (a transaction at ``T`` reads the state at
  ``T - 1 µs``, so it never sees itself nor another transaction of the same instant);
* a missing merchant or card counts as one value of its own in distinct counts, a missing country as
  foreign, a missing channel as not online; ``dev_first_seen_epoch_s`` covers all history (events
  older than the window are remembered as first-seen times when pruned).

``features.aggregates`` computes the same numbers vectorised for millions of rows; this module computes
them for a handful of entities per request in microseconds. A test pins both to the same values on
simulated worlds, and ``loopline features check-served`` checks them on live traffic.

Who uses it: the prediction service (``serving.engine``) adds each scored transaction (and the other
replicas' ones, read from the shared prediction log) before scoring the next batch, overlays the fresh
state on the online store's rows when the store has not caught up yet, and writes the new state of
every entity it touched through Feast's online store interface (:class:`OnlineStateWriter`).
Materialisation (``features.materialize.materialize``) writes the state after each entity's newest known
event, curated or served, through the same writer: it corrects the store (late or unscored
transactions) and never rolls it back, because the writer keeps a stored row unless the new one is at
least as new.
"""

from __future__ import annotations

import bisect
import math
import operator
import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from loopline.features.tables import (
    CUSTOMER_CHANNEL,
    CUSTOMER_DEVICE,
    CUSTOMER_VELOCITY,
    MERCHANT_STATS,
    TABLES,
)

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

US_PER_S = 1_000_000
HOUR_US = 3_600 * US_PER_S
DAY_US = 24 * HOUR_US
H1, D1, D7, D30 = HOUR_US, DAY_US, 7 * DAY_US, 30 * DAY_US
HISTORY_US = D30  # the longest window
HOME_COUNTRY = "DE"
ONLINE = "online"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TABLES_BY_NAME = {table.name: table for table in TABLES}

State = tuple[int, dict[str, Any]]  # (time of the entity's newest event in µs, feature -> value)


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


def epoch_us(value: Any) -> int:
    """A timestamp (datetime, ISO text, pandas Timestamp; naive = UTC) in µs since the epoch."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    micros: int = (value - _EPOCH) // timedelta(microseconds=1)
    return micros


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        import pandas as pd

        if value is pd.NA:
            return None
    except ImportError:  # pragma: no cover - pandas is always installed with Loopline
        pass
    return str(value)


def event_from_transaction(tx: dict[str, Any]) -> StreamEvent:
    """A request's (or a curated row's) transaction as an event."""
    return StreamEvent(
        transaction_id=str(tx["transaction_id"]),
        t_us=epoch_us(tx["event_timestamp"]),
        amount=float(tx["amount"]),
        customer_id=_text(tx.get("customer_id")),
        merchant_id=_text(tx.get("merchant_id")),
        card_id=_text(tx.get("card_id")),
        device_id=_text(tx.get("device_id")),
        channel=_text(tx.get("channel")),
        merchant_country=_text(tx.get("merchant_country")),
    )


def events_from_frame(frame: pd.DataFrame) -> list[StreamEvent]:
    """Curated transactions (the contract's columns) as events, vectorised."""
    import numpy as np
    import pandas as pd

    if not len(frame):
        return []
    stamps = pd.to_datetime(frame["event_timestamp"], utc=True).dt.tz_localize(None)
    t_us = stamps.to_numpy().astype("datetime64[us]").astype(np.int64).tolist()

    def texts(column: str) -> list[str | None]:
        if column not in frame.columns:
            return [None] * len(frame)
        values = frame[column].astype(object)
        return [
            None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)
            for v in values.tolist()
        ]

    return [
        StreamEvent(*fields)
        for fields in zip(
            frame["transaction_id"].astype(str).tolist(),
            t_us,
            frame["amount"].astype(float).tolist(),
            texts("customer_id"),
            texts("merchant_id"),
            texts("card_id"),
            texts("device_id"),
            texts("channel"),
            texts("merchant_country"),
            strict=True,
        )
    ]


# --- one entity's events and the state after them ---------------------------------------------------


class _Timeline:
    """One entity's events, oldest first (appends are O(1); a late event is inserted in place)."""

    __slots__ = ("cursors", "events", "foreign", "memo", "online", "sums", "times", "version")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.events: list[StreamEvent] = []
        self.sums: list[float] = [0.0]  # sums[i] = total amount of events[:i]: a window's sum in O(1)
        self.online: list[int] = [0]  # online[i] = online events among events[:i]; foreign: abroad, alike
        self.foreign: list[int] = [0]
        self.version = 0  # bumped when events move (a late insert, a prune): memoised states are then stale
        self.memo: tuple[int, int, dict[str, Any]] | None = (
            None  # (end, version, row) of the last state built
        )
        # The window aggregates that prefix sums cannot give, kept up to date event by event (_Cursor): one per
        # caller (SCORING, LATEST), so the scoring thread and the online writer never move each other's.
        self.cursors: list[_Cursor | None] = [None, None]

    def add(self, event: StreamEvent) -> None:
        if not self.times or event.t_us >= self.times[-1]:
            self.times.append(event.t_us)
            self.events.append(event)
            self.sums.append(self.sums[-1] + event.amount)
            self.online.append(self.online[-1] + (event.channel == ONLINE))
            self.foreign.append(self.foreign[-1] + (event.merchant_country != HOME_COUNTRY))
        else:
            at = bisect.bisect_right(self.times, event.t_us)
            self.times.insert(at, event.t_us)
            self.events.insert(at, event)
            self.resum(at)
            self.version += 1
            for cursor in self.cursors:
                if cursor is not None:
                    cursor.inserted(self, at, event)

    def resum(self, start: int = 0) -> None:
        """Rebuild the prefix sums and counts from event ``start`` on (after a late insert or a prune)."""
        for prefix in (self.sums, self.online, self.foreign):
            del prefix[start + 1 :]
        total, online, foreign = self.sums[start], self.online[start], self.foreign[start]
        for event in self.events[start:]:
            total += event.amount
            online += event.channel == ONLINE
            foreign += event.merchant_country != HOME_COUNTRY
            self.sums.append(total)
            self.online.append(online)
            self.foreign.append(foreign)

    def window_sum(self, start: int, end: int) -> float:
        return self.sums[end] - self.sums[start]

    def end(self, t_us: int) -> int:
        """Index after the last event at or before ``t_us``."""
        return bisect.bisect_right(self.times, t_us)

    def start(self, newest_us: int, window_us: int) -> int:
        """Index of the first event inside ``(newest - window, newest]``."""
        return bisect.bisect_right(self.times, newest_us - window_us)


# Field getters for the window scans (map with these runs in C; a comprehension runs bytecode per event).
_AMOUNT, _MERCHANT, _CARD = (operator.attrgetter(name) for name in ("amount", "merchant_id", "card_id"))
SCORING, LATEST = 0, 1  # cursor slots: the scoring path's lookups, the online writer's newest states

# Amounts as integers in units of 2^-64: sums of them and of their squares are exact (Python integers), so a
# window's variance is computed exactly however many events came and went. Every amount of at least 2^-11
# (0.0005) is such an integer; a smaller one with more digits makes its window fall back to the scan.
_FIXED_BITS = 64
_FIXED_ONE = 1 << _FIXED_BITS


def _fixed(amount: float) -> int | None:
    """``amount`` in units of 2^-64 when that is exact, else None."""
    if not math.isfinite(amount):
        return None
    numerator, denominator = amount.as_integer_ratio()
    if denominator > _FIXED_ONE:
        return None
    return numerator * (_FIXED_ONE // denominator)


def _population_std(amounts: list[float]) -> float:
    """As offline: population std, exactly 0.0 when the window holds one distinct amount."""
    if len(set(amounts)) <= 1:
        return 0.0
    mean = sum(amounts) / len(amounts)
    return math.sqrt(max(sum((a - mean) ** 2 for a in amounts) / len(amounts), 0.0))


def _count_in(counts: dict[Any, int], value: Any) -> None:
    counts[value] = counts.get(value, 0) + 1


def _count_out(counts: dict[Any, int], value: Any) -> None:
    left = counts[value] - 1
    if left:
        counts[value] = left
    else:
        del counts[value]


class _Cursor:
    """One entity's window aggregates that prefix sums cannot give (distinct values, a maximum, exact sums of
    squares), for the windows ``(newest - w, newest]`` that end at event ``end``.

    Moving it to another ``end`` adds and removes only the events that enter or leave a window, so a state
    costs O(events since the last state asked for) instead of O(events in its windows): a busy entity's
    windows hold thousands of events, and each request asks for the state just before its own event. A late
    event inserted before ``end`` is folded in by ``inserted``. The windows follow the offline rules exactly
    (a test pins cursors moved in every direction to a scan of the events)."""

    __slots__ = ("end", "starts")
    windows: tuple[int, ...] = ()

    def __init__(self) -> None:
        self.end = 0
        self.starts = [0] * len(self.windows)

    def add(self, window: int, event: StreamEvent) -> None:
        raise NotImplementedError

    def remove(self, window: int, event: StreamEvent) -> None:
        raise NotImplementedError

    def move(self, line: _Timeline, end: int) -> None:
        """To the windows that end at event ``end`` (exclusive) of ``line``."""
        events, times, starts = line.events, line.times, self.starts
        if end < self.end:  # back: the events after ``end`` leave every window that holds them
            for i in range(end, self.end):
                for w, start in enumerate(starts):
                    if start <= i:
                        self.remove(w, events[i])
            for w, start in enumerate(starts):
                starts[w] = min(start, end)
        else:  # on: every starting index is at or before the old end, so each new event enters every window
            for i in range(self.end, end):
                for w in range(len(starts)):
                    self.add(w, events[i])
        self.end = end
        if not end:
            return
        newest = times[end - 1]
        for w, length in enumerate(self.windows):
            start, edge = starts[w], newest - length
            while (
                start and times[start - 1] > edge
            ):  # the newest event went back: older ones are inside again
                start -= 1
                self.add(w, events[start])
            while times[start] <= edge:  # it went on: the oldest ones fell out
                self.remove(w, events[start])
                start += 1
            starts[w] = start

    def inserted(self, line: _Timeline, at: int, event: StreamEvent) -> None:
        """``event`` was inserted at index ``at`` of ``line`` (a late event)."""
        if at >= self.end:  # after the windows' end: it enters them when the cursor moves past it
            return
        self.end += 1  # the newest event of the windows is the same one, one index on
        newest = line.times[self.end - 1]
        for w, length in enumerate(self.windows):
            # Before ``starts[w]`` only events at or before the window's edge: at the start itself it may be
            # either side of the edge.
            if at >= self.starts[w] and event.t_us > newest - length:
                self.add(w, event)
            else:
                self.starts[w] += 1


class _CustomerCursor(_Cursor):
    """Distinct merchants in 24 h and 7 d, the 7 d maximum amount, exact sums of the 30 d amounts."""

    __slots__ = ("inexact", "max_7d", "merchants_24h", "merchants_7d", "sum_30d", "squares_30d")
    windows = (D1, D7, D30)

    def __init__(self) -> None:
        super().__init__()
        self.merchants_24h: dict[str | None, int] = {}
        self.merchants_7d: dict[str | None, int] = {}
        self.max_7d: float | None = None  # None: to be found again (the maximum left the window)
        self.sum_30d = self.squares_30d = 0  # of the amounts as _fixed integers
        self.inexact = 0  # amounts in the 30 d window that _fixed cannot hold exactly

    def add(self, window: int, event: StreamEvent) -> None:
        if window == 0:
            _count_in(self.merchants_24h, event.merchant_id)
        elif window == 1:
            _count_in(self.merchants_7d, event.merchant_id)
            if self.max_7d is not None and not event.amount <= self.max_7d:
                self.max_7d = event.amount
        else:
            fixed = _fixed(event.amount)
            if fixed is None:
                self.inexact += 1
            else:
                self.sum_30d += fixed
                self.squares_30d += fixed * fixed

    def remove(self, window: int, event: StreamEvent) -> None:
        if window == 0:
            _count_out(self.merchants_24h, event.merchant_id)
        elif window == 1:
            _count_out(self.merchants_7d, event.merchant_id)
            if self.max_7d is not None and not event.amount < self.max_7d:
                self.max_7d = None
        else:
            fixed = _fixed(event.amount)
            if fixed is None:
                self.inexact -= 1
            else:
                self.sum_30d -= fixed
                self.squares_30d -= fixed * fixed

    def std_30d(self, line: _Timeline) -> float:
        """Population std of the 30 d amounts: exact (then rounded once), so 0.0 for one distinct amount."""
        start, end = self.starts[2], self.end
        if self.inexact:
            return _population_std(list(map(_AMOUNT, line.events[start:end])))
        n = end - start
        return math.sqrt(
            (n * self.squares_30d - self.sum_30d * self.sum_30d) / ((n * n) << (2 * _FIXED_BITS))
        )

    def maximum_7d(self, line: _Timeline) -> float:
        if self.max_7d is None:
            self.max_7d = max(map(_AMOUNT, line.events[self.starts[1] : self.end]))
        return self.max_7d


class _MerchantCursor(_Cursor):
    """Distinct cards in 24 h."""

    __slots__ = ("cards_24h",)
    windows = (D1,)

    def __init__(self) -> None:
        super().__init__()
        self.cards_24h: dict[str | None, int] = {}

    def add(self, window: int, event: StreamEvent) -> None:
        _count_in(self.cards_24h, event.card_id)

    def remove(self, window: int, event: StreamEvent) -> None:
        _count_out(self.cards_24h, event.card_id)


def _cursor(line: _Timeline, slot: int, kind: type[_Cursor], end: int) -> Any:
    cursor = line.cursors[slot]
    if cursor is None:
        cursor = line.cursors[slot] = kind()
    cursor.move(line, end)
    return cursor


def _customer_velocity(line: _Timeline, end: int, newest: int, slot: int = SCORING) -> dict[str, Any]:
    cursor: _CustomerCursor = _cursor(line, slot, _CustomerCursor, end)
    s24, s7, s30 = cursor.starts
    s1 = line.start(newest, H1)
    n30, n7, n24 = end - s30, end - s7, end - s24
    sum24 = line.window_sum(s24, end)
    return {
        "cust_tx_count_1h": end - s1,
        "cust_tx_count_24h": n24,
        "cust_tx_count_7d": n7,
        "cust_tx_count_30d": n30,
        "cust_amount_sum_24h": sum24,
        "cust_amount_mean_24h": sum24 / n24,
        "cust_amount_mean_7d": line.window_sum(s7, end) / n7,
        "cust_amount_mean_30d": line.window_sum(s30, end) / n30,
        "cust_amount_std_30d": cursor.std_30d(line),
        "cust_amount_max_7d": cursor.maximum_7d(line),
        "cust_distinct_merchants_24h": len(cursor.merchants_24h),
        "cust_distinct_merchants_7d": len(cursor.merchants_7d),
        "cust_online_share_30d": (line.online[end] - line.online[s30]) / n30,
        "cust_foreign_share_30d": (line.foreign[end] - line.foreign[s30]) / n30,
        "cust_last_tx_epoch_s": newest / US_PER_S,
    }


def _merchant_stats(line: _Timeline, end: int, newest: int, slot: int = SCORING) -> dict[str, Any]:
    cursor: _MerchantCursor = _cursor(line, slot, _MerchantCursor, end)
    s24, s7 = cursor.starts[0], line.start(newest, D7)
    return {
        "merch_tx_count_24h": end - s24,
        "merch_tx_count_7d": end - s7,
        "merch_amount_mean_7d": line.window_sum(s7, end) / (end - s7),
        "merch_distinct_cards_24h": len(cursor.cards_24h),
    }


def _count_30d(line: _Timeline, end: int, newest: int) -> int:
    return end - line.start(newest, D30)


_ROW_BUILDERS: dict[str, Callable[[_Timeline, int, int, int], dict[str, Any]]] = {
    CUSTOMER_VELOCITY.name: _customer_velocity,
    MERCHANT_STATS.name: _merchant_stats,
    CUSTOMER_DEVICE.name: lambda line, end, newest, slot: {"dev_tx_count_30d": _count_30d(line, end, newest)},
    CUSTOMER_CHANNEL.name: lambda line, end, newest, slot: {
        "chan_tx_count_30d": _count_30d(line, end, newest)
    },
}
TABLE_KEYS: dict[str, tuple[str, ...]] = {table.name: table.keys for table in TABLES}


_KEY_POSITIONS = {
    name: tuple(StreamEvent._fields.index(column) for column in keys) for name, keys in TABLE_KEYS.items()
}


def table_key(table: str, event: StreamEvent | dict[str, Any]) -> tuple[str, ...] | None:
    """The entity key of ``event`` in ``table``; None when a key column is missing (no row, as offline)."""
    if isinstance(event, StreamEvent):
        key: tuple[Any, ...] = tuple(event[i] for i in _KEY_POSITIONS[table])  # the key columns are str
        return None if None in key else key
    values = tuple(event.get(column) for column in TABLE_KEYS[table])
    return None if None in values else tuple(str(value) for value in values)


class EventWindows:
    """The last 30 days of events per entity of every aggregate table, and the state after them.

    Not thread-safe: one thread at a time adds events and computes states. In serving that is the scoring
    thread; the online writer's ``latest`` runs under ``FreshFeatures``' lock (which ``add`` and ``prune`` also
    hold) and moves window cursors of its own, so it may run while the scoring thread calls ``state``.
    """

    def __init__(self, device_first_seen: dict[tuple[str, str], float] | None = None) -> None:
        self._lines: dict[str, dict[tuple[str, ...], _Timeline]] = {table.name: {} for table in TABLES}
        self._ids: set[str] = set()
        # (customer_id, device_id) -> first use in seconds, for uses older than the events kept.
        self._first_seen: dict[tuple[str, ...], float] = {k: v for k, v in (device_first_seen or {}).items()}
        self.newest_us = 0

    def remember_first_seen(self, first_seen: dict[tuple[str, str], float]) -> None:
        """Earlier first uses of (customer, device) pairs than the events kept (e.g. older partitions)."""
        for key, seconds in first_seen.items():
            known = self._first_seen.get(key)
            self._first_seen[key] = seconds if known is None else min(known, seconds)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, transaction_id: str) -> bool:
        return transaction_id in self._ids

    def add(
        self,
        events: Iterable[StreamEvent],
        touched: set[tuple[str, tuple[str, ...]]] | None = None,
    ) -> list[StreamEvent]:
        """Add events not seen before (by transaction id); returns the new ones. ``touched``: gets the
        (table, key) of every entity they belong to (what ``touched()`` would say, without a second pass)."""
        added = []
        for event in events:
            if event.transaction_id in self._ids:
                continue
            self._ids.add(event.transaction_id)
            added.append(event)
            self.newest_us = max(self.newest_us, event.t_us)
            for table, lines in self._lines.items():
                key = table_key(table, event)
                if key is not None:
                    line = lines.get(key)
                    if line is None:
                        line = lines[key] = _Timeline()
                    line.add(event)
                    if touched is not None:
                        touched.add((table, key))
        return added

    def events_since(self, t_us: int) -> list[StreamEvent]:
        """The events kept at or after ``t_us`` (each once)."""
        return [
            event
            for line in self._lines[CUSTOMER_VELOCITY.name].values()
            for event in line.events[bisect.bisect_left(line.times, t_us) :]
        ]

    def newest_before(self, table: str, key: tuple[str, ...], t_us: int) -> int | None:
        """Time of the entity's newest event strictly before ``t_us`` (None: none kept)."""
        line = self._lines[table].get(key)
        if line is None:
            return None
        end = bisect.bisect_left(line.times, t_us)
        return line.times[end - 1] if end else None

    def state(self, table: str, key: tuple[str, ...], at_us: int) -> State | None:
        """The table's row for ``key`` as of ``at_us``: the state after the entity's newest event at or
        before it (windows end at that event), or None when no event of it is kept."""
        return self._state(table, key, at_us, SCORING)

    def _state(self, table: str, key: tuple[str, ...], at_us: int, slot: int) -> State | None:
        line = self._lines[table].get(key)
        if line is None:
            return None
        end = line.end(at_us)
        if not end:
            return None
        newest = line.times[end - 1]
        if line.memo is not None and line.memo[0] == end and line.memo[1] == line.version:
            return newest, line.memo[2]  # appends after ``newest`` do not change it; shared: do not mutate
        row = _ROW_BUILDERS[table](line, end, newest, slot)
        if table == CUSTOMER_DEVICE.name:
            first = line.times[0] / US_PER_S
            known = self._first_seen.get(key)
            row["dev_first_seen_epoch_s"] = first if known is None or known > first else known
        line.memo = (end, line.version, row)
        return newest, row

    def latest(self, table: str, keys: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], State]:
        """The state after each key's newest event (with cursors of its own: the online writer calls it from
        its thread, under ``FreshFeatures``' lock, while the scoring thread computes states)."""
        lines = self._lines[table]
        out: dict[tuple[str, ...], State] = {}
        for key in keys:
            line = lines.get(key)
            if line is not None and line.times:
                state = self._state(table, key, line.times[-1], LATEST)
                assert state is not None  # the line has an event at that time
                out[key] = state
        return out

    def touched(self, events: Iterable[StreamEvent]) -> dict[str, set[tuple[str, ...]]]:
        """Per table, the keys these events belong to."""
        out: dict[str, set[tuple[str, ...]]] = {table: set() for table in self._lines}
        for event in events:
            for table, keys in out.items():
                key = table_key(table, event)
                if key is not None:
                    keys.add(key)
        return out

    def prune(self, before_us: int) -> int:
        """Forget events at or before ``before_us`` (remembering device first-seen times); returns how many.
        Keep at least 30 days behind the newest state anyone will ask for."""
        dropped = 0
        for table, lines in self._lines.items():
            for key in list(lines):
                line = lines[key]
                cut = bisect.bisect_right(line.times, before_us)
                if not cut:
                    continue
                if table == CUSTOMER_DEVICE.name:
                    first = line.times[0] / US_PER_S
                    known = self._first_seen.get(key)
                    self._first_seen[key] = first if known is None else min(known, first)
                if table == CUSTOMER_VELOCITY.name:
                    for event in line.events[:cut]:
                        self._ids.discard(event.transaction_id)
                        dropped += 1
                del line.times[:cut]
                del line.events[:cut]
                line.resum()  # every prefix (sums, online and foreign counts) from the first event kept
                line.version += 1
                line.cursors = [None, None]  # their indices point into the events before the cut
                if not line.times:
                    del lines[key]
        return dropped


def device_first_seen_map(frame: pd.DataFrame) -> dict[tuple[str, str], float]:
    """``curated.device_first_seen`` output as a dict."""
    return {
        (str(c), str(d)): float(s)
        for c, d, s in zip(
            frame["customer_id"].astype(str),
            frame["device_id"].astype(str),
            frame["dev_first_seen_epoch_s"],
            strict=True,
        )
    }


# --- writing states to the online store ---------------------------------------------------------------

# SQLite: the online store never goes back in time. An update with an older event time than the stored
# row is ignored by the store itself, whoever writes (Feast's materialize, a replica, a late batch).
_SQLITE_GUARD = """
CREATE TRIGGER IF NOT EXISTS "{trigger}" BEFORE UPDATE ON "{table}"
WHEN NEW.event_ts < OLD.event_ts
BEGIN SELECT RAISE(IGNORE); END;
"""

# Redis: the same rule as one atomic script per entity row, whoever wrote the stored row: its time is
# Feast's own ``_ts:<view>`` field (a protobuf Timestamp: field 1 seconds, field 2 nanos, varints), decoded
# here. Feast's own Redis writer skips a row whose time is not newer, so a corrected state at the same
# instant (a late transaction) would never land; this one writes when the new row is at least as new.
# KEYS[1] = the entity's hash; ARGV[1] = the ``_ts`` field, ARGV[2] = the new row's time in µs,
# ARGV[3..] = field, value pairs in Feast's layout (the ``_ts`` field among them).
_REDIS_CAS = """
local function micros(raw)
  local seconds, nanos, i = 0, 0, 1
  while i <= #raw do
    local tag = string.byte(raw, i)
    i = i + 1
    local value, scale, byte = 0, 1, 128
    while byte >= 128 do
      byte = string.byte(raw, i)
      i = i + 1
      value = value + (byte % 128) * scale
      scale = scale * 128
    end
    if tag == 8 then seconds = value elseif tag == 16 then nanos = value end
  end
  return seconds * 1000000 + math.floor(nanos / 1000)
end
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored and micros(stored) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
"""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


_DOUBLE_TAG, _INT64_TAG = b"\x29", b"\x20"  # Feast's ValueProto: double_val = field 5 (64-bit), int64_val = 4


def encode_value(value: Any, dtype: str) -> tuple[bytes, str]:
    """A feature value as Feast stores it: the serialised ``ValueProto`` (``int64_val`` or ``double_val``) and its
    text. Encoded directly (a test pins it to ``Value.SerializeToString``): a proto object per value was a
    large part of the writes' cost."""
    if dtype == "int64":
        number = int(value)
        if number < 0:
            from feast.protos.feast.types.Value_pb2 import Value

            return Value(int64_val=number).SerializeToString(), str(number)
        return _INT64_TAG + _varint(number), str(number)
    real = float(value)
    return _DOUBLE_TAG + struct.pack("<d", real), str(real)


class OnlineStateWriter:
    """Writes entity states to the Feast online store of ``store``, never replacing a newer row.

    Rows go in Feast's own format (``online_write_batch`` of the provider for SQLite, whose tables get
    a trigger that ignores older updates; Feast's Redis key and field layout, written by a
    compare-and-set script, for Redis), so ``get_online_features`` and serving's lookup read them.
    """

    def __init__(self, store: FeatureStore) -> None:
        from feast.infra.provider import get_provider

        self.store = store
        self.kind = store.config.online_store.type
        if self.kind not in ("sqlite", "redis"):
            raise ValueError(
                f"fresh online features support the sqlite and redis online stores, not "
                f"{self.kind!r}: set online_store.type in feature_store.yaml, or turn "
                "features.streaming off in the serving config"
            )
        self._provider = get_provider(store.config)
        self._views = {table.name: store.get_feature_view(table.name) for table in TABLES}
        from feast import ValueType

        for name, view in self._views.items():
            kinds = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
            if any(kinds.get(column) != ValueType.STRING for column in TABLE_KEYS[name]):
                raise ValueError(
                    f"feature view {name!r}: fresh features expect string join keys "
                    f"{TABLE_KEYS[name]}, the registry has {kinds}"
                )
        self._guarded = False
        self._keys: dict[tuple[str, tuple[str, ...]], bytes] = {}
        self._key_version = store.config.entity_key_serialization_version
        self._sqlite_tables: dict[str, str] = {}
        self._script: Any = None  # the CAS script registered with Redis (redis-py Script), on first write

    def _entity_key(self, table: str, key: tuple[str, ...]) -> Any:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        # Every join key of the four views is a STRING entity (feature_repo/fraud/entities.py, checked at start).
        return EntityKey(
            join_keys=list(TABLE_KEYS[table]), entity_values=[Value(string_val=part) for part in key]
        )

    def _key_bytes(self, table: str, key: tuple[str, ...]) -> bytes:
        """Feast's serialised entity key (the SQLite row key; Redis adds the project), cached per entity."""
        cached = self._keys.get((table, key))
        if cached is None:
            from feast.infra.key_encoding_utils import serialize_entity_key

            if len(self._keys) > 1_000_000:  # a bound on memory, far above a day's active entities
                self._keys.clear()
            cached = self._keys[(table, key)] = serialize_entity_key(
                self._entity_key(table, key), entity_key_serialization_version=self._key_version
            )
        return cached

    def write(self, table: str, states: dict[tuple[str, ...], State]) -> int:
        """Write each key's state (stamped with its newest event's time); returns the rows offered."""
        if not states:
            return 0
        features = TABLES_BY_NAME[table].features
        items = [
            (
                self._key_bytes(table, key),
                [(name, encode_value(row[name], dtype)) for name, dtype in features.items()],
                newest,
            )
            for key, (newest, row) in states.items()
        ]
        if self.kind == "sqlite":
            self._write_sqlite(table, items)
        else:
            self._write_redis(table, items)
        return len(items)

    def _write_sqlite(
        self, table: str, items: list[tuple[bytes, list[tuple[str, tuple[bytes, str]]], int]]
    ) -> None:
        """Feast's SQLite rows (one per entity and feature: serialised key, feature name, value proto, its text,
        event time) upserted with one ``executemany``; Feast's own writer runs a statement per feature row,
        which made it most of fresh features' cost in serving."""
        conn = self._guard_sqlite()
        rows: list[tuple[bytes, str, bytes, str, datetime]] = []
        for key, values, newest in items:
            stamp = datetime(1970, 1, 1) + timedelta(microseconds=newest)  # naive UTC, as Feast stores it
            rows.extend((key, name, blob, text, stamp) for name, (blob, text) in values)
        with conn:
            conn.executemany(
                f'INSERT INTO "{self._sqlite_tables[table]}" (entity_key, feature_name, value, value_text, event_ts, '
                "created_ts) VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
                "created_ts = excluded.created_ts",
                rows,
            )

    def _guard_sqlite(self) -> Any:
        """Feast's connection to the online store, with the never-back-in-time trigger on every table."""
        online: Any = self._provider.online_store  # Feast's SqliteOnlineStore (private API below)
        conn = online._get_conn(self.store.config)
        if self._guarded:
            return conn
        from feast.infra.online_stores.sqlite import _table_id

        versioning = self.store.config.registry.enable_online_feature_view_versioning
        self._sqlite_tables = {
            table: _table_id(self.store.config.project, view, versioning)
            for table, view in self._views.items()
        }
        # WAL: serving's lookups (other connections) never wait for these writes; NORMAL: a commit is not
        # an fsync (a crash loses at most the last writes, which materialisation recomputes).
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        with conn:
            for name in self._sqlite_tables.values():
                conn.execute(_SQLITE_GUARD.format(trigger=f"{name}_never_back_in_time", table=name))
        self._guarded = True
        return conn

    def _write_redis(
        self, table: str, items: list[tuple[bytes, list[tuple[str, tuple[bytes, str]]], int]]
    ) -> None:
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import _versioned_fv_name
        from google.protobuf.timestamp_pb2 import Timestamp

        online: Any = self._provider.online_store  # Feast's RedisOnlineStore (private API below)
        client = online._get_client(self.store.config.online_store)
        if self._script is None:
            self._script = client.register_script(_REDIS_CAS)
        config = self.store.config
        name = _versioned_fv_name(self._views[table], config)
        project = config.project.encode("utf-8")
        stamp_field = f"_ts:{name}"
        hashed = {feature: _mmh3(f"{name}:{feature}") for feature in TABLES_BY_NAME[table].features}
        with client.pipeline(transaction=False) as pipe:
            for key, values, newest in items:
                ts = Timestamp()
                ts.FromDatetime(_EPOCH + timedelta(microseconds=newest))
                fields: list[Any] = [stamp_field, ts.SerializeToString()]
                for feature, (blob, _) in values:
                    fields.extend([hashed[feature], blob])
                # Feast's Redis key: the serialised entity key, then the project (helpers._redis_key).
                self._script(keys=[key + project], args=[stamp_field, newest, *fields], client=pipe)
            pipe.execute()
