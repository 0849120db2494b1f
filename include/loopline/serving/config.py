"""The versioned serving configuration (``include/config/serving.yaml``), validated by pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from loopline.config.yaml_files import load_model_file

DEFAULT_THRESHOLD = 0.5


class ServingConfigError(ValueError):
    """The serving config could not be read or is invalid; the message names the bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistryConfig(_Strict):
    """Where deployment state lives: aliases and registered-model tags of one MLflow registered model."""

    model_name: str = "fraud_detector"
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    traffic_tag: str = "loopline.challenger_traffic"
    mode_tag: str = "loopline.challenger_mode"
    poll_interval_s: float = Field(default=3.0, gt=0)


class Limits(_Strict):
    max_transactions_per_request: int = Field(default=256, ge=1, le=10_000)
    max_body_bytes: int = Field(default=262_144, ge=1024)


class Batching(_Strict):
    max_rows: int = Field(default=128, ge=1)
    # inline: score on the event loop (no thread hand-offs; best when CPU-bound, as here);
    # threads: a scoring thread and a log thread (the loop keeps answering probes during a batch).
    mode: Literal["inline", "threads"] = "inline"


class LogConfig(_Strict):
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"


class Warmup(_Strict):
    rounds: int = Field(default=20, ge=1)


class FreshFeaturesConfig(_Strict):
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


class ServingConfig(_Strict):
    version: int = 1
    decision_threshold: float = Field(default=DEFAULT_THRESHOLD, ge=0, le=1)
    registry: RegistryConfig = RegistryConfig()
    limits: Limits = Limits()
    batching: Batching = Batching()
    log: LogConfig = LogConfig()
    warmup: Warmup = Warmup()
    fresh_features: FreshFeaturesConfig = FreshFeaturesConfig()


def config_path(config_dir: Path) -> Path:
    return Path(config_dir) / "serving.yaml"


def load_serving_config(path: Path | None = None, config_dir: Path | None = None) -> ServingConfig:
    """``path``, else ``config_dir/serving.yaml`` (default: the settings' config dir). An explicit path must
    exist; a missing default file means the defaults (an image without ``include/config``)."""
    if config_dir is None:
        from loopline.config import get_settings

        config_dir = get_settings().config_dir
    return load_model_file(ServingConfig, path, config_path(config_dir), "serving config", ServingConfigError)
