"""Point-in-time (historical) features: each event's features as of 1 µs before it, one row per row.

The offline half of the feature service, apart from the online lookup (``features.online``) because
serving never joins offline: training sets (``features.training_sets``) and the skew check call
``historical_features``. Two engines give the same values: the pandas join of ``features.pit`` over the
parquet tables, and Feast's own ``get_historical_features`` in time-ordered chunks. Which columns: the use
case's (``loopline.config.use_case``) and its feature definitions' (``features.definitions``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

from loopline.features.definitions import EVENT_EPOCH_S, feature_definitions, use_case_of
from loopline.features.feature_service import ONE_MICROSECOND, FeatureRowsMismatch, service, service_name
from loopline.features.tables import TIMESTAMP

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

    from loopline.config.use_case import UseCase

# Entity rows per get_historical_features call of the Feast engine on Postgres (see _feast_join):
# with the planner's nested loops (the default) cost grows with rows² per query, so small chunks;
# with `enable_nestloop = off` for the Feast role (recommended, see feature_store.production.yaml)
# hash joins make it linear and large chunks only bound memory. Other stores: one query.
POSTGRES_CHUNK_ROWS = {"on": 250, "off": 20_000}
Engine = Literal["auto", "pandas", "feast"]


def _epoch_seconds(timestamps: pd.Series) -> pd.Series:
    """UTC timestamps (any resolution) as float seconds since the epoch."""
    return cast(
        "pd.Series", timestamps.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64") / 1e6
    )


def entity_rows(events: pd.DataFrame, use_case: UseCase | None = None) -> pd.DataFrame:
    """Entity rows for point-in-time joins: each event (of ``use_case``, default the configured one) joined
    1 µs before it happened, so it sees the state after the previous events only — the same state serving
    sees when scoring it. Columns: the id, the entity and request columns, ``event_epoch_s`` and
    ``event_timestamp`` (the join time)."""
    import pandas as pd

    if use_case is None:
        from loopline.config import Settings
        from loopline.config.use_case import load_use_case

        use_case = load_use_case(Settings().use_case)
    definitions = feature_definitions(use_case)
    timestamps = pd.to_datetime(events[use_case.time_column], utc=True).astype("datetime64[us, UTC]")
    columns = dict.fromkeys([use_case.id_column, *definitions.entity_columns, *definitions.request_columns])
    rows = events[list(columns)].copy()
    rows[EVENT_EPOCH_S] = _epoch_seconds(timestamps)
    rows[TIMESTAMP] = timestamps - ONE_MICROSECOND
    return rows.reset_index(drop=True)


def historical_features(
    store: FeatureStore,
    events: pd.DataFrame,
    name: str | None = None,
    engine: Engine = "auto",
    chunk_rows: int | None = None,
) -> pd.DataFrame:
    """Point-in-time features for each event; one output row per input row, or an error.

    ``name``: the FeatureService (default: that of the use case whose Feast repo ``store`` opened). The
    rows carry the use case's id column, the entity and request columns, and the features.

    ``engine="pandas"`` joins each view with ``merge_asof`` over the offline parquet tables
    (``features.pit``): linear in the rows. ``engine="feast"`` is Feast's own ``get_historical_features``
    (its duckdb join grows with entity rows x same-key rows within the TTL: ~1.8B rows at 1M
    events) — the reference the pandas engine is tested against, and the path for non-file
    offline stores (Postgres). Both return the same values, nulls and dtypes. ``"auto"`` (default)
    takes pandas when every view reads parquet, else Feast. The Feast engine runs over time-ordered
    chunks of ``chunk_rows`` entity rows (default: by offline store, see ``POSTGRES_CHUNK_ROWS``);
    on Postgres with ``enable_nestloop = off`` it took ~0.5 ms per row (50k rows in 26 s, 2 cores).
    """
    from loopline.features.pit import point_in_time_features, reads_files_only, service_plan

    use_case = use_case_of(store)
    name = service_name(store, name)
    entities = entity_rows(events, use_case)
    ids = use_case.id_column
    if entities[ids].duplicated().any():
        raise FeatureRowsMismatch(f"{ids} values repeat in the entity rows: deduplicate the input first")
    if engine == "auto":
        engine = "pandas" if reads_files_only(store, service_plan(store, name)) else "feast"
    if engine == "pandas":
        frame = point_in_time_features(store, entities, name)
    elif engine == "feast":
        frame = _feast_join(store, entities, name, chunk_rows or _feast_chunk_rows(store, len(entities)))
    else:
        raise ValueError(f"unknown engine {engine!r}: use 'pandas' or 'feast'")
    if len(frame) != len(entities) or not _same_ids(frame[ids], entities[ids]):
        raise FeatureRowsMismatch(
            f"the point-in-time join returned {len(frame)} rows for {len(entities)} events; "
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

    ordered = entities.sort_values(TIMESTAMP, kind="stable")
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
        (nestloop,) = cast("tuple[str]", conn.execute("SHOW enable_nestloop").fetchone())
    return POSTGRES_CHUNK_ROWS.get(nestloop, POSTGRES_CHUNK_ROWS["on"])


def _same_ids(got: pd.Series, expected: pd.Series) -> bool:
    """Whether ``got`` is a permutation of the (unique) ``expected`` ids; O(n) when the order is kept."""
    import pandas as pd

    got, expected = got.reset_index(drop=True), expected.reset_index(drop=True)
    if len(got) == len(expected) and got.astype(object).equals(expected.astype(object)):
        return True
    return bool(
        pd.Index(got.astype(object)).sort_values().equals(pd.Index(expected.astype(object)).sort_values())
    )
