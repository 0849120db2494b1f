"""The versioned serving configuration (``include/config/serving.yaml``), validated by pydantic."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from loopline.config.yaml_files import StrictModel, load_model_file, refuse_renamed

DEFAULT_THRESHOLD = 0.5
# The optional API key of /v1/predict, /metrics and the OpenAPI docs (issue 19). Several keys, separated by
# commas, are all accepted: rotate by adding the new key, moving the clients, then dropping the old one.
API_KEY_ENV = "LOOPLINE_SERVING_API_KEY"
MIN_API_KEY_CHARS = 16


class ServingConfigError(ValueError):
    """The serving config could not be read or is invalid; the message names the bad field."""


def _use_case_model_name() -> str:
    """The registered model of the configured use case (``LOOPLINE_USE_CASE``)."""
    from loopline.config import Settings
    from loopline.config.use_case import load_use_case

    return load_use_case(Settings().use_case).model_name


class RegistryConfig(StrictModel):
    """Where deployment state lives: aliases and registered-model tags of one MLflow registered model.
    ``model_name``: unset, the use case's (``UseCase.model_name``, e.g. ``fraud_detector``)."""

    model_name: str = Field(default_factory=_use_case_model_name)
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    traffic_tag: str = "loopline.challenger_traffic"
    mode_tag: str = "loopline.challenger_mode"
    poll_interval_s: float = Field(default=3.0, gt=0)


class Limits(StrictModel):
    max_events_per_request: int = Field(default=256, ge=1, le=10_000)
    max_body_bytes: int = Field(default=262_144, ge=1024)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        return refuse_renamed(data, {"max_transactions_per_request": "max_events_per_request"})


class Batching(StrictModel):
    max_rows: int = Field(default=128, ge=1)
    # inline: score on the event loop (no thread hand-offs; best when CPU-bound, as here);
    # threads: a scoring thread and a log thread (the loop keeps answering probes during a batch).
    mode: Literal["inline", "threads"] = "inline"


class RetentionConfig(StrictModel):
    """How long the prediction log keeps rows (``serving.prediction_log.Retention``). Rows older than
    ``max_age_days``, and the oldest beyond ``max_rows``, are deleted in the serving process, in batches of
    ``batch_rows`` — but never a row something still reads: the drift monitor's window and concept
    lookback, a running canary (since its start), check-served (the drift window) and fresh features
    (the use case's streaming ``history_us`` plus a day back, and its longest window before the materialisation
    watermark) set a floor that wins over both limits."""

    enabled: bool = True
    max_age_days: float = Field(default=35.0, gt=0)
    max_rows: int | None = Field(default=None, ge=1000)
    interval_s: float = Field(default=3600.0, ge=1)
    start_delay_s: float = Field(default=60.0, ge=0)  # the first run, after start (and warm-up) settled
    batch_rows: int = Field(default=1000, ge=1, le=100_000)  # one short delete transaction each
    pause_s: float = Field(default=0.05, ge=0, le=10)  # between batches: inserts go first
    # Concept drift judges windows ending at the label frontier (the newest confirmed-genuine label), which
    # trails now by the label delay; how far it may trail. Genuine labels mature after 7 days, chargebacks
    # take up to 21.
    label_delay_days: float = Field(default=21.0, ge=0)


class LogConfig(StrictModel):
    """The prediction log as the request path sees it. A request is answered only after its rows are
    committed; a database that stalls (a lock held elsewhere, an overloaded or vanished Postgres) must not
    stall requests: they get 503 with ``Retry-After`` instead, and nothing unlogged is acknowledged."""

    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # SQLite's busy timeout / Postgres' statement_timeout of serving's own log statements (lock waits count).
    db_timeout_s: float = Field(default=2.0, gt=0, le=60)
    connect_timeout_s: int = Field(default=3, ge=1, le=60)  # Postgres (libpq counts whole seconds)
    # The longest a request waits for its batch to be scored and committed (threads mode; a database call that
    # outlasts db_timeout_s in any mode); then 503. A late commit may still store the rows of such a request.
    answer_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # After a timed-out write, writes fail at once for this long (the event loop stays free); 0: never.
    fail_fast_s: float = Field(default=1.0, ge=0, le=60)
    retry_after_s: int = Field(default=2, ge=1, le=3600)  # the 503's Retry-After header
    retention: RetentionConfig = RetentionConfig()


class Warmup(StrictModel):
    rounds: int = Field(default=20, ge=1)


class FreshFeaturesConfig(StrictModel):
    """Every scored transaction updates the aggregates of its customer, merchant and device before the next
    request is scored (``loopline.features.fresh``); off, features are as fresh as the last materialisation."""

    enabled: bool = True
    # New states go to the online store in slices of `write_slice` entities every `flush_interval_s`, oldest
    # first, each entity once it has waited `coalesce_s`, however many transactions it had meanwhile. Freshness does not depend on it:
    # this replica reads its own recent events, other replicas read them from the prediction log.
    flush_interval_s: float = Field(default=0.1, gt=0, le=60)
    write_slice: int = Field(default=100, ge=1)
    coalesce_s: float = Field(default=5.0, ge=0, le=60)  # an entity is written once it has waited this long
    refresh_interval_s: float = Field(default=10.0, gt=0)  # how often to look for newly materialised batches


class AuthConfig(StrictModel):
    """Where the API key comes from when ``LOOPLINE_SERVING_API_KEY`` is not set: a file (e.g. a mounted
    Kubernetes secret) holding the key, or several separated by commas or new lines. Unset and no
    environment variable: no key, every route is open (bind to loopback or put a proxy in front)."""

    api_key_file: Path | None = None

    @field_validator("api_key_file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"must be an absolute path, not {str(value)!r}")
        return value


class ServingConfig(StrictModel):
    version: int = 1
    decision_threshold: float = Field(default=DEFAULT_THRESHOLD, ge=0, le=1)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)  # built when read: the use case's model
    limits: Limits = Limits()
    batching: Batching = Batching()
    log: LogConfig = LogConfig()
    warmup: Warmup = Warmup()
    fresh_features: FreshFeaturesConfig = FreshFeaturesConfig()
    auth: AuthConfig = AuthConfig()


def config_path(config_dir: Path) -> Path:
    return Path(config_dir) / "serving.yaml"


def load_serving_config(path: Path | None = None, config_dir: Path | None = None) -> ServingConfig:
    """``path``, else ``config_dir/serving.yaml`` (default: the settings' config dir). An explicit path must
    exist; a missing default file means the defaults (an image without ``include/config``)."""
    if config_dir is None:
        from loopline.config import get_settings

        config_dir = get_settings().config_dir
    return load_model_file(ServingConfig, path, config_path(config_dir), "serving config", ServingConfigError)


def _split_keys(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in text.replace("\n", ",").split(",") if k.strip())


def api_keys(config: ServingConfig, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The accepted API keys: ``LOOPLINE_SERVING_API_KEY`` (comma-separated), else the config's
    ``auth.api_key_file``; () when neither is set. A configured key file that cannot be read, holds no
    key, or a key shorter than ``MIN_API_KEY_CHARS``: ``ServingConfigError`` (never start open by mistake)."""
    environ = os.environ if environ is None else environ
    where = API_KEY_ENV
    keys = _split_keys(environ.get(API_KEY_ENV, ""))
    if not keys and config.auth.api_key_file is not None:
        where = f"auth.api_key_file ({config.auth.api_key_file})"
        try:
            keys = _split_keys(config.auth.api_key_file.read_text())
        except OSError as exc:
            raise ServingConfigError(f"{where} cannot be read: {exc.strerror}") from None
        if not keys:
            raise ServingConfigError(f"{where} holds no API key")
    short = [i for i, key in enumerate(keys, 1) if len(key) < MIN_API_KEY_CHARS]
    if short:
        raise ServingConfigError(
            f"{where}: key #{short[0]} is shorter than {MIN_API_KEY_CHARS} characters "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return keys


def client_headers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a Loopline client of the prediction service sends: ``Authorization: Bearer <key>`` when
    ``LOOPLINE_SERVING_API_KEY`` is set (its first key), else nothing."""
    keys = _split_keys((os.environ if environ is None else environ).get(API_KEY_ENV, ""))
    return {"Authorization": f"Bearer {keys[0]}"} if keys else {}
