"""The online lookup serving uses (``OnlineFeatures``): the feature service's features per transaction,
read from the online store or computed from the serving process's fresh events (``features.fresh``).

Serving's hot path. It shares with training only the feature service and the TTL rule (``features.pit``),
not the offline join nor the materialiser, so a serving process imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from loopline.features.definitions import EVENT_EPOCH_S
from loopline.features.feature_service import ONE_MICROSECOND, FeatureRowsMismatch, feature_names, service
from loopline.platform.feast_store import feature_store

if TYPE_CHECKING:
    from loopline.config import Settings
    from loopline.features.fresh import FreshFeatures
    from loopline.features.pit import ViewPart

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# One view's row for a transaction: (its time in ns, {feature: value}); (None, None) when there is none.
_Row = tuple[int | None, dict[str, Any] | None]
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

    def __init__(self, settings: Settings, name: str | None = None) -> None:
        from feast.infra.provider import get_provider

        from loopline.features.definitions import definitions_for
        from loopline.features.pit import service_plan

        use_case, definitions = definitions_for(settings)
        name = name or definitions.service
        self._time_column = use_case.time_column
        # Request fields as the offline rows hold them: the contract's float columns as floats (a JSON 12 is 12.0).
        self._floats = {c for c, dtype in use_case.event_columns.items() if dtype.startswith("float")}
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

    def _read(self, read: _ViewRead, events: list[dict[str, Any]]) -> list[_Row]:
        """(feature time in ns, {feature: value}) of ``read``'s view per transaction; (None, None) when the
        store has no row for its key. Each distinct key is read once."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import python_values_to_proto_values

        part = read.part  # part.keys: join key -> transaction column
        index: dict[tuple[Any, ...], int] = {}
        positions = [index.setdefault(tuple(tx[c] for c in part.keys.values()), len(index)) for tx in events]
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
        found: list[_Row] = []
        for stamp, features in rows:
            if features is None:
                found.append((None, None))
                continue
            stamp = cast(datetime, stamp)  # None only where features are None
            stamp = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
            found.append(
                (
                    (stamp - _EPOCH) // ONE_MICROSECOND * 1000,
                    {n: _python_value(features[n]) if n in features else None for n in part.features},
                )
            )
        return [found[p] for p in positions]

    def stored_times(self, events: list[dict[str, Any]]) -> list[list[int | None]]:
        """Per transaction, the time (ns) of the stored row of each view (None: no row)."""
        per_view = [[ns for ns, _ in self._read(read, events)] for read in self._reads]
        return [list(stamps) for stamps in zip(*per_view, strict=True)] if per_view else [[] for _ in events]

    def lookup(
        self, events: list[dict[str, Any]], fresh: FreshFeatures | None = None
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
        for tx in events:
            stamp = pd.Timestamp(tx[self._time_column])
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
            micros.append(stamp.value // 1000)  # microseconds, as entity_rows floors them
        as_of_ns = [(us - 1) * 1000 for us in micros]  # joined 1 µs before the event, as offline
        columns: dict[str, list[Any]] = {}
        computed = fresh is not None and fresh.computes(min(micros, default=0) - 1)
        for read in self._reads:
            # computed: the serving process holds every event these rows depend on, no store read
            if computed and fresh is not None:
                rows = _computed(fresh, read.part.name, events, micros)
            else:
                rows = self._read(read, events)
                if fresh is not None:
                    rows = _overlay(fresh, read.part.name, events, rows, micros, self._stamp_precision_us)
            live = [
                features is not None and ns is not None and within_ttl(ns, at, read.part.ttl)
                for (ns, features), at in zip(rows, as_of_ns, strict=True)
            ]
            for feature in read.part.features:
                columns[feature] = [
                    features[feature] if ok and features is not None else None
                    for (_, features), ok in zip(rows, live, strict=True)
                ]
        for column in self.plan.request_fields:
            columns[column] = (
                [us / 1e6 for us in micros]
                if column == EVENT_EPOCH_S
                else [float(tx[column]) if column in self._floats else tx[column] for tx in events]
            )
        for odfv in self.plan.on_demand:
            inputs = {n: columns[n] for n in (*odfv_inputs(odfv), *self.plan.request_fields)}
            if odfv.mode == "python":
                out = odfv.transform_dict(inputs)
            else:
                out = odfv.transform_arrow(pa.table(inputs), False).to_pydict()
            columns.update({f.name: out[f.name] for f in odfv.features})
        return [{name: columns[name][i] for name in self.names} for i in range(len(events))]


def _computed(fresh: FreshFeatures, view: str, events: list[dict[str, Any]], micros: list[int]) -> list[_Row]:
    """Each transaction's row of ``view`` computed from the serving process's events (``fresh.computes``)."""
    from loopline.features.fresh import table_key

    out: list[_Row] = []
    for tx, us in zip(events, micros, strict=True):
        state = fresh.state(view, table_key(view, tx), us - 1)
        out.append((None, None) if state is None else (state[0] * 1000, state[1]))
    return out


def _overlay(
    fresh: FreshFeatures,
    view: str,
    events: list[dict[str, Any]],
    rows: list[_Row],
    micros: list[int],
    stamp_precision_us: int,
) -> list[_Row]:
    """``rows`` with the fresh state wherever it is newer than the stored row (see ``FreshFeatures.fresher``)."""
    from loopline.features.fresh import KEEP, table_key

    out = []
    for tx, (stored_ns, features), us in zip(events, rows, micros, strict=True):
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
