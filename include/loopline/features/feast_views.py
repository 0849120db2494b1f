"""Feast views over the aggregate tables (``tables.py``), for the use cases' feature repos
(``feature_repo/<use case>/features.py``): one definition for every deployment.

A view's source follows the offline store of the feature_store.yaml in use (``FEAST_FS_YAML_FILE_PATH``, see
``loopline.platform.feast_store``): parquet files in ``$LOOPLINE_FEAST_OFFLINE_DIR`` for the embedded duckdb
store, tables of the same names for Postgres in production. Imported by the feature repos only (it imports
Feast).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from loopline.features.tables import TIMESTAMP, AggregateTable
from loopline.platform.feast_store import offline_store_type

FILE_STORES = frozenset({"duckdb", "dask", "file"})


def aggregate_source(table: AggregateTable, repo_dir: Path) -> Any:
    """The table's Feast data source for the offline store configured for ``repo_dir``."""
    from feast import FileSource
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

    store = offline_store_type(repo_dir)
    if store == "postgres":
        return PostgreSQLSource(name=f"{table.name}_source", table=table.name, timestamp_field=TIMESTAMP)
    if store in FILE_STORES:
        # Set by loopline.platform.feast_store from Loopline's settings (the state dir's feast/offline/).
        offline_dir = os.environ.get("LOOPLINE_FEAST_OFFLINE_DIR", "offline")
        return FileSource(
            name=f"{table.name}_source",
            path=os.path.join(offline_dir, f"{table.name}.parquet"),
            timestamp_field=TIMESTAMP,
        )
    raise ValueError(
        f"feature repo {repo_dir.name} has no source kind for offline store {store!r}: "
        f"use one of {sorted(FILE_STORES | {'postgres'})} or add it in loopline.features.feast_views"
    )


def aggregate_view(
    table: AggregateTable,
    entities: list[Any],
    ttl: timedelta,
    description: str,
    repo_dir: Path,
    semantics: str,
) -> Any:
    """An online FeatureView of the table's features (int64 / float64), keyed by ``entities``.

    ``ttl``: the table's longest window; older state says nothing current about the entity, so a
    point-in-time join (and the online lookup, which applies the same rule) returns null instead."""
    from feast import FeatureView, Field
    from feast.types import Float64, Int64

    types = {"int64": Int64, "float64": Float64}
    return FeatureView(
        name=table.name,
        entities=entities,
        ttl=ttl,
        schema=[Field(name=column, dtype=types[dtype]) for column, dtype in table.features.items()],
        source=aggregate_source(table, repo_dir),
        online=True,
        description=description,
        tags={"owner": "loopline", "semantics": semantics},
    )
