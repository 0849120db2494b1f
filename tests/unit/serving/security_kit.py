"""Helpers of the security tests (issue 19): an app with no model and no fresh features, cheap to build,
for everything that is decided before a model scores (validation, authentication, probes)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from loopline.config import Settings
from loopline.serving.app import create_app
from loopline.serving.config import ServingConfig, load_serving_config

TX = {
    "transaction_id": "tx_000000000001",
    "event_timestamp": "2026-01-05T14:03:00Z",
    "customer_id": "c_00042",
    "merchant_id": "m_0007",
    "device_id": "dev_0e2bb3e7957e",
    "channel": "online",
    "amount": 42.5,
    "merchant_category": "electronics",
    "merchant_country": "DE",
    "card_id": "card_00042_1",
}


def bare_config(**log: Any) -> ServingConfig:
    """The shipped config without fresh features (no feature store needed); ``log``: LogConfig fields."""
    config = load_serving_config()
    return config.model_copy(
        update={
            "fresh_features": config.fresh_features.model_copy(update={"enabled": False}),
            "log": config.log.model_copy(update=log),
        }
    )


@contextlib.contextmanager
def bare_client(state_dir: Path, config: ServingConfig | None = None, **kwargs: Any) -> Iterator[TestClient]:
    """A TestClient (lifespan run) of an app that never loads a model: a valid predict body gets 503."""
    app = create_app(Settings(state_dir=state_dir), config or bare_config(), **kwargs)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """The URL of a fresh database ``name`` on a throwaway Postgres server (tests/local_servers.py, as the
    Postgres integration tests start it; skipped where the server binaries are missing)."""
    import psycopg
    from local_servers import PG_USER, postgres_server

    with postgres_server() as port:
        with psycopg.connect(
            host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        yield f"postgresql://{PG_USER}@127.0.0.1:{port}/{name}"


def raw_predict(client: TestClient, body: bytes, **headers: str) -> Any:
    return client.post("/v1/predict", content=body, headers={"content-type": "application/json", **headers})
