"""What a use case tells the feature layer about its features: :class:`FeatureDefinitions`.

The platform keeps the Feast machinery (the point-in-time join 1 µs before each event, materialisation, the
watermark, the online lookup, the skew check, the offline stores); a use case says which Feast FeatureService
its model reads (defined in ``feature_repo/<use case>/``), which of its event columns the views join on and
the on-demand views read, which it keeps in training rows, which its model may take as they are, and how its
offline aggregate tables are computed from its curated events, and (optionally) how serving keeps them fresh
at scoring time (``streaming.StreamingFeatures``). ``UseCase.features`` names the object
(``"package.module:attribute"``); :func:`feature_definitions` loads and checks it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loopline.config.use_case import UseCase, UseCaseError, load_use_case
from loopline.features.tables import AggregateTable

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
    from feast import FeatureStore

    from loopline.config import Settings
    from loopline.features.streaming import StreamingFeatures

# The request field the platform adds to every point-in-time and online row: the event's time in seconds.
EVENT_EPOCH_S = "event_epoch_s"

# (curated dir, start, end) -> table name -> the rows of the events in [start, end) (``tables.py``'s semantics),
# computed with whatever history before ``start`` the windows need, read from the curated store.
OfflineComputation = Callable[["Path", "pd.Timestamp", "pd.Timestamp"], Mapping[str, "pd.DataFrame"]]


@dataclass(frozen=True)
class FeatureDefinitions:
    """One use case's features, as the platform reads them.

    ``service``: the Feast FeatureService its training sets, online lookups and skew checks ask for.
    ``entity_columns``: event columns the feature views join on. ``request_columns``: event columns the
    on-demand views read (the platform adds ``event_epoch_s``, the event time). ``passthrough_columns``:
    event columns kept in training rows as they are (model categoricals, fairness groups). ``model_inputs``:
    the event's own columns the model may take (next to the service's features). ``tables``: the aggregate
    tables behind its feature views, ``compute`` how their rows are computed from curated events.
    ``streaming``: how serving keeps its tables fresh at scoring time (``features.streaming``: how an event
    becomes a stream event, and per table its keys, running totals and row); None: features are as of the
    last materialisation.
    """

    service: str
    entity_columns: tuple[str, ...]
    request_columns: tuple[str, ...]
    passthrough_columns: tuple[str, ...]
    model_inputs: tuple[str, ...]
    tables: tuple[AggregateTable, ...]
    compute: OfflineComputation
    streaming: StreamingFeatures | None = None

    def event_columns(self, use_case: UseCase) -> list[str]:
        """The event columns a training row keeps: id, time, entity, request and passthrough columns (once each)."""
        columns = (
            use_case.id_column,
            use_case.time_column,
            *self.entity_columns,
            *self.request_columns,
            *self.passthrough_columns,
        )
        return list(dict.fromkeys(columns))


def feature_definitions(use_case: UseCase) -> FeatureDefinitions:
    """The use case's :class:`FeatureDefinitions`, checked against its event columns."""
    found = use_case.load_features()
    if not isinstance(found, FeatureDefinitions):
        raise UseCaseError(
            f"use case {use_case.name!r}: {use_case.features} is not a "
            "loopline.features.definitions.FeatureDefinitions"
        )
    if found.streaming is not None:
        from loopline.features.streaming import StreamingFeatures

        if not isinstance(found.streaming, StreamingFeatures):
            raise UseCaseError(
                f"use case {use_case.name!r}: its features' streaming is not a "
                "loopline.features.streaming.StreamingFeatures"
            )
        outside = [t.name for t in found.streaming.tables if t.table not in found.tables]
        if outside:
            raise UseCaseError(
                f"use case {use_case.name!r}: streaming table(s) {outside} are not among its features' tables"
            )
    unknown = [
        c
        for c in (
            *found.entity_columns,
            *found.request_columns,
            *found.passthrough_columns,
            *found.model_inputs,
        )
        if c not in use_case.event_columns
    ]
    if unknown:
        raise UseCaseError(
            f"use case {use_case.name!r}: its features name column(s) {sorted(set(unknown))} that are not in "
            "its event_columns"
        )
    return found


def definitions_for(settings: Settings) -> tuple[UseCase, FeatureDefinitions]:
    """The settings' use case and its feature definitions."""
    use_case = load_use_case(settings.use_case)
    return use_case, feature_definitions(use_case)


def use_case_of(store: FeatureStore) -> UseCase:
    """The use case whose Feast repo ``store`` opened (its ``UseCase.feature_repo``, or ``feature_repo/<use case>/``),
    else the configured one."""
    from pathlib import Path

    from loopline.config import Settings
    from loopline.config.use_case import available_use_cases

    def opened(use_case: UseCase) -> bool:
        own = use_case.feature_repo
        return own.resolve() == repo if own is not None else repo.name == use_case.name

    repo = Path(str(store.repo_path)).resolve()
    configured = load_use_case(Settings().use_case)
    if opened(configured):
        return configured
    for name in available_use_cases():
        try:
            if opened(other := load_use_case(name)):
                return other
        except UseCaseError:
            continue  # a broken use case installed beside this one is not this store's
    return configured
