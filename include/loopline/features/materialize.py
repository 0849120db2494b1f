"""Materialisation: a batch's aggregates into the offline store, the newest state of every entity it
touched into the online store, then the watermark (``features.watermark``).

The write side of the feature store (the materialise DAG, ``loopline features materialize``), apart from
its readers: training sets and the online lookup never write, and serving imports none of this.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from loopline.features.watermark import materialized_cursor, materialized_until, record_materialized
from loopline.platform.feast_store import apply_feature_repo, feast_config

if TYPE_CHECKING:
    from collections.abc import Iterable

    from feast import FeatureStore

    from loopline.config import Settings
    from loopline.features.offline_sink import OfflineSink
    from loopline.features.streaming import StreamEvent, StreamingFeatures

# Late data: each materialisation re-reads this much before the batch's interval.
MATERIALIZE_OVERLAP = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class MaterializeResult:
    start: str
    end: str
    offline_rows: dict[str, int]
    online_window: tuple[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _materialize_lock(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """The offline tables are read-merge-rewritten: one materialisation at a time across every task
    sharing this state (a Postgres advisory lock where they share no disk)."""
    from loopline.storage.state_db import shared_lock

    return shared_lock(settings, "materialize", settings.state.feast_dir / ".materialize.lock")


def materialize(
    settings: Settings,
    start: datetime,
    end: datetime,
    ledger_cursor: int | None = None,
    served: Iterable[StreamEvent] = (),
) -> MaterializeResult:
    """Compute the aggregates of the use case's events in [start, end) and load them into the online store.

    Offline: the rows of every event in [start, end) (``offline_refresh.refresh_aggregates`` with the use
    case's ``FeatureDefinitions``). Online, for a use case without streaming features: Feast's own
    ``materialize`` of [start - ``MATERIALIZE_OVERLAP``, newest). With them (fraud's):
    for every entity with a transaction in [start - ``MATERIALIZE_OVERLAP``, newest), the state after its
    newest known transaction — curated, or ``served`` (what the prediction service scored and logged but
    no batch has delivered yet: ``serving.prediction_log.answered_events``). So the batch corrects the
    online store (late and unscored transactions count) and never rolls it back: a fresher state written
    by serving is recomputed with the batch, not replaced by the batch's older one, and the store keeps a
    row unless the new one is at least as new (``streaming.OnlineStateWriter``). Loading an old interval
    late is therefore harmless too. ``ledger_cursor`` records which published batches this covers.
    """
    import pandas as pd

    from loopline.features.definitions import definitions_for
    from loopline.features.offline_refresh import refresh_aggregates

    _, definitions = definitions_for(settings)
    served = list(served)
    with _materialize_lock(settings):
        rows = refresh_aggregates(
            settings.state.curated,
            offline_sink(settings),
            pd.Timestamp(start),
            pd.Timestamp(end),
            definitions,
        )
        # Apply the definitions first (idempotent): a changed feature repo takes effect with the next run.
        store = apply_feature_repo(settings)
        until = max(end, materialized_until(settings) or end)
        online_start = start - MATERIALIZE_OVERLAP
        if definitions.streaming is not None:
            newest = _write_online_states(settings, store, definitions.streaming, online_start, until, served)
        else:  # no fresh features: Feast loads the newest offline row of each entity of the interval
            store.materialize(online_start, until, [table.name for table in definitions.tables])
            newest = until
        cursor = max(ledger_cursor or 0, materialized_cursor(settings))
        record_materialized(settings, until, cursor)
    return MaterializeResult(
        start=start.isoformat(),
        end=end.isoformat(),
        offline_rows=rows,
        online_window=(online_start.isoformat(), newest.isoformat()),
    )


def _write_online_states(
    settings: Settings,
    store: FeatureStore,
    streaming: StreamingFeatures,
    online_start: datetime,
    until: datetime,
    served: list[StreamEvent],
) -> datetime:
    """The state after the newest known event (curated or served) of every entity with one since
    ``online_start``, through the streaming writer that never rolls a row back; the newest event's time."""
    from loopline.features.fresh import load_curated_window, write_latest_states
    from loopline.features.streaming import EventWindows, epoch_us

    windows = EventWindows(streaming)
    # The state after each event since online_start needs the longest window before it (not the TTL).
    history_start = online_start - timedelta(microseconds=streaming.longest_window_us)
    load_curated_window(settings, windows, history_start, until)
    windows.add(served)
    touched = windows.touched(windows.events_since(epoch_us(online_start)))  # curated or served
    write_latest_states(store, windows, touched)
    return max(until, _EPOCH + timedelta(microseconds=windows.newest_us))


def offline_sink(settings: Settings) -> OfflineSink:
    """Where the aggregates go: the offline store of the feature_store.yaml in use (parquet files in
    the state dir for the embedded duckdb store, tables in Postgres for the production one)."""
    from loopline.features.offline_sink import sink_for

    return sink_for(feast_config(settings).offline_store, settings.state.feast_offline_dir)
