"""Loopline's feature store: materialisation, point-in-time training sets, online retrieval, skew.

Everything goes through one versioned Feast FeatureService (``fraud_detection_v1``), so training and
serving ask for the same features computed by the same definitions.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loopline.config import Settings
from loopline.platform.feast_store import apply_feature_repo, feast_config, feature_store
from loopline.storage.file_helpers import sha256_file

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas as pd
    from feast import FeatureStore

    from loopline.features.fresh import FreshFeatures
    from loopline.features.offline_sink import OfflineSink
    from loopline.features.pit import ViewPart
    from loopline.features.streaming import StreamEvent

FEATURE_SERVICE = "fraud_detection_v1"
# Entity and request columns every lookup needs (join keys of the views + the request source).
ENTITY_COLUMNS = ("customer_id", "merchant_id", "device_id", "channel")
REQUEST_COLUMNS = ("amount", "event_epoch_s")
# Transaction columns the model uses directly (categoricals) or the gate needs (fairness groups).
PASSTHROUGH_COLUMNS = ("merchant_category", "merchant_country", "customer_age_band", "customer_region")
# Late data: each materialisation re-reads this much before the batch's interval.
MATERIALIZE_OVERLAP = timedelta(days=1)
ONE_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Entity rows per get_historical_features call of the Feast engine on Postgres (see _feast_join):
# with the planner's nested loops (the default) cost grows with rows² per query, so small chunks;
# with `enable_nestloop = off` for the Feast role (recommended, see feature_store.production.yaml)
# hash joins make it linear and large chunks only bound memory. Other stores: one query.
POSTGRES_CHUNK_ROWS = {"on": 250, "off": 20_000}
Engine = Literal["auto", "pandas", "feast"]


class FeatureRowsMismatch(RuntimeError):
    """Rows went missing or were duplicated between the entity rows and the features: never silent."""


def _epoch_seconds(timestamps: pd.Series) -> pd.Series:
    """UTC timestamps (any resolution) as float seconds since the epoch."""
    return timestamps.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64") / 1e6


def entity_rows(transactions: pd.DataFrame) -> pd.DataFrame:
    """Entity rows for point-in-time joins: each transaction joined 1 µs before it happened, so it sees
    the state after the previous transactions only — the same state serving sees when scoring it."""
    import pandas as pd

    timestamps = pd.to_datetime(transactions["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    rows = transactions[["transaction_id", *ENTITY_COLUMNS, "amount"]].copy()
    rows["event_epoch_s"] = _epoch_seconds(timestamps)
    rows["event_timestamp"] = timestamps - ONE_MICROSECOND
    return rows.reset_index(drop=True)


def service(store: FeatureStore, name: str = FEATURE_SERVICE):
    return store.get_feature_service(name)


def feature_names(store: FeatureStore, name: str = FEATURE_SERVICE) -> list[str]:
    """The feature columns the service returns, in a stable order."""
    return [
        f.name for projection in service(store, name).feature_view_projections for f in projection.features
    ]


def historical_features(
    store: FeatureStore,
    transactions: pd.DataFrame,
    name: str = FEATURE_SERVICE,
    engine: Engine = "auto",
    chunk_rows: int | None = None,
) -> pd.DataFrame:
    """Point-in-time features for each transaction; one output row per input row, or an error.

    ``engine="pandas"`` joins each view with ``merge_asof`` over the offline parquet tables
    (``features.pit``): linear in the rows. ``engine="feast"`` is Feast's own ``get_historical_features``
    (its duckdb join grows with entity rows x same-key rows within the TTL: ~1.8B rows at 1M
    transactions) — the reference the pandas engine is tested against, and the path for non-file
    offline stores (Postgres). Both return the same values, nulls and dtypes. ``"auto"`` (default)
    takes pandas when every view reads parquet, else Feast. The Feast engine runs over time-ordered
    chunks of ``chunk_rows`` entity rows (default: by offline store, see ``POSTGRES_CHUNK_ROWS``);
    on Postgres with ``enable_nestloop = off`` it took ~0.5 ms per row (50k rows in 26 s, 2 cores).
    """
    from loopline.features.pit import point_in_time_features, reads_files_only, service_plan

    entities = entity_rows(transactions)
    if entities["transaction_id"].duplicated().any():
        raise FeatureRowsMismatch("transaction ids repeat in the entity rows: deduplicate the input first")
    if engine == "auto":
        engine = "pandas" if reads_files_only(store, service_plan(store, name)) else "feast"
    if engine == "pandas":
        frame = point_in_time_features(store, entities, name)
    elif engine == "feast":
        frame = _feast_join(store, entities, name, chunk_rows or _feast_chunk_rows(store, len(entities)))
    else:
        raise ValueError(f"unknown engine {engine!r}: use 'pandas' or 'feast'")
    if len(frame) != len(entities) or not _same_ids(frame["transaction_id"], entities["transaction_id"]):
        raise FeatureRowsMismatch(
            f"the point-in-time join returned {len(frame)} rows for {len(entities)} transactions; "
            "rows must never be dropped or duplicated (check the offline store and the entity timestamps)"
        )
    return frame


def _feast_join(store: FeatureStore, entities: pd.DataFrame, name: str, chunk_rows: int) -> pd.DataFrame:
    """Feast's ``get_historical_features`` over time-ordered chunks of ``chunk_rows`` entity rows.

    Each row's point-in-time join is independent of the others, so chunks give the same rows; each
    chunk's query reads only the feature rows in [its first time - TTL, its last time]. Why chunks:
    Feast's SQL joins each entity row to every same-key row within the TTL and, on Postgres, the
    planner's row estimates for its CTEs are so low that it picks nested loops whose cost grows with
    the square of the entity rows per query (measured: 1,000 rows 5 s in one query).
    """
    import pandas as pd

    ordered = entities.sort_values("event_timestamp", kind="stable")
    features = service(store, name)
    parts = [
        store.get_historical_features(entity_df=ordered.iloc[i : i + chunk_rows], features=features).to_df()
        for i in range(0, max(len(ordered), 1), chunk_rows)
    ]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _feast_chunk_rows(store: FeatureStore, rows: int) -> int:
    """Rows per Feast query: for Postgres by the server's ``enable_nestloop`` for this user and
    database (role and database settings apply to Feast's sessions as to this one); else all."""
    if store.config.offline_store.type != "postgres":
        return max(rows, 1)
    import psycopg

    from loopline.features.offline_sink import postgres_conninfo

    with psycopg.connect(postgres_conninfo(store.config.offline_store)) as conn:
        (nestloop,) = conn.execute("SHOW enable_nestloop").fetchone()
    return POSTGRES_CHUNK_ROWS.get(nestloop, POSTGRES_CHUNK_ROWS["on"])


def _same_ids(got: pd.Series, expected: pd.Series) -> bool:
    """Whether ``got`` is a permutation of the (unique) ``expected`` ids; O(n) when the order is kept."""
    import pandas as pd

    got, expected = got.reset_index(drop=True), expected.reset_index(drop=True)
    if len(got) == len(expected) and got.astype(object).equals(expected.astype(object)):
        return True
    return pd.Index(got.astype(object)).sort_values().equals(pd.Index(expected.astype(object)).sort_values())


# --- materialisation --------------------------------------------------------------------------------


def _watermark_path(settings: Settings) -> Path:
    return settings.state.feast_dir / "materialized_until.json"


def _watermark(settings: Settings) -> dict[str, Any]:
    from loopline.storage.state_db import read_watermark

    return read_watermark(settings, "materialized_until", _watermark_path(settings))


def materialized_until(settings: Settings) -> datetime | None:
    """The newest event time the online store holds state for."""
    until = _watermark(settings).get("until")
    return datetime.fromisoformat(until) if until else None


def materialized_cursor(settings: Settings) -> int:
    """The ingest-ledger position up to which published batches are materialised."""
    return int(_watermark(settings).get("ledger_cursor", 0))


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
    """Compute the aggregates of transactions in [start, end) and load them into the online store.

    Offline: the rows of every transaction in [start, end) (``aggregates.refresh_aggregates``). Online:
    for every entity with a transaction in [start - ``MATERIALIZE_OVERLAP``, newest), the state after its
    newest known transaction — curated, or ``served`` (what the prediction service scored and logged but
    no batch has delivered yet: ``serving.prediction_log.answered_events``). So the batch corrects the
    online store (late and unscored transactions count) and never rolls it back: a fresher state written
    by serving is recomputed with the batch, not replaced by the batch's older one, and the store keeps a
    row unless the new one is at least as new (``streaming.OnlineStateWriter``). Loading an old interval
    late is therefore harmless too. ``ledger_cursor`` records which published batches this covers.
    """
    import pandas as pd

    from loopline.features.aggregates import refresh_aggregates
    from loopline.features.fresh import load_curated_window, write_latest_states
    from loopline.features.streaming import HISTORY_US, EventWindows, epoch_us
    from loopline.storage.state_db import write_watermark

    served = list(served)
    with _materialize_lock(settings):
        rows = refresh_aggregates(
            settings.state.curated, offline_sink(settings), pd.Timestamp(start), pd.Timestamp(end)
        )
        # Apply the definitions first (idempotent): a changed feature repo takes effect with the next run.
        store = apply_feature_repo(settings)
        until = max(end, materialized_until(settings) or end)
        online_start = start - MATERIALIZE_OVERLAP
        windows = EventWindows()
        history_start = online_start - timedelta(microseconds=HISTORY_US)
        load_curated_window(settings, windows, history_start, until)
        windows.add(served)
        touched = windows.touched(windows.events_since(epoch_us(online_start)))  # curated or served
        write_latest_states(store, windows, touched)
        newest = max(until, _EPOCH + timedelta(microseconds=windows.newest_us))
        cursor = max(ledger_cursor or 0, materialized_cursor(settings))
        write_watermark(
            settings,
            "materialized_until",
            {"until": until.isoformat(), "ledger_cursor": cursor},
            _watermark_path(settings),
        )
    return MaterializeResult(
        start=start.isoformat(),
        end=end.isoformat(),
        offline_rows=rows,
        online_window=(online_start.isoformat(), newest.isoformat()),
    )


def offline_sink(settings: Settings) -> OfflineSink:
    """Where the aggregates go: the offline store of the feature_store.yaml in use (parquet files in
    the state dir for the embedded duckdb store, tables in Postgres for the production one)."""
    from loopline.features.offline_sink import sink_for

    return sink_for(feast_config(settings).offline_store, settings.state.feast_offline_dir)


def curated_time_range(settings: Settings) -> tuple[datetime, datetime] | None:
    """[first event, last event + 1 µs) over the curated transactions, or None when there are none."""

    from loopline.data.ingest import visible_partition_files

    files = visible_partition_files(settings.state.curated / "transactions")
    if not files:
        return None
    from loopline.storage.files import parquet_dataset

    table = parquet_dataset(files).to_table(columns=["event_timestamp"])
    column = table.column(0)
    import pyarrow.compute as pc

    low, high = pc.min(column).as_py(), pc.max(column).as_py()
    return low.astimezone(UTC), high.astimezone(UTC) + ONE_MICROSECOND


# --- training sets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSetManifest:
    path: str
    content_hash: str
    rows: int
    labelled_rows: int
    fraud_rows: int
    label_rate: float | None
    start: str
    end: str
    labels_as_of: str
    feature_service: str
    feature_service_version: str
    features: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    created_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_labels(settings: Settings, as_of: datetime) -> pd.DataFrame:
    """Curated labels known at ``as_of`` (label delay honoured: later labels do not exist yet)."""
    import pandas as pd

    from loopline.data.ingest import visible_partition_files

    files = visible_partition_files(settings.state.curated / "labels")
    if not files:
        return pd.DataFrame(
            {
                "transaction_id": pd.Series(dtype="string"),
                "is_fraud": pd.Series(dtype="Int64"),
                "label_timestamp": pd.Series(dtype="datetime64[us, UTC]"),
            }
        )
    from loopline.storage.files import read_parquet

    labels = pd.concat([read_parquet(f) for f in files], ignore_index=True)
    labels = labels[labels["label_timestamp"] <= pd.Timestamp(as_of)]
    if labels["transaction_id"].duplicated().any():
        raise FeatureRowsMismatch("a transaction has more than one label in the curated store")
    return labels


def build_training_set(
    settings: Settings,
    out: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    labels_as_of: datetime | None = None,
    name: str = FEATURE_SERVICE,
) -> TrainingSetManifest:
    """Transactions in [start, end) with their labels (as known at ``labels_as_of``, default now) and
    point-in-time features → ``out`` (parquet) + ``out.manifest.json``. Every transaction yields one
    row; unlabelled ones keep an empty label so counts reconcile."""
    import pandas as pd

    from loopline.features.aggregates import read_curated_transactions

    span = curated_time_range(settings)
    if span is None:
        raise FeatureRowsMismatch("the curated store has no transactions yet: ingest some batches first")
    start, end = start or span[0], end or span[1]
    labels_as_of = labels_as_of or datetime.now(UTC)
    transactions = read_curated_transactions(settings.state.curated, pd.Timestamp(start), pd.Timestamp(end))
    stamps = transactions["event_timestamp"]
    transactions = transactions[(stamps >= pd.Timestamp(start)) & (stamps < pd.Timestamp(end))]
    if transactions.empty:
        raise FeatureRowsMismatch(f"no curated transactions in [{start}, {end})")
    store = feature_store(settings)
    features = historical_features(store, transactions, name)  # one row per transaction, ids unique
    feature_cols = feature_names(store, name)
    # Align by id (no merges: on 1M string ids their one-to-one checks cost seconds, and both sides
    # are already known unique — labels by read_labels, transactions by historical_features).
    transactions = transactions.reset_index(drop=True)
    ids = transactions["transaction_id"]
    labels = read_labels(settings, labels_as_of).set_index("transaction_id")[["is_fraud", "label_timestamp"]]
    features = features.reset_index(drop=True)
    if not features["transaction_id"].equals(ids):  # Feast's engine returns rows in its own order
        features = features.set_index("transaction_id").reindex(ids).reset_index()
    frame = pd.concat(
        [
            transactions[
                ["transaction_id", "event_timestamp", *ENTITY_COLUMNS, "amount", *PASSTHROUGH_COLUMNS]
            ],
            labels.reindex(ids).reset_index(drop=True),
            features[feature_cols],
        ],
        axis=1,
    )
    if len(frame) != len(transactions):
        raise FeatureRowsMismatch(f"{len(transactions)} transactions became {len(frame)} training rows")
    frame["is_fraud"] = frame["is_fraud"].astype("Int64")
    frame = frame.sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, out)
    digest = sha256_file(out)
    labelled_rows = int(frame["is_fraud"].notna().sum())
    fraud_rows = int(frame["is_fraud"].fillna(0).sum())
    svc = service(store, name)
    manifest = TrainingSetManifest(
        path=str(out),
        content_hash=digest,
        rows=len(frame),
        labelled_rows=labelled_rows,
        fraud_rows=fraud_rows,
        label_rate=round(fraud_rows / labelled_rows, 6) if labelled_rows else None,
        start=pd.Timestamp(start).isoformat(),
        end=pd.Timestamp(end).isoformat(),
        labels_as_of=labels_as_of.isoformat(),
        feature_service=svc.name,
        feature_service_version=svc.tags.get("version", ""),
        features=feature_cols,
        columns=list(frame.columns),
        created_at=datetime.now(UTC).isoformat(),
    )
    out.with_name(out.name + ".manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    return manifest


# --- online retrieval -------------------------------------------------------------------------------


# Value kinds returned as they are; any other (timestamps, lists, maps, JSON) goes through Feast's conversion.
_PLAIN_VALUE_KINDS = frozenset(
    {"double_val", "float_val", "int64_val", "int32_val", "string_val", "bool_val", "bytes_val"}
)


def _python_value(value: Any) -> Any:
    """A feature ``ValueProto`` as Python: what ``OnlineResponse.to_dict`` returns for it."""
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind in _PLAIN_VALUE_KINDS:
        return getattr(value, kind)
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value)


@dataclass(frozen=True)
class _ViewRead:
    """One view's online read: its part of the service plan, the Feast view and its join keys' value types."""

    part: ViewPart
    view: Any  # feast.FeatureView
    value_types: tuple[Any, ...]  # feast.ValueType of each join key, in ``part.keys`` order


class OnlineFeatures:
    """The lookup serving uses: online features of the same feature service, per transaction.

    The online store keeps each key's newest row forever, while a point-in-time join returns null
    for a row older than its view's TTL. So the lookup reads the views' features with their
    timestamps, nulls those that the offline rule (``pit.within_ttl``, as of the transaction time
    minus 1 µs, like ``entity_rows``) calls stale, and then runs each on-demand view's own
    transformation on what is left — the call Feast's online path makes (``transform_dict`` in
    python mode). Training and serving thus see the same values for the same transaction.

    The views are read through the online store's own ``online_read`` (Feast's provider interface, the
    call ``get_online_features`` makes per view) with the entity keys deduplicated per view, like Feast
    does; what is skipped is only Feast's generic response building (protobuf vectors, then dicts),
    about a quarter of the lookup's time in serving's hot path. A test pins the values identical to
    ``get_online_features``.
    """

    def __init__(self, settings: Settings, name: str = FEATURE_SERVICE) -> None:
        from feast.infra.provider import get_provider

        from loopline.features.pit import service_plan

        self.store = feature_store(settings)
        self.service = service(self.store, name)
        self.names = feature_names(self.store, name)
        self.plan = service_plan(self.store, name)
        self._provider = get_provider(self.store.config)
        # Feast's SQLite online store keeps event times in whole seconds; Redis keeps them exactly.
        self._stamp_precision_us = 1_000_000 if self.store.config.online_store.type == "sqlite" else 1
        self._reads = []
        for part in self.plan.views:
            view = self.store.get_feature_view(part.name)
            types = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
            self._reads.append(
                _ViewRead(part=part, view=view, value_types=tuple(types[k] for k in part.keys))
            )

    def _read(
        self, read: _ViewRead, transactions: list[dict[str, Any]]
    ) -> list[tuple[int | None, dict | None]]:
        """(feature time in ns, {feature: value}) of ``read``'s view per transaction; (None, None) when the
        store has no row for its key. Each distinct key is read once."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import python_values_to_proto_values

        part = read.part  # part.keys: join key -> transaction column
        index: dict[tuple[Any, ...], int] = {}
        positions = [
            index.setdefault(tuple(tx[c] for c in part.keys.values()), len(index)) for tx in transactions
        ]
        keys = list(index)
        values = [
            python_values_to_proto_values([key[j] for key in keys], value_type)
            for j, value_type in enumerate(read.value_types)
        ]
        entity_keys = [
            EntityKey(join_keys=list(part.keys), entity_values=[column[i] for column in values])
            for i in range(len(keys))
        ]
        rows = self._provider.online_read(self.store.config, read.view, entity_keys, list(part.features))
        if len(rows) != len(keys):
            raise FeatureRowsMismatch(
                f"the online store returned {len(rows)} rows for {len(keys)} keys of view {read.view.name!r}"
            )
        found: list[tuple[int | None, dict | None]] = []
        for stamp, features in rows:
            if features is None:
                found.append((None, None))
                continue
            stamp = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
            found.append(
                (
                    (stamp - _EPOCH) // ONE_MICROSECOND * 1000,
                    {n: _python_value(features[n]) if n in features else None for n in part.features},
                )
            )
        return [found[p] for p in positions]

    def stored_times(self, transactions: list[dict[str, Any]]) -> list[list[int | None]]:
        """Per transaction, the time (ns) of the stored row of each view (None: no row)."""
        per_view = [[ns for ns, _ in self._read(read, transactions)] for read in self._reads]
        return (
            [list(stamps) for stamps in zip(*per_view, strict=True)]
            if per_view
            else [[] for _ in transactions]
        )

    def lookup(
        self, transactions: list[dict[str, Any]], fresh: FreshFeatures | None = None
    ) -> list[dict[str, Any]]:
        """Features for each transaction (dicts with the entity columns, amount and event_timestamp).

        ``fresh``: the serving process's recent events (``features.fresh``). When they hold the whole history
        the rows depend on (``fresh.computes``), the rows are computed from them and the store is not read;
        otherwise, where they are newer than the stored row of an entity (the same batch, another replica's
        last request), their state replaces it."""
        import pandas as pd
        import pyarrow as pa

        from loopline.features.pit import odfv_inputs, within_ttl

        micros = []
        for tx in transactions:
            stamp = pd.Timestamp(tx["event_timestamp"])
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
            micros.append(stamp.value // 1000)  # microseconds, as entity_rows floors them
        as_of_ns = [(us - 1) * 1000 for us in micros]  # joined 1 µs before the event, as offline
        columns: dict[str, list[Any]] = {}
        computed = fresh is not None and fresh.computes(min(micros, default=0) - 1)
        for read in self._reads:
            if computed:  # the serving process holds every event these rows depend on: no store read
                rows = _computed(fresh, read.part.name, transactions, micros)
            else:
                rows = self._read(read, transactions)
                if fresh is not None:
                    rows = _overlay(
                        fresh, read.part.name, transactions, rows, micros, self._stamp_precision_us
                    )
            live = [
                features is not None and within_ttl(ns, at, read.part.ttl)
                for (ns, features), at in zip(rows, as_of_ns, strict=True)
            ]
            for feature in read.part.features:
                columns[feature] = [
                    features[feature] if ok else None for (_, features), ok in zip(rows, live, strict=True)
                ]
        request = {
            "amount": [float(tx["amount"]) for tx in transactions],
            "event_epoch_s": [us / 1e6 for us in micros],
        }
        for column in self.plan.request_fields:
            columns[column] = request[column] if column in request else [tx[column] for tx in transactions]
        for odfv in self.plan.on_demand:
            inputs = {n: columns[n] for n in (*odfv_inputs(odfv), *self.plan.request_fields)}
            if odfv.mode == "python":
                out = odfv.transform_dict(inputs)
            else:
                out = odfv.transform_arrow(pa.table(inputs), False).to_pydict()
            columns.update({f.name: out[f.name] for f in odfv.features})
        return [{name: columns[name][i] for name in self.names} for i in range(len(transactions))]


def _computed(
    fresh: FreshFeatures, view: str, transactions: list[dict[str, Any]], micros: list[int]
) -> list[tuple[int | None, dict | None]]:
    """Each transaction's row of ``view`` computed from the serving process's events (``fresh.computes``)."""
    from loopline.features.fresh import table_key

    out: list[tuple[int | None, dict | None]] = []
    for tx, us in zip(transactions, micros, strict=True):
        state = fresh.state(view, table_key(view, tx), us - 1)
        out.append((None, None) if state is None else (state[0] * 1000, state[1]))
    return out


def _overlay(
    fresh: FreshFeatures,
    view: str,
    transactions: list[dict[str, Any]],
    rows: list[tuple[int | None, dict | None]],
    micros: list[int],
    stamp_precision_us: int,
) -> list[tuple[int | None, dict | None]]:
    """``rows`` with the fresh state wherever it is newer than the stored row (see ``FreshFeatures.fresher``)."""
    from loopline.features.fresh import KEEP, table_key

    out = []
    for tx, (stored_ns, features), us in zip(transactions, rows, micros, strict=True):
        state = fresh.fresher(
            view,
            table_key(view, tx),
            us - 1,
            None if stored_ns is None else stored_ns // 1000,
            stamp_precision_us,
        )
        if state is KEEP:
            out.append((stored_ns, features))
        elif state is None:
            out.append((None, None))
        else:
            out.append((state[0] * 1000, state[1]))
    return out


# --- training/serving skew --------------------------------------------------------------------------


@dataclass(frozen=True)
class SkewReport:
    compared: int
    mismatches: int
    features: int
    mismatched_features: dict[str, int]
    examples: list[dict[str, Any]]
    at: str
    newer_online: int = 0  # probes skipped: serving already wrote a newer state (see check_skew)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _missing(value: Any) -> bool:
    import math

    return value is None or (isinstance(value, float) and math.isnan(value))


def _same(a: Any, b: Any) -> bool:
    import math

    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    return a == b


def check_skew(settings: Settings, sample: int = 200, seed: int = 0) -> SkewReport:
    """Online features vs offline point-in-time features for the same entities at the same time.

    Samples the newest transaction of ``sample`` customers and asks both stores for the features a
    transaction with the same entities and amount would get right after everything materialised. Probes
    whose online rows are newer than that (fresh features: serving has written later transactions, not
    ingested yet) are not comparable and are counted in ``newer_online``; ``check-served`` judges those.
    """
    import pandas as pd

    from loopline.features.aggregates import read_curated_transactions
    from loopline.features.streaming import epoch_us

    until = materialized_until(settings)
    if until is None:
        raise FeatureRowsMismatch("nothing is materialised yet: run `loopline features materialize` first")
    transactions = read_curated_transactions(
        settings.state.curated, pd.Timestamp(until) - pd.Timedelta(days=30), pd.Timestamp(until)
    )
    latest = transactions.sort_values("event_timestamp").groupby("customer_id", observed=True).tail(1)
    probe = latest.sample(n=min(sample, len(latest)), random_state=seed).copy()
    at = pd.Timestamp(until)
    probe["event_timestamp"] = at + pd.Timedelta(microseconds=1)  # joined at `until`: after everything
    probe["transaction_id"] = [f"skew_probe_{i}" for i in range(len(probe))]
    online = OnlineFeatures(settings)
    records = probe.to_dict("records")
    until_ns = epoch_us(until) * 1000
    current = [all(ns is None or ns <= until_ns for ns in stamps) for stamps in online.stored_times(records)]
    newer_online = len(current) - sum(current)
    probe = probe[current]
    online_rows = online.lookup([r for r, ok in zip(records, current, strict=True) if ok])
    offline = historical_features(online.store, probe).set_index("transaction_id")
    mismatched: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    bad_rows = 0
    for tx, online_row in zip(probe["transaction_id"], online_rows, strict=True):
        offline_row = offline.loc[tx]
        diffs = {
            n: (online_row[n], offline_row[n])
            for n in online.names
            if not _same(online_row[n], _py(offline_row[n]))
        }
        if diffs:
            bad_rows += 1
            for n in diffs:
                mismatched[n] = mismatched.get(n, 0) + 1
            if len(examples) < 5:
                examples.append(
                    {"transaction": tx, "diffs": {n: [str(a), str(b)] for n, (a, b) in diffs.items()}}
                )
    return SkewReport(
        compared=len(probe),
        mismatches=bad_rows,
        features=len(online.names),
        mismatched_features=mismatched,
        examples=examples,
        at=at.isoformat(),
        newer_online=newer_online,
    )


def _py(value: Any) -> Any:
    import pandas as pd

    if value is pd.NA or value is None:
        return None
    return value.item() if hasattr(value, "item") else value
