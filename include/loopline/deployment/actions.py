"""The canary's registry writes: traffic shifts, promotion and rollbacks (I/O shells; decisions live in
``analysis``). The MLflow registry is the source of truth for what serves: every serving replica
reconciles to these writes within a poll, and each decision is also recorded in the history.

Write order matters, because replicas may read between two writes:
- promote moves ``champion`` to the challenger *first* (a challenger equal to the champion means no
  split), then clears the challenger alias and the traffic tag; the old champion keeps the alias
  ``previous_champion`` as the fallback;
- roll back sets the traffic to 0 *first* (no unit routed to it any more), then removes the alias.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loopline.config import Settings
from loopline.lineage import history
from loopline.serving.config import RegistryConfig, load_serving_config

PREVIOUS_CHAMPION_ALIAS = "previous_champion"
TAG_CANARY = "loopline.canary"  # on the version: running | promoted | rolled_back | replaced
TAG_REASON = "loopline.canary_reason"
TAG_AT = "loopline.canary_at"
TAG_SHARE = "loopline.canary_share"
TAG_VERDICT = "loopline.canary_verdict"
MAX_TAG_CHARS = 5000


class DeploymentError(RuntimeError):
    """A registry write the canary or a person asked for cannot be made; the message says why."""


class StaleCanary(DeploymentError):
    """The challenger alias no longer points at this canary's version (a newer gate pass took it)."""


@dataclass(frozen=True)
class RegistryState:
    champion: str | None
    challenger: str | None
    previous_champion: str | None
    share: str | None
    mode: str | None


def registry_config(settings: Settings) -> RegistryConfig:
    return load_serving_config(config_dir=settings.config_dir).registry


def client_for(settings: Settings) -> Any:
    from loopline.platform.mlflow_util import mlflow_client

    return mlflow_client(settings.mlflow_uri)


def read_state(settings: Settings, client: Any = None) -> RegistryState:
    """Aliases and traffic tags of the served model; a clear error when it is not registered yet."""
    from mlflow.exceptions import MlflowException

    reg = registry_config(settings)
    client = client or client_for(settings)
    try:
        model = client.get_registered_model(reg.model_name)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise DeploymentError(
                f"registered model {reg.model_name!r} not found in {settings.mlflow_uri}: train "
                "and gate a model first (`loopline trigger train_model`)"
            ) from None
        raise DeploymentError(
            f"cannot read the model registry at {settings.mlflow_uri} (is MLflow running? "
            f"`loopline up`): {exc.message}"
        ) from None
    aliases, tags = dict(model.aliases or {}), dict(model.tags or {})

    def pick(alias: str) -> str | None:
        return None if aliases.get(alias) is None else str(aliases[alias])

    return RegistryState(
        champion=pick(reg.champion_alias),
        challenger=pick(reg.challenger_alias),
        previous_champion=pick(PREVIOUS_CHAMPION_ALIAS),
        share=tags.get(reg.traffic_tag),
        mode=tags.get(reg.mode_tag),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _tag_version(client: Any, name: str, version: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
        client.set_model_version_tag(name, str(version), key, text[:MAX_TAG_CHARS])


def _clear_canary(client: Any, reg: RegistryConfig, state: RegistryState, version: str) -> None:
    """Traffic tags gone, and the challenger alias if it is still this version's."""
    model_tags = dict(client.get_registered_model(reg.model_name).tags or {})
    for tag in (reg.traffic_tag, reg.mode_tag):
        if tag in model_tags:
            client.delete_registered_model_tag(reg.model_name, tag)
    if state.challenger == str(version):
        client.delete_registered_model_alias(reg.model_name, reg.challenger_alias)


def shift_traffic(
    settings: Settings,
    version: str | int,
    share: float,
    *,
    mode: str = "live",
    reason: str = "",
    **details: Any,
) -> None:
    """Give the challenger ``share`` of live traffic (or, ``mode="shadow"``, every request without answering).
    Refuses when the challenger alias points elsewhere: that canary is stale."""
    if mode not in ("live", "shadow"):
        raise ValueError(f"mode must be 'live' or 'shadow', not {mode!r}")
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    version = str(version)
    reg, client = registry_config(settings), client_for(settings)
    state = read_state(settings, client)
    if state.challenger != version:
        raise StaleCanary(
            f"the @{reg.challenger_alias} alias points at {state.challenger or 'nothing'}, not "
            f"version {version}: this canary was superseded or rolled back"
        )
    client.set_registered_model_tag(reg.model_name, reg.mode_tag, mode)
    client.set_registered_model_tag(reg.model_name, reg.traffic_tag, f"{share:g}")
    _tag_version(
        client, reg.model_name, version, {TAG_CANARY: "running", TAG_SHARE: f"{share:g}", TAG_AT: _now()}
    )
    history.record(
        settings,
        "traffic_shifted",
        version=version,
        reason=reason or f"{mode} traffic {share:.0%}",
        share=share,
        mode=mode,
        champion=state.champion,
        **details,
    )


def promote(settings: Settings, version: str | int, reason: str, **details: Any) -> str | None:
    """Make ``version`` the champion; the previous champion becomes ``previous_champion`` (the fallback of
    ``rollback_production``). Returns the previous champion's version (None for the first model)."""
    version = str(version)
    reg, client = registry_config(settings), client_for(settings)
    state = read_state(settings, client)
    previous = state.champion if state.champion != version else state.previous_champion
    client.set_registered_model_alias(reg.model_name, reg.champion_alias, version)  # the switch itself
    if previous is not None and previous != version:
        client.set_registered_model_alias(reg.model_name, PREVIOUS_CHAMPION_ALIAS, previous)
        _tag_version(
            client,
            reg.model_name,
            previous,
            {TAG_CANARY: "replaced", TAG_AT: _now(), TAG_REASON: f"replaced by version {version}"},
        )
    _clear_canary(client, reg, state, version)
    _tag_version(
        client,
        reg.model_name,
        version,
        {
            TAG_CANARY: "promoted",
            TAG_REASON: reason,
            TAG_AT: _now(),
            **({TAG_VERDICT: details["verdict"]} if "verdict" in details else {}),
        },
    )
    history.record(
        settings, "promoted", version=version, reason=reason, previous_champion=previous, **details
    )
    return previous


def roll_back(settings: Settings, version: str | int, reason: str, **details: Any) -> None:
    """End ``version``'s canary: traffic 0, challenger alias removed, the version tagged ``rolled_back``."""
    version = str(version)
    reg, client = registry_config(settings), client_for(settings)
    state = read_state(settings, client)
    if state.challenger == version:
        client.set_registered_model_tag(reg.model_name, reg.traffic_tag, "0")  # first: nobody routed to it
    _clear_canary(client, reg, state, version)
    _tag_version(
        client,
        reg.model_name,
        version,
        {
            TAG_CANARY: "rolled_back",
            TAG_REASON: reason,
            TAG_AT: _now(),
            **({TAG_VERDICT: details["verdict"]} if "verdict" in details else {}),
        },
    )
    history.record(settings, "rolled_back", version=version, reason=reason, scope="canary", **details)


def rollback_production(settings: Settings, reason: str) -> tuple[str, str]:
    """One step back: ``previous_champion`` becomes the champion again; the demoted version is tagged
    ``rolled_back``. Returns (demoted, restored)."""
    if not reason.strip():
        raise ValueError("give a reason for the rollback (it is recorded with the decision)")
    reg, client = registry_config(settings), client_for(settings)
    state = read_state(settings, client)
    if state.previous_champion is None:
        raise DeploymentError(
            f"no @{PREVIOUS_CHAMPION_ALIAS} alias on {reg.model_name!r}: nothing to roll back "
            "to (it is set when a canary promotes a new champion)"
        )
    if state.champion is None:
        raise DeploymentError(
            f"{reg.model_name!r} has no @{reg.champion_alias}: nothing serves, nothing to roll back"
        )
    demoted, restored = state.champion, state.previous_champion
    client.set_registered_model_alias(reg.model_name, reg.champion_alias, restored)  # the switch itself
    # No older fallback is known once we stepped back: the alias goes rather than pointing at itself.
    client.delete_registered_model_alias(reg.model_name, PREVIOUS_CHAMPION_ALIAS)
    _tag_version(
        client,
        reg.model_name,
        demoted,
        {TAG_CANARY: "rolled_back", TAG_AT: _now(), TAG_REASON: f"production rollback: {reason}"},
    )
    history.record(
        settings,
        "rolled_back",
        version=demoted,
        reason=reason,
        scope="production",
        restored_champion=restored,
    )
    return demoted, restored
