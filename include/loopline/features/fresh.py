"""The prediction service's fresh features: every scored event counts before the next is scored.

:class:`FreshFeatures` holds the recent events (``streaming.EventWindows``, over the use case's
``FeatureDefinitions.streaming``) of one serving process:

* at start, the curated events of ``history_us`` before the materialisation watermark (the longest window
  plus the views' TTL: ``check_history``), plus what the prediction log recorded as served since (its
  backlog: served before the batch was ingested);
* before each batch: what other replicas served meanwhile (read from the shared prediction log,
  which commits every answered prediction before its answer goes out) and the batch itself;
* when materialisation advances: the newly curated transactions (late or unscored ones included).

The lookup (``online.OnlineFeatures.lookup``) computes each row here, at the same instant the offline join
uses (the transaction's time minus 1 µs), whenever this process holds every event that row depends on:
the curated history of ``history_us`` before the transaction, the batches materialised since and
everything any replica served. That is the same state the online store holds or is about to hold (it is
the code that writes it), without a store read on the scoring path. Otherwise (not bootstrapped yet, a
transaction older than the history held) it reads the Feast online store and, where this process knows
newer events of an entity than the stored row (the same batch, another replica's last request), uses the
state computed here instead. A batch materialised less than ``refresh_interval_s`` ago (late or unscored
transactions) joins at the next refresh. A background thread writes the new
state of the entities touched to the online store, ``slice_entities`` every ``flush_interval_s``, oldest
first, each once it has waited ``coalesce_s`` (a busy merchant is written once per ``coalesce_s``, not once
per transaction). The defaults are those of ``include/config/serving.yaml``.

Crash safety: what the thread had not written yet is not lost. The events are in the prediction log;
a restarted service reads them back (``served_backlog``) and the next materialisation writes the state
after each entity's newest event, curated or served (``materialize.materialize``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from loopline.features.streaming import (
    EventWindows,
    Key,
    OnlineStateWriter,
    State,
    StreamEvent,
    StreamingFeatures,
    epoch_us,
    first_seen_map,
    table_key,
)

if TYPE_CHECKING:
    from feast import FeatureStore

    from loopline.config import Settings
    from loopline.config.use_case import UseCase

log = logging.getLogger("loopline.features.fresh")
KEEP = object()  # the stored online row is as fresh as anything known: use it
# Late data: a refresh re-reads this much of the curated store before the previous watermark.
REFRESH_OVERLAP = timedelta(days=1)
SLACK_US = 24 * 3_600 * 1_000_000  # events kept beyond the longest window (out-of-order arrivals)
EVERYTHING_US = -(1 << 62)  # "complete since forever": no curated history exists, all events were served

ServedEvents = Callable[[], list[StreamEvent]]


def check_history(use_case: str, streaming: StreamingFeatures, store: FeatureStore) -> None:
    """Refuse (``FreshFeaturesUnavailable``) a ``history_us`` too short for a table: a row is served up to
    its view's TTL after the entity's newest event and counts the table's longest window before that event,
    so computed from less history it would be undercounted for an entity idle a while, not just stale."""
    from feast.errors import FeatureViewNotFoundException

    for table in streaming.tables:
        try:
            ttl = store.get_feature_view(table.name).ttl
        except FeatureViewNotFoundException:
            continue  # not registered yet: the writer's own check names it
        ttl_us = int(ttl.total_seconds() * 1_000_000) if ttl else 0
        if not ttl_us:
            raise FreshFeaturesUnavailable(
                f"feature view {table.name!r} has no TTL, so a served row may depend on events of any age: "
                "give the view a TTL (its longest window is the usual one) to serve fresh features"
            )
        needed = table.window_us + ttl_us
        if streaming.history_us < needed:
            raise FreshFeaturesUnavailable(
                f"use case {use_case!r}: StreamingFeatures.history_us is {_days(streaming.history_us)}, shorter "
                f"than the longest window of {table.name!r} ({_days(table.window_us)}) plus its view's TTL "
                f"({_days(ttl_us)}): a row served up to its TTL after an entity's newest event counts the "
                f"window before that event; set history_us to at least {_days(needed)}"
            )


def _days(us: int) -> str:
    return f"{us / 86_400e6:g} d" if us >= 86_400_000_000 else f"{us / 3_600e6:g} h"


def _no_event(row: Any) -> StreamEvent:
    raise FreshFeaturesUnavailable("this use case defines no streaming features")


def _no_events(frame: Any) -> Sequence[StreamEvent]:
    raise FreshFeaturesUnavailable("this use case defines no streaming features")


# The windows of a use case without streaming features: no table, so they never hold anything.
_NO_STREAMING = StreamingFeatures(tables=(), history_us=0, event=_no_event, events=_no_events)


class FreshFeaturesUnavailable(RuntimeError):
    """This process cannot keep features fresh correctly; the message says why and what to do."""


class FreshFeaturesNotReady(RuntimeError):
    """Not yet: the history fresh features start from is not there yet (retried)."""


@dataclass
class FreshStats:
    events_streamed: int = 0
    events_synced: int = 0
    curated_loaded: int = 0
    rows_written: int = 0
    write_failures: int = 0
    last_write_error: str = ""


@dataclass(frozen=True)
class CuratedEvents:
    """Curated events of a time range, with the first-seen times before it (table -> key -> seconds)."""

    events: Sequence[StreamEvent]
    first_seen: dict[str, dict[Key, float]]

    def add_to(self, windows: EventWindows) -> int:
        for table, seen in self.first_seen.items():
            windows.remember_first_seen(table, seen)
        return len(windows.add(self.events))


def streaming_features(settings: Settings) -> tuple[UseCase, StreamingFeatures | None]:
    """The settings' use case and its streaming features (None: it defines none)."""
    from loopline.features.definitions import definitions_for

    use_case, definitions = definitions_for(settings)
    return use_case, definitions.streaming


def read_curated_events(
    settings: Settings,
    start: datetime | None,
    end: datetime | None,
    streaming: StreamingFeatures | None = None,
) -> CuratedEvents:
    """Curated events in [start, end) (and the first-seen times before ``start`` of the tables that keep
    them), as ``streaming`` (default: the settings' use case's) reads them."""
    import pandas as pd

    from loopline.features.curated import first_seen, read_curated_event_frame

    use_case, configured = streaming_features(settings)
    streaming = streaming or configured
    if streaming is None:
        raise FreshFeaturesUnavailable(f"use case {use_case.name!r} defines no streaming features")
    seen: dict[str, dict[Key, float]] = {}
    if start is not None:
        for table in streaming.tables:
            if table.first_seen is not None:
                keys = table.table.keys
                before = first_seen(
                    settings.state.curated, pd.Timestamp(start), keys, "first_seen_s", use_case
                )
                seen[table.name] = first_seen_map(before, keys, "first_seen_s")
    frame = read_curated_event_frame(
        settings.state.curated,
        None if start is None else pd.Timestamp(start),
        None if end is None else pd.Timestamp(end),
        use_case=use_case,
    )
    return CuratedEvents(streaming.events(frame), seen)


def load_curated_window(
    settings: Settings, windows: EventWindows, start: datetime | None, end: datetime | None
) -> int:
    """Add curated events in [start, end) (and first-seen times before ``start``)."""
    return read_curated_events(settings, start, end, windows.streaming).add_to(windows)


class FreshFeatures:
    """Recent events of one serving process and the online writes they cause. See the module doc."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: FeatureStore | None = None,
        served_events: ServedEvents | None = None,
        flush_interval_s: float = 0.1,
        slice_entities: int = 100,
        coalesce_s: float = 5.0,
        refresh_interval_s: float = 10.0,
        backlog: Callable[[], Iterable[StreamEvent]] | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self.writer: OnlineStateWriter | None = None
        self.ready = False  # bootstrapped: until then every call is a no-op and lookups use the store as is
        self.backlog = backlog  # what was served before this process started (the prediction log's)
        self.use_case, streaming = streaming_features(settings)
        self.streaming = streaming or _NO_STREAMING  # none: ``bootstrap`` refuses, nothing is ever added
        self.windows = EventWindows(self.streaming)
        self.stats = FreshStats()
        self.flush_interval_s = flush_interval_s
        self.slice_entities = slice_entities
        self.coalesce_s = coalesce_s
        self.refresh_interval_s = refresh_interval_s
        self.served = served_events  # other replicas' answered transactions since the last call
        self._lock = threading.Lock()
        # Entities whose newest state is not written yet, oldest first (a dict is an ordered set): a busy one
        # is written once per pass, however many transactions it had meanwhile.
        self._dirty: dict[tuple[str, tuple[str, ...]], float] = {}  # -> when it first became dirty
        self._until: datetime | None = None
        # Every event at or after this instant (µs) is in the windows: the history the lookup may compute from.
        self._complete_from_us: int | None = None
        self._next_refresh = 0.0
        self._refreshed: tuple[datetime, CuratedEvents] | None = (
            None  # read by the writer thread, not joined yet
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_try = 0.0
        self._gave_up = False

    def knows(self, event_id: str) -> bool:
        return event_id in self.windows

    # --- loading ------------------------------------------------------------------------------------

    def bootstrap(self, served_backlog: Iterable[StreamEvent] | None = None) -> FreshFeatures:
        """The curated ``history_us`` before the watermark, then what was served since.

        Refuses (``FreshFeaturesUnavailable``) where this process cannot see the curated store and the
        watermark that the online store was built from: a state computed without that history would be
        wrong, not just stale, and written to the store it would replace a right one. Curated batches
        without a watermark yet (ingested, not materialised) are ``FreshFeaturesNotReady``: retried."""
        from loopline.features.curated import curated_time_range
        from loopline.features.watermark import materialized_until
        from loopline.platform.feast_store import feature_store

        if self.streaming is _NO_STREAMING:
            raise FreshFeaturesUnavailable(
                f"use case {self.use_case.name!r} defines no streaming features (its "
                "FeatureDefinitions.streaming is None): features are as of the last materialisation; set "
                "fresh_features.enabled: false in the serving config"
            )
        if self.settings.mode == "kubernetes":
            # Pods share no disk: the curated store and the watermark must come from the shared services.
            missing = [
                f"{name} ({what})"
                for name, value, what in (
                    (
                        "LOOPLINE_STORAGE_URL",
                        self.settings.storage_url,
                        "the s3://bucket[/prefix] the Airflow tasks write the curated store to: storage_url "
                        "in include/config/kubernetes.yaml, with read-only object-store credentials in "
                        "serving's Secret",
                    ),
                    (
                        "LOOPLINE_STATE_DB_URL",
                        self.settings.state_db_url,
                        "postgresql://serving:...@host:5432/loopline, a role that may read the watermarks "
                        "table: key LOOPLINE_STATE_DB_URL of serving's Secret",
                    ),
                )
                if not value
            ]
            if missing:
                raise FreshFeaturesUnavailable(
                    "serving pods in Kubernetes share no disk, so fresh features read the curated store and "
                    f"the materialisation watermark from the shared services: set {'; and '.join(missing)}. "
                    "Until then features are as of the last materialisation (`loopline features "
                    "check-served` measures the skew)"
                )
        if self.writer is None:  # needs the feature views registered (the first materialisation does it)
            store = self._store or feature_store(self.settings)
            check_history(self.use_case.name, self.streaming, store)
            self.writer = OnlineStateWriter(store, [table.table for table in self.streaming.tables])
        self._until = materialized_until(self.settings)
        if self._until is None and curated_time_range(self.settings) is not None:
            raise FreshFeaturesNotReady(
                f"the curated store {self.settings.state.curated} holds events but no materialisation "
                f"watermark is visible ({self.settings.state.feast_dir}): run `loopline features materialize` "
                "or point serving at the state dir the features DAG writes"
            )
        if self._until is not None:
            start = self._until - timedelta(microseconds=self.streaming.history_us)
            self.stats.curated_loaded += load_curated_window(self.settings, self.windows, start, self._until)
            self._complete_from_us = epoch_us(start)
        else:  # nothing curated yet: every event there is was served, and the backlog holds them all
            self._complete_from_us = EVERYTHING_US
        if served_backlog is None:
            served_backlog = self.backlog() if self.backlog is not None else ()
        self.stats.events_synced += len(self.windows.add(served_backlog))
        self._next_refresh = time.monotonic() + self.refresh_interval_s
        self.ready = True
        return self

    def _try_bootstrap(self) -> None:
        """Until ready (e.g. serving started before the first materialisation registered the feature views):
        try again every ``refresh_interval_s``, from the writer thread."""
        if self.ready or self._gave_up or time.monotonic() < self._next_try:
            return
        self._next_try = time.monotonic() + self.refresh_interval_s
        try:
            self.bootstrap()
        except FreshFeaturesUnavailable as exc:
            self._gave_up = True
            log.warning("fresh features are OFF: %s", exc)
        except Exception as exc:
            log.info("fresh features wait: %s (retried every %.0f s)", exc, self.refresh_interval_s)
        else:
            log.info("fresh features on: %d recent events known", len(self.windows))

    def _read_refresh(self) -> None:
        """Newly materialised batches (late or unscored transactions), read by the writer thread; the scoring
        thread joins them at its next batch (``_join_refresh``), so reading the files never stalls scoring."""
        from loopline.features.watermark import materialized_until

        self._next_refresh = time.monotonic() + self.refresh_interval_s
        until = materialized_until(self.settings)
        if self._refreshed is not None or until is None or (self._until is not None and until <= self._until):
            return
        start = None if self._until is None else self._until - REFRESH_OVERLAP
        self._refreshed = (until, read_curated_events(self.settings, start, until, self.streaming))

    def _join_refresh(self) -> None:
        until, curated = self._refreshed  # type: ignore[misc]
        with self._lock:
            added_before = len(self.windows)
            loaded = curated.add_to(self.windows)
            horizon = self.windows.newest_us - self.streaming.history_us - SLACK_US
            self.windows.prune(horizon)
        self._until = until
        self._refreshed = None
        self.stats.curated_loaded += loaded
        self._complete_from_us = max(self._complete_from_us or EVERYTHING_US, horizon + 1)
        log.info(
            "fresh features: %d curated events up to %s joined (%d known before)",
            loaded,
            until,
            added_before,
        )

    # --- the scoring path -----------------------------------------------------------------------------

    def observe(self, events: list[dict[str, Any]]) -> None:
        """Before scoring a batch: other replicas' new events, then the batch's own."""
        if not self.ready:
            return
        if self._refreshed is not None:
            self._join_refresh()
        synced: list[StreamEvent] = []
        if self.served is not None:
            try:
                synced = self.served()
            except Exception:
                log.exception("fresh features: reading other replicas' predictions failed")
        own = [self.streaming.event(tx) for tx in events]
        touched: set[tuple[str, tuple[str, ...]]] = set()
        with self._lock:
            new_synced = self.windows.add(synced, touched)
            new_own = self.windows.add(own, touched)
            now = time.monotonic()
            for item in touched:
                self._dirty.setdefault(item, now)
        self.stats.events_synced += len(new_synced)
        self.stats.events_streamed += len(new_own)

    def computes(self, as_of_us: int) -> bool:
        """Whether the windows hold every event a row as of ``as_of_us`` depends on (``history_us``: the
        longest window before an entity's newest event, itself up to the view's TTL old; ``check_history``),
        so ``state`` is the row itself and the store need not be read."""
        return (
            self.ready
            and self._complete_from_us is not None
            and as_of_us - self.streaming.history_us >= self._complete_from_us
        )

    def state(self, table: str, key: tuple[str, ...] | None, as_of_us: int) -> State | None:
        """The row of ``key`` in ``table`` as of ``as_of_us`` (None: no event, or no key: no row, as offline)."""
        return None if key is None else self.windows.state(table, key, as_of_us)

    def fresher(
        self,
        table: str,
        key: tuple[str, ...] | None,
        as_of_us: int,
        stored_us: int | None,
        stamp_precision_us: int = 1,
    ) -> Any:
        """``KEEP`` when the stored row (its newest event at ``stored_us``, None: no row) is what the offline
        join would return at ``as_of_us``; else the state known here (None: no state).
        ``stamp_precision_us``: the store's stamps are floored to it (Feast's SQLite store keeps seconds), so
        a row stamped in the second of ``as_of_us`` may be from after it."""
        if key is None or not self.ready:
            return KEEP
        newest = self.windows.newest_before(table, key, as_of_us + 1)
        if (
            stored_us is not None and stored_us + stamp_precision_us - 1 > as_of_us
        ):  # maybe from after: not for it
            return None if newest is None else self.windows.state(table, key, as_of_us)
        if newest is None or (stored_us is not None and newest <= stored_us):
            return KEEP
        return self.windows.state(table, key, as_of_us)

    # --- writing --------------------------------------------------------------------------------------

    def flush(self, limit: int | None = None, min_age_s: float = 0.0) -> int:
        """Write the newest state of the entities touched since they were last written: the oldest ``limit``
        of them (all when None) that have waited at least ``min_age_s``; returns rows written."""
        if self.writer is None:
            return 0
        with self._lock:
            ripe = time.monotonic() - min_age_s
            take = len(self._dirty) if limit is None else limit
            picked = list(
                itertools.takewhile(
                    lambda item: self._dirty[item] <= ripe, itertools.islice(self._dirty, take)
                )
            )
            for item in picked:
                del self._dirty[item]
            by_table: dict[str, list[tuple[str, ...]]] = {}
            for table, key in picked:
                by_table.setdefault(table, []).append(key)
            pending = {table: self.windows.latest(table, keys) for table, keys in by_table.items()}
        written = 0
        for table, states in pending.items():
            try:
                written += self.writer.write(table, states)
            except Exception as exc:  # recomputed by the next flush of the entity or by materialisation
                self.stats.write_failures += 1
                self.stats.last_write_error = repr(exc)
                log.exception(
                    "fresh features: writing %d %s rows to the online store failed", len(states), table
                )
        self.stats.rows_written += written
        return written

    def start(self) -> FreshFeatures:
        self._thread = threading.Thread(target=self._flush_loop, name="loopline-fresh-features", daemon=True)
        self._thread.start()
        return self

    def _flush_loop(self) -> None:
        # Small slices, often: the writes share the interpreter with scoring, and a long burst would stall
        # the requests in flight (their p99). Entities wait in order; the overlay keeps them fresh meanwhile.
        while not self._stop.wait(self.flush_interval_s):
            self._try_bootstrap()
            if self.ready and time.monotonic() >= self._next_refresh:
                try:
                    self._read_refresh()
                except Exception:  # serving goes on with what it knows; the next interval retries
                    log.exception("fresh features: reading newly curated events failed")
            self.flush(self.slice_entities, self.coalesce_s)

    def close(self) -> None:
        """Stop the writer thread after a last flush."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()


def write_latest_states(
    store: FeatureStore, windows: EventWindows, touched: dict[str, set[tuple[str, ...]]]
) -> dict[str, int]:
    """Write the state after each touched entity's newest event; rows offered per table."""
    writer = OnlineStateWriter(store, [table.table for table in windows.streaming.tables])
    return {table: writer.write(table, windows.latest(table, keys)) for table, keys in touched.items()}


__all__ = [
    "KEEP",
    "CuratedEvents",
    "FreshFeatures",
    "FreshFeaturesNotReady",
    "FreshFeaturesUnavailable",
    "FreshStats",
    "State",
    "StreamEvent",
    "load_curated_window",
    "read_curated_events",
    "streaming_features",
    "table_key",
    "write_latest_states",
]
