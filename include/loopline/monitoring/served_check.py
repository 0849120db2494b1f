"""Training/serving skew on live traffic: the features serving scored with vs the offline point-in-time ones.

``check_skew`` (``features.skew``) compares the online and the offline store *now*, for probe
transactions; it cannot see what serving actually used for the traffic it answered (a stale online store,
a late materialisation, a streaming update that lags). ``check_served`` can: every answered prediction is
logged with the transaction as received (``inputs``) and the online features it was scored with
(``features``). Once a transaction has been ingested into the curated store and its time is covered by the
offline aggregate tables (``event_timestamp < materialized_until``), its point-in-time features — the
ones training uses for it, joined at its time minus 1 µs — are what serving should have used. A sample of
such transactions is recomputed offline and compared feature by feature with what was logged.

Only answered predictions count (``champion`` and ``challenger``; a ``shadow`` row repeats a transaction
that was answered by another variant), one per transaction id, the first answered. Served transactions
that are not ingested or not materialised yet are ``waiting``: not judged now, judged by a later check.
A served transaction whose inputs differ from the recorded one (another time, entity or amount: a replay
re-stamped to the moment it was sent, as ``loopline traffic`` does) was not scored as that transaction,
so it is counted in ``inputs_differ`` and not compared. A check that compares nothing says why
(``judged: false`` and ``reason``); it never passes silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from loopline.config import Settings
from loopline.serving.prediction_log import EVENT_ID_COLUMN

if TYPE_CHECKING:
    import pandas as pd

# Variants whose predictions were answered; shadow scoring is logged too but duplicates a transaction.
ANSWERED_VARIANTS = ("champion", "challenger")
WORST_FEATURES = 5
EXAMPLES = 5


@dataclass(frozen=True)
class ServedSkewReport:
    """One check. ``mismatches``: compared transactions with at least one feature differing from the offline
    point-in-time value; ``worst_features``: feature -> mismatching transactions (top ``WORST_FEATURES``,
    most first); ``examples``: ``{event_id, feature, served, offline}``."""

    judged: bool
    reason: str
    since: str | None
    until: str | None
    served: int  # distinct answered transactions in [since, until)
    waiting: int  # not yet ingested into the curated store, or at/after materialized_until
    eligible: int  # ingested and materialised: the population the sample is drawn from
    sampled: int
    inputs_differ: int  # sampled, but served with other inputs than the recorded transaction: not compared
    compared: int
    mismatches: int
    mismatch_rate: float | None
    features: int
    worst_features: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    materialized_until: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def exceeds(self, max_mismatch_rate: float) -> bool:
        """Judged, and more than ``max_mismatch_rate`` of the compared events mismatch."""
        return self.judged and self.mismatch_rate is not None and self.mismatch_rate > max_mismatch_rate

    def summary(self, max_mismatch_rate: float | None = None) -> str:
        """One line: the numbers, the worst features, and the verdict against the limit (when given)."""
        if not self.judged:
            return f"served features not judged: {self.reason}"
        line = (
            f"served features: {self.mismatches}/{self.compared} compared events mismatch "
            f"({self.mismatch_rate:.2%})"
        )
        if max_mismatch_rate is not None:
            above = self.exceeds(max_mismatch_rate)
            line += f" {'>' if above else '<='} limit {max_mismatch_rate:.2%}{' SKEW' if above else ''}"
        if self.worst_features:
            line += "; worst: " + ", ".join(f"{name} {count}" for name, count in self.worst_features.items())
        if self.waiting:
            line += f"; {self.waiting} waiting for ingest/materialisation"
        return line


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def answered(log_rows: pd.DataFrame) -> pd.Series:
    """Transaction id (as text) by log row of the first answered prediction of each transaction (rows oldest
    first, as ``PredictionLog.read`` orders them). Touches no JSON column."""
    light = log_rows.loc[log_rows["variant"].isin(ANSWERED_VARIANTS), EVENT_ID_COLUMN].astype(str)
    return light[~light.duplicated(keep="first")]


def _curated_files(settings: Settings) -> list[Any]:
    from loopline.data.ingest import curated_dir, use_case_of, visible_partition_files

    return visible_partition_files(curated_dir(settings, use_case_of(settings).batch_names["events"]))


def curated_by_id(settings: Settings, ids: list[str], columns: list[str] | None = None) -> pd.DataFrame:
    """The curated transactions whose id is in ``ids`` (``columns`` of the contract, or all), in the
    contract's dtypes. Reads only those columns and keeps only those rows (a scan of the id column)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    from loopline.data.ingest import use_case_of
    from loopline.storage.files import parquet_dataset

    use_case = use_case_of(settings)
    wanted = {
        c: d
        for c, d in use_case.event_columns.items()
        if columns is None or c in columns or c == use_case.id_column
    }
    files = _curated_files(settings)
    if not files or not ids:
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in wanted.items()})
    table = parquet_dataset(files).to_table(
        columns=list(wanted), filter=ds.field(use_case.id_column).isin(pa.array(ids, type=pa.string()))
    )
    frame = table.to_pandas()
    return pd.DataFrame({c: frame[c].astype(d) for c, d in wanted.items()})


@dataclass(frozen=True)
class _Identity:
    """The event fields that decide its features (the use case's time column, the feature views' entity
    columns and the on-demand views' request columns): where served and recorded disagree, the served event
    was not the recorded one (a replay re-stamped when it was sent) and is not comparable."""

    time_column: str
    entity_columns: tuple[str, ...]
    request_columns: tuple[str, ...]

    def matches(self, inputs: dict[str, Any], recorded: pd.Series) -> bool:
        """Same time (to the µs), entities (as text) and request values (as numbers)."""
        import math

        import pandas as pd

        try:
            served_at = pd.Timestamp(inputs[self.time_column])
        except (KeyError, TypeError, ValueError):
            return False
        served_at = served_at.tz_localize("UTC") if served_at.tzinfo is None else served_at.tz_convert("UTC")
        if served_at.value // 1000 != pd.Timestamp(recorded[self.time_column]).value // 1000:
            return False
        if any(str(inputs.get(c)) != str(recorded[c]) for c in self.entity_columns):
            return False
        for column in self.request_columns:
            value: Any = inputs.get(column)  # None: the TypeError below
            try:
                if not math.isclose(float(value), float(recorded[column]), rel_tol=1e-9, abs_tol=1e-9):
                    return False
            except (TypeError, ValueError):
                return False
        return True


def _not_judged(reason: str, **counts: Any) -> ServedSkewReport:
    base = {
        "served": 0,
        "waiting": 0,
        "eligible": 0,
        "sampled": 0,
        "inputs_differ": 0,
        "compared": 0,
        "mismatches": 0,
        "mismatch_rate": None,
        "features": 0,
    }
    return ServedSkewReport(judged=False, reason=reason, **{**base, **counts})


def check_served(
    settings: Settings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    sample: int = 500,
    seed: int = 0,
    log_rows: pd.DataFrame | None = None,
) -> ServedSkewReport:
    """Served features vs offline point-in-time features for up to ``sample`` answered transactions of
    [since, until) that are ingested and materialised (seeded sample). ``log_rows``: the prediction log's
    rows of that window when the caller has read them already (``PredictionLog.read``), else they are read.
    JSON is parsed only for the sampled rows."""
    import json

    import pandas as pd

    from loopline.features.definitions import definitions_for
    from loopline.features.feature_service import feature_names
    from loopline.features.historical import historical_features
    from loopline.features.skew import _py, _same
    from loopline.features.watermark import materialized_until
    from loopline.platform.feast_store import feature_store

    if sample < 1:
        raise ValueError(f"sample must be at least 1, not {sample}")
    if log_rows is None:
        from loopline.serving.prediction_log import open_prediction_log

        log_rows = open_prediction_log(settings, read_only=True).read(since=since, until=until)
    window = {"since": _iso(since), "until": _iso(until)}
    if log_rows.empty:
        return _not_judged("no answered prediction in the window", **window)
    served = answered(log_rows)
    if served.empty:
        return _not_judged("no answered prediction in the window (shadow rows only)", **window)
    use_case, definitions = definitions_for(settings)
    id_column, time_column = use_case.id_column, use_case.time_column
    identity = _Identity(time_column, definitions.entity_columns, definitions.request_columns)
    covered = materialized_until(settings)
    recorded = curated_by_id(settings, served.tolist(), [id_column, time_column])
    counts: dict[str, Any] = {**window, "served": len(served), "materialized_until": _iso(covered)}
    if covered is None:
        return _not_judged(
            f"nothing is materialised yet: all {len(served)} served events wait",
            waiting=len(served),
            **counts,
        )
    ready = recorded.loc[recorded[time_column] < pd.Timestamp(covered), id_column].astype(str)
    eligible = served[served.isin(set(ready))]
    counts.update(waiting=len(served) - len(eligible), eligible=len(eligible))
    if eligible.empty:
        return _not_judged(
            f"no served transaction is ingested and materialised yet ({counts['waiting']} waiting; "
            f"materialised until {covered.isoformat()})",
            **counts,
        )
    picked = eligible.sample(n=min(sample, len(eligible)), random_state=seed).sort_index()
    ids = picked.tolist()
    rows = curated_by_id(settings, ids).drop_duplicates(subset=id_column)
    rows = rows.set_index(rows[id_column].astype(str))
    logged = log_rows.loc[picked.index, ["inputs", "features"]]  # the only rows whose JSON is read
    comparable: list[tuple[str, dict[str, Any]]] = []
    for tx_id, inputs, features in zip(ids, logged["inputs"], logged["features"], strict=True):
        if identity.matches(json.loads(inputs), rows.loc[tx_id]):
            comparable.append((tx_id, json.loads(features)))
    counts.update(sampled=len(picked), inputs_differ=len(picked) - len(comparable))
    if not comparable:
        return _not_judged(
            f"all {len(picked)} sampled served events differ from the recorded ones in time, "
            f"entities or {', '.join(identity.request_columns) or 'request values'} (re-stamped replays?): "
            "nothing to compare",
            **counts,
        )
    store = feature_store(settings)
    names = feature_names(store)
    curated = rows.loc[[tx_id for tx_id, _ in comparable]].reset_index(drop=True)
    offline = historical_features(store, curated).set_index(id_column)
    offline.index = offline.index.astype(str)
    per_feature: Counter[str] = Counter()
    diffs: list[tuple[str, str, Any, Any]] = []  # (transaction, feature, served, offline)
    bad_rows = 0
    for tx_id, served_row in comparable:
        expected = offline.loc[tx_id]
        differing = [
            (n, served_row.get(n), _py(expected[n]))
            for n in names
            if not _same(served_row.get(n), _py(expected[n]))
        ]
        if differing:
            bad_rows += 1
            per_feature.update(n for n, _, _ in differing)
            diffs.extend((tx_id, n, s, o) for n, s, o in differing)
    worst = dict(per_feature.most_common(WORST_FEATURES))
    return ServedSkewReport(
        judged=True,
        reason="",
        **counts,
        compared=len(comparable),
        mismatches=bad_rows,
        mismatch_rate=bad_rows / len(comparable),
        features=len(names),
        worst_features=worst,
        examples=_examples(diffs, list(worst)),
    )


def _examples(diffs: list[tuple[str, str, Any, Any]], worst: list[str]) -> list[dict[str, Any]]:
    """Up to ``EXAMPLES`` differences, taken in turn from each of the worst features, each from a transaction
    not shown yet where there is one (oldest first)."""
    queues = {name: [d for d in diffs if d[1] == name] for name in worst}
    out: list[dict[str, Any]] = []
    shown: set[str] = set()
    while len(out) < EXAMPLES and any(queues.values()):
        for name in worst:
            queue = queues[name]
            if not queue or len(out) >= EXAMPLES:
                continue
            pick = next((d for d in queue if d[0] not in shown), queue[0])
            queue.remove(pick)
            tx_id, feature, served, offline = pick
            shown.add(tx_id)
            out.append(
                {
                    "event_id": tx_id,
                    "feature": feature,
                    "served": _plain(served),
                    "offline": _plain(offline),
                }
            )
    return out


def _plain(value: Any) -> Any:
    """A JSON-safe value: NaN as None, numpy scalars as Python ones."""
    import math

    if isinstance(value, float) and math.isnan(value):
        return None
    return value
