"""Fresh features at scoring time: the aggregate state after every event, kept per entity.

The offline tables (``features.tables``) hold, for every event, the state *after* it; a training row joins
at its event's time minus 1 µs. Batch materialisation alone would leave the online store up to a day behind
that: the events scored today are only ingested tonight. So the request is also an event.
:class:`EventWindows` keeps the recent events (the longest window's worth) of every entity of a use case's
streaming tables and computes the state after any of them with exactly the offline rules:

* windows ``(t - w, t]`` end at the entity's newest event at or before the time asked for;
* ties: the state at ``t`` is after *all* events at ``t`` (an event at ``T`` reads the state at
  ``T - 1 µs``, so it never sees itself nor another event of the same instant);
* a table may keep one feature over all history: the time its entity was first seen (events older than
  the window are remembered as first-seen times when pruned).

What the tables' features are and how each is updated is the use case's (:class:`StreamingFeatures`, named
by its ``FeatureDefinitions.streaming``; fraud's is ``loopline.usecases.fraud.features.streaming``). The
platform keeps the machinery: each entity's timeline of events with running totals (a window's sum in O(1)),
window cursors that add and remove only the events entering or leaving a window (:class:`WindowCursor`),
memoised states, pruning, and the online writer. A use case's offline computation gives the same numbers
vectorised for millions of rows; this module computes them for a handful of entities per request in
microseconds. Tests pin both to the same values, and ``loopline features check-served`` checks them on live
traffic.

Who uses it: the prediction service (``features.fresh``) adds each scored event (and the other replicas'
ones, read from the shared prediction log) before scoring the next batch, overlays the fresh state on the
online store's rows when the store has not caught up yet, and writes the new state of every entity it
touched through Feast's online store interface (:class:`OnlineStateWriter`). Materialisation
(``features.materialize.materialize``) writes the state after each entity's newest known event, curated or
served, through the same writer: it corrects the store (late or unscored events) and never rolls it back,
because the writer keeps a stored row unless the new one is at least as new.
"""

from __future__ import annotations

import bisect
import math
import operator
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from loopline.features.tables import KNOWN, AggregateTable

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

US_PER_S = 1_000_000
HOUR_US = 3_600 * US_PER_S
DAY_US = 24 * HOUR_US
H1, D1, D7, D30 = HOUR_US, DAY_US, 7 * DAY_US, 30 * DAY_US
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

State = tuple[int, dict[str, Any]]  # (time of the entity's newest event in µs, feature -> value)
Key = tuple[str, ...]


class StreamEvent(Protocol):
    """One event as the windows keep it: its id, its time (µs since the epoch) and, as attributes named
    like them, the key columns of every streaming table (text, None when missing); the use case's own
    fields (what its features read) next to them. Fraud's is a NamedTuple."""

    @property
    def event_id(self) -> str: ...

    @property
    def t_us(self) -> int: ...


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


def text(value: Any) -> str | None:
    """A request's (or a logged event's) value as an event's text field: None when missing (None, NaN, NA)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        import pandas as pd

        if value is pd.NA:
            return None
    except ImportError:  # pragma: no cover - pandas is always installed with Loopline
        pass
    return str(value)


def frame_times_us(frame: pd.DataFrame, column: str) -> list[int]:
    """A frame's time column in µs since the epoch, vectorised."""
    import numpy as np
    import pandas as pd

    stamps = pd.to_datetime(frame[column], utc=True).dt.tz_localize(None)
    times: list[int] = stamps.to_numpy().astype("datetime64[us]").astype(np.int64).tolist()
    return times


def frame_texts(frame: pd.DataFrame, column: str) -> list[str | None]:
    """A frame's column as events' text fields (None when missing, or when the frame has no such column)."""
    import pandas as pd

    if column not in frame.columns:
        return [None] * len(frame)
    values = frame[column].astype(object)
    return [
        None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)
        for v in values.tolist()
    ]


# --- one entity's events and the state after them ---------------------------------------------------

# A running total kept per entity: the event's value (its amount; 1 for an event that counts, else 0).
Total = Callable[[Any], float]


class Timeline:
    """One entity's events, oldest first (appends are O(1); a late event is inserted in place), with the
    running totals of its table (``prefixes[i][j]``: total ``i`` over ``events[:j]``, a window's in O(1))."""

    __slots__ = ("cursors", "events", "memo", "prefixes", "times", "totals", "version")

    def __init__(self, totals: tuple[Total, ...] = ()) -> None:
        self.times: list[int] = []
        self.events: list[Any] = []
        self.totals = totals
        self.prefixes: list[list[Any]] = [[0] for _ in totals]
        self.version = 0  # bumped when events move (a late insert, a prune): memoised states are then stale
        self.memo: tuple[int, int, dict[str, Any]] | None = (
            None  # (end, version, row) of the last state built
        )
        # The window aggregates that prefix sums cannot give, kept up to date event by event (WindowCursor): one
        # per caller (SCORING, LATEST), so the scoring thread and the online writer never move each other's.
        self.cursors: list[WindowCursor | None] = [None, None]

    def add(self, event: Any) -> None:
        if not self.times or event.t_us >= self.times[-1]:
            self.times.append(event.t_us)
            self.events.append(event)
            for prefix, total in zip(self.prefixes, self.totals, strict=True):
                prefix.append(prefix[-1] + total(event))
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
        """Rebuild the running totals from event ``start`` on (after a late insert or a prune)."""
        for prefix, total in zip(self.prefixes, self.totals, strict=True):
            del prefix[start + 1 :]
            running = prefix[start]
            for event in self.events[start:]:
                running += total(event)
                prefix.append(running)

    def window_total(self, total: int, start: int, end: int) -> Any:
        """Total ``total`` over ``events[start:end]``."""
        prefix = self.prefixes[total]
        return prefix[end] - prefix[start]

    def end(self, t_us: int) -> int:
        """Index after the last event at or before ``t_us``."""
        return bisect.bisect_right(self.times, t_us)

    def start(self, newest_us: int, window_us: int) -> int:
        """Index of the first event inside ``(newest - window, newest]``."""
        return bisect.bisect_right(self.times, newest_us - window_us)


SCORING, LATEST = 0, 1  # cursor slots: the scoring path's lookups, the online writer's newest states

# Exact sums: values as integers in units of 2^-64, so sums of them and of their squares are exact (Python
# integers) and a window's variance is exact however many events came and went. Every value of at least
# 2^-11 (0.0005) is such an integer; a smaller one with more digits has ``fixed`` None (fall back to a scan).
FIXED_BITS = 64
_FIXED_ONE = 1 << FIXED_BITS


def fixed(value: float) -> int | None:
    """``value`` in units of 2^-64 when that is exact, else None."""
    if not math.isfinite(value):
        return None
    numerator, denominator = value.as_integer_ratio()
    if denominator > _FIXED_ONE:
        return None
    return numerator * (_FIXED_ONE // denominator)


def population_std(values: list[float]) -> float:
    """As offline: population std, exactly 0.0 when the window holds one distinct value."""
    if len(set(values)) <= 1:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(max(sum((a - mean) ** 2 for a in values) / len(values), 0.0))


def count_in(counts: dict[Any, int], value: Any) -> None:
    """A value entered a window (distinct counts: ``len(counts)``)."""
    counts[value] = counts.get(value, 0) + 1


def count_out(counts: dict[Any, int], value: Any) -> None:
    """A value left a window."""
    left = counts[value] - 1
    if left:
        counts[value] = left
    else:
        del counts[value]


class WindowCursor:
    """One entity's window aggregates that running totals cannot give (distinct values, a maximum, exact sums
    of squares), for the windows ``(newest - w, newest]`` (``windows``: their lengths in µs) that end at event
    ``end``. A use case subclasses it: ``add`` and ``remove`` an event to and from window ``w``.

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

    def add(self, window: int, event: Any) -> None:
        raise NotImplementedError

    def remove(self, window: int, event: Any) -> None:
        raise NotImplementedError

    def move(self, line: Timeline, end: int) -> None:
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

    def inserted(self, line: Timeline, at: int, event: Any) -> None:
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


_C = TypeVar("_C", bound=WindowCursor)


def cursor(line: Timeline, slot: int, kind: type[_C], end: int) -> _C:
    """``line``'s cursor of ``kind`` for ``slot`` (made on first use), moved to ``end``."""
    found = line.cursors[slot]
    if found is None:
        found = line.cursors[slot] = kind()
    found.move(line, end)
    return found  # type: ignore[return-value]


# --- what a use case provides ---------------------------------------------------------------------

# (the entity's timeline, end: index after its newest event in the windows, newest: that event's time in µs,
# slot: SCORING or LATEST, for ``cursor``) -> the table's features except ``first_seen``.
RowBuilder = Callable[[Timeline, int, int, int], dict[str, Any]]


def _key_getter(keys: tuple[str, ...]) -> Callable[[Any], Key | None]:
    """An event's key in a table with ``keys`` (None when a key column is missing: no row, as offline)."""
    get = operator.attrgetter(*keys)
    if len(keys) == 1:

        def one(event: Any) -> Key | None:
            value: Any = get(event)
            return None if value is None else (value,)

        return one

    def many(event: Any) -> Key | None:
        values: Key = get(event)
        return None if None in values else values

    return many


@dataclass(frozen=True)
class StreamTable:
    """One aggregate table kept fresh: ``table`` (its name, keys and features), ``row`` (its features after
    an entity's newest event in the windows), ``window_us`` (the longest window ``row`` reads), ``totals``
    (the running totals ``row`` reads through ``Timeline.window_total``, by position) and ``first_seen`` (a
    feature holding the entity's first event time in seconds over all history, or None)."""

    table: AggregateTable
    row: RowBuilder
    window_us: int
    totals: tuple[Total, ...] = ()
    first_seen: str | None = None
    key: Callable[[Any], Key | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _key_getter(self.table.keys))

    @property
    def name(self) -> str:
        return self.table.name


@dataclass(frozen=True)
class StreamingFeatures:
    """What a use case tells the platform to keep its features fresh at scoring time
    (``FeatureDefinitions.streaming``).

    ``tables``: its streaming tables; the first holds every event (its key is the unit every event has).
    ``history_us``: how far back the events a served row depends on reach: a row is read up to its view's
    TTL after the entity's newest event and counts the window before that event, so at least the longest
    ``window_us + TTL`` of its tables (serving refuses a shorter one, naming the table).
    ``event``: a request's event (its JSON fields, as scored and logged) as a :class:`StreamEvent`.
    ``events``: its curated events (a frame of its event columns) as :class:`StreamEvent` s, vectorised.
    """

    tables: tuple[StreamTable, ...]
    history_us: int
    event: Callable[[Mapping[str, Any]], StreamEvent]
    events: Callable[[pd.DataFrame], Sequence[StreamEvent]]

    @property
    def longest_window_us(self) -> int:
        """The longest window of any table: what the state after an event needs before it."""
        return max((table.window_us for table in self.tables), default=0)

    def table(self, name: str) -> StreamTable:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(f"no streaming table {name!r}; known: {[t.name for t in self.tables]}")


def table_key(table: str, event: Any) -> Key | None:
    """The entity key of ``event`` (a :class:`StreamEvent`, or a request's fields) in ``table``; None when a
    key column is missing (no row, as offline)."""
    keys = KNOWN[table].keys
    if isinstance(event, Mapping):
        values = tuple(event.get(column) for column in keys)
        return None if None in values else tuple(str(value) for value in values)
    key = tuple(getattr(event, column) for column in keys)
    return None if None in key else key


class EventWindows:
    """The recent events per entity of every streaming table of a use case, and the state after them.

    Not thread-safe: one thread at a time adds events and computes states. In serving that is the scoring
    thread; the online writer's ``latest`` runs under ``FreshFeatures``' lock (which ``add`` and ``prune`` also
    hold) and moves window cursors of its own, so it may run while the scoring thread calls ``state``.
    """

    def __init__(
        self, streaming: StreamingFeatures, first_seen: Mapping[str, Mapping[Key, float]] | None = None
    ) -> None:
        self.streaming = streaming
        self.history_us = streaming.history_us
        self._tables = {table.name: table for table in streaming.tables}
        self._lines: dict[str, dict[Key, Timeline]] = {table.name: {} for table in streaming.tables}
        self._unit = streaming.tables[0].name if streaming.tables else ""
        self._ids: set[str] = set()
        # table -> key -> first event in seconds, for events older than the ones kept (tables with first_seen).
        self._first_seen: dict[str, dict[Key, float]] = {
            table.name: {} for table in streaming.tables if table.first_seen is not None
        }
        for table, seen in (first_seen or {}).items():
            self.remember_first_seen(table, seen)
        self.newest_us = 0

    def remember_first_seen(self, table: str, first_seen: Mapping[Key, float]) -> None:
        """Earlier first events of ``table``'s entities than the events kept (e.g. older partitions)."""
        known_by_key = self._first_seen[table]
        for key, seconds in first_seen.items():
            known = known_by_key.get(key)
            known_by_key[key] = seconds if known is None else min(known, seconds)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, events: Iterable[Any], touched: set[tuple[str, Key]] | None = None) -> list[Any]:
        """Add events not seen before (by event id); returns the new ones. ``touched``: gets the (table, key)
        of every entity they belong to (what ``touched()`` would say, without a second pass)."""
        added = []
        tables = [(name, lines, self._tables[name]) for name, lines in self._lines.items()]
        for event in events:
            event_id = event.event_id
            if event_id in self._ids:
                continue
            self._ids.add(event_id)
            added.append(event)
            self.newest_us = max(self.newest_us, event.t_us)
            for name, lines, table in tables:
                key = table.key(event)
                if key is not None:
                    line = lines.get(key)
                    if line is None:
                        line = lines[key] = Timeline(table.totals)
                    line.add(event)
                    if touched is not None:
                        touched.add((name, key))
        return added

    def events_since(self, t_us: int) -> list[Any]:
        """The events kept at or after ``t_us`` (each once)."""
        return [
            event
            for line in self._lines[self._unit].values()
            for event in line.events[bisect.bisect_left(line.times, t_us) :]
        ]

    def newest_before(self, table: str, key: Key, t_us: int) -> int | None:
        """Time of the entity's newest event strictly before ``t_us`` (None: none kept)."""
        line = self._lines[table].get(key)
        if line is None:
            return None
        end = bisect.bisect_left(line.times, t_us)
        return line.times[end - 1] if end else None

    def state(self, table: str, key: Key, at_us: int) -> State | None:
        """The table's row for ``key`` as of ``at_us``: the state after the entity's newest event at or
        before it (windows end at that event), or None when no event of it is kept."""
        return self._state(table, key, at_us, SCORING)

    def _state(self, table: str, key: Key, at_us: int, slot: int) -> State | None:
        line = self._lines[table].get(key)
        if line is None:
            return None
        end = line.end(at_us)
        if not end:
            return None
        newest = line.times[end - 1]
        if line.memo is not None and line.memo[0] == end and line.memo[1] == line.version:
            return newest, line.memo[2]  # appends after ``newest`` do not change it; shared: do not mutate
        spec = self._tables[table]
        row = spec.row(line, end, newest, slot)
        if spec.first_seen is not None:
            first = line.times[0] / US_PER_S
            known = self._first_seen[table].get(key)
            row[spec.first_seen] = first if known is None or known > first else known
        line.memo = (end, line.version, row)
        return newest, row

    def latest(self, table: str, keys: Iterable[Key]) -> dict[Key, State]:
        """The state after each key's newest event (with cursors of its own: the online writer calls it from
        its thread, under ``FreshFeatures``' lock, while the scoring thread computes states)."""
        lines = self._lines[table]
        out: dict[Key, State] = {}
        for key in keys:
            line = lines.get(key)
            if line is not None and line.times:
                state = self._state(table, key, line.times[-1], LATEST)
                assert state is not None  # the line has an event at that time
                out[key] = state
        return out

    def touched(self, events: Iterable[Any]) -> dict[str, set[Key]]:
        """Per table, the keys these events belong to."""
        out: dict[str, set[Key]] = {table: set() for table in self._lines}
        tables = [(out[name], self._tables[name].key) for name in out]
        for event in events:
            for keys, key_of in tables:
                key = key_of(event)
                if key is not None:
                    keys.add(key)
        return out

    def prune(self, before_us: int) -> int:
        """Forget events at or before ``before_us`` (remembering first-seen times); returns how many.
        Keep at least the longest window behind the newest state anyone will ask for."""
        dropped = 0
        for table, lines in self._lines.items():
            first_seen = self._first_seen.get(table)
            for key in list(lines):
                line = lines[key]
                cut = bisect.bisect_right(line.times, before_us)
                if not cut:
                    continue
                if first_seen is not None:
                    first = line.times[0] / US_PER_S
                    known = first_seen.get(key)
                    first_seen[key] = first if known is None else min(known, first)
                if table == self._unit:
                    for event in line.events[:cut]:
                        self._ids.discard(event.event_id)
                        dropped += 1
                del line.times[:cut]
                del line.events[:cut]
                line.resum()  # every running total from the first event kept
                line.version += 1
                line.cursors = [None, None]  # their indices point into the events before the cut
                if not line.times:
                    del lines[key]
        return dropped


def first_seen_map(frame: pd.DataFrame, keys: tuple[str, ...], column: str) -> dict[Key, float]:
    """``curated.first_seen`` output (``keys`` and the seconds in ``column``) as a dict."""
    return {
        tuple(str(part) for part in parts[:-1]): float(parts[-1])
        for parts in zip(*(frame[k].astype(str) for k in keys), frame[column], strict=True)
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

    ``tables``: the aggregate tables written (default: every aggregate table defined that ``store`` has a
    feature view of; ``features.fresh`` passes the use case's streaming tables).

    Rows go in Feast's own format (``online_write_batch`` of the provider for SQLite, whose tables get
    a trigger that ignores older updates; Feast's Redis key and field layout, written by a
    compare-and-set script, for Redis), so ``get_online_features`` and serving's lookup read them.
    """

    def __init__(self, store: FeatureStore, tables: Iterable[AggregateTable] | None = None) -> None:
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
        if tables is None:
            tables = _stored_tables(store)
        self._tables = {table.name: table for table in tables}
        self._views = {name: store.get_feature_view(name) for name in self._tables}
        from feast import ValueType

        for name, view in self._views.items():
            kinds = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
            if any(kinds.get(column) != ValueType.STRING for column in self._tables[name].keys):
                raise ValueError(
                    f"feature view {name!r}: fresh features expect string join keys "
                    f"{self._tables[name].keys}, the registry has {kinds}"
                )
        self._guarded = False
        self._keys: dict[tuple[str, tuple[str, ...]], bytes] = {}
        self._key_version = store.config.entity_key_serialization_version
        self._sqlite_tables: dict[str, str] = {}
        self._script: Any = None  # the CAS script registered with Redis (redis-py Script), on first write

    def _entity_key(self, table: str, key: tuple[str, ...]) -> Any:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        # Every join key of the views is a STRING entity (checked at start).
        return EntityKey(
            join_keys=list(self._tables[table].keys), entity_values=[Value(string_val=part) for part in key]
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
        features = self._tables[table].features
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
        hashed = {feature: _mmh3(f"{name}:{feature}") for feature in self._tables[table].features}
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


def _stored_tables(store: FeatureStore) -> list[AggregateTable]:
    """The aggregate tables (every one defined so far, ``tables.KNOWN``) that ``store`` has a feature view of."""
    return [KNOWN[view.name] for view in store.list_feature_views() if view.name in KNOWN]
