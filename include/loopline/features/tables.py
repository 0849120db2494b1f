"""The offline aggregate tables behind a use case's Feast feature views (the contract between its aggregate
computation, ``feature_repo/<use case>/`` and the training-set builder).

Semantics, for every table: one row per event, keyed by the table's entity columns, stamped with the
event's time (column ``event_timestamp``, whatever the use case calls it), holding the state **after** that
event — windows are ``(t - w, t]`` and include it. A training row for an event at ``T`` joins point-in-time
at ``T - 1 µs``, so it sees the state after the previous events only (nothing from itself or the future),
which is exactly what the online store holds when the event is scored. No leak, no skew.

Every table defined registers itself by name (``KNOWN``), so the offline stores (``offline_sink``) and the
fresh features' online writer (``features.streaming``) accept any use case's tables. The tables themselves are
the use case's (``FeatureDefinitions.tables``), e.g. ``loopline.usecases.fraud.features.tables``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# The time column of every aggregate table (Feast's timestamp_field) and of the entity rows joined to them.
TIMESTAMP: Final = "event_timestamp"
KNOWN: dict[str, AggregateTable] = {}  # every table defined so far, by name


@dataclass(frozen=True)
class AggregateTable:
    name: str
    keys: tuple[str, ...]
    features: dict[str, str]  # feature column -> pandas dtype

    def __post_init__(self) -> None:
        KNOWN[self.name] = self

    @property
    def columns(self) -> list[str]:
        return [*self.keys, TIMESTAMP, *self.features]
