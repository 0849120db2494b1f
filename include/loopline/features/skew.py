"""The training/serving skew check: online features vs offline point-in-time features for the same
entities at the same instant (``loopline features check-skew``, the demo).

A check over both halves, so apart from each: it imports the online lookup and the offline join, and
neither imports it. ``monitoring.served_check`` reuses its value comparison (``_same``, ``_py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

from loopline.features.curated import read_curated_event_frame
from loopline.features.definitions import definitions_for
from loopline.features.feature_service import FeatureRowsMismatch
from loopline.features.historical import historical_features
from loopline.features.online import OnlineFeatures
from loopline.features.watermark import materialized_until

if TYPE_CHECKING:
    from loopline.config import Settings


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
    return bool(a == b)


def check_skew(settings: Settings, sample: int = 200, seed: int = 0) -> SkewReport:
    """Online features vs offline point-in-time features for the same entities at the same time.

    Samples the newest transaction of ``sample`` customers and asks both stores for the features a
    transaction with the same entities and amount would get right after everything materialised. Probes
    whose online rows are newer than that (fresh features: serving has written later transactions, not
    ingested yet) are not comparable and are counted in ``newer_online``; ``check-served`` judges those.
    """
    import pandas as pd

    from loopline.features.streaming import epoch_us

    until = materialized_until(settings)
    if until is None:
        raise FeatureRowsMismatch("nothing is materialised yet: run `loopline features materialize` first")
    use_case, definitions = definitions_for(settings)
    ids, time = use_case.id_column, use_case.time_column
    unit = use_case.unit_column or definitions.entity_columns[0]
    online = OnlineFeatures(settings)
    # Probe entities whose newest event lies within the views' longest TTL: an older entity's features
    # have expired in both stores, so comparing them proves nothing. Views without a TTL never expire.
    ttls = [view.ttl for view in online.store.list_feature_views()]
    lookback = max(ttl for ttl in ttls if ttl) if ttls and all(ttls) else None
    events = read_curated_event_frame(
        settings.state.curated,
        None if lookback is None else pd.Timestamp(until) - lookback,
        pd.Timestamp(until),
        use_case=use_case,
    )
    latest = events.sort_values(time).groupby(unit, observed=True).tail(1)
    probe = latest.sample(n=min(sample, len(latest)), random_state=seed).copy()
    at = pd.Timestamp(until)
    probe[time] = at + pd.Timedelta(microseconds=1)  # joined at `until`: after everything
    probe[ids] = [f"skew_probe_{i}" for i in range(len(probe))]
    records = cast("list[dict[str, Any]]", probe.to_dict("records"))
    until_ns = epoch_us(until) * 1000
    current = [all(ns is None or ns <= until_ns for ns in stamps) for stamps in online.stored_times(records)]
    newer_online = len(current) - sum(current)
    probe = probe[current]
    online_rows = online.lookup([r for r, ok in zip(records, current, strict=True) if ok])
    offline = historical_features(online.store, probe).set_index(ids)
    mismatched: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    bad_rows = 0
    for tx, online_row in zip(probe[ids], online_rows, strict=True):
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
