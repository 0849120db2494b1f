"""Keep the engine's deployment in line with the MLflow registry, or serve one fixed model.

The registry is the single source of truth (ARCHITECTURE.md "Who owns deployment state"): aliases
``champion``/``challenger`` on ``fraud_detector`` and the challenger's traffic share as the registered-model
tag ``loopline.challenger_traffic``. A canary changes traffic with one tag write; promotion and rollback
are alias moves. Every few seconds the reconciler reads them, loads and warms versions it lacks in its
own thread, and swaps the deployment atomically. It never drops the serving champion because of a
registry hiccup: an unreachable registry or a version that fails to load leaves the current deployment
serving and is reported by ``/readyz`` and, per attempt, by ``/metrics``
(``loopline_model_load_failures_total`` and the error's text in ``loopline_model_error_info``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from loopline.config import Settings
from loopline.platform.mlflow_util import mlflow_client
from loopline.serving.config import ServingConfig
from loopline.serving.engine import Deployment, Engine
from loopline.serving.predictor import Predictor
from loopline.serving.routing import CHALLENGER, CHAMPION, DesiredState, desired_state

log = logging.getLogger("loopline.serving")
Loader = Callable[[str, str, str], Predictor]  # (model_uri, version, variant) -> a warmed Predictor


def version_label(model_uri: str, settings: Settings) -> str:
    """The version a response names for ``model_uri``: N for ``models:/name/N``, the alias's version for
    ``models:/name@alias``, else the URI itself (a run or a path has no registry version)."""
    match = re.fullmatch(r"models:/([^/@]+)/(\d+)", model_uri)
    if match:
        return match.group(2)
    match = re.fullmatch(r"models:/([^/@]+)@([\w-]+)", model_uri)
    if match:
        client = mlflow_client(settings.mlflow_uri)
        return str(client.get_model_version_by_alias(match.group(1), match.group(2)).version)
    return model_uri


class _Background:
    def __init__(self, engine: Engine, interval_s: float) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"loopline-{type(self).__name__}", daemon=True)

    def start(self) -> _Background:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            done = self.step()
            if done:
                return
            self._stop.wait(self.interval_s)

    def step(self) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError


class FixedModel(_Background):
    """Serve exactly one model URI as the champion (no registry aliases read or written)."""

    def __init__(
        self,
        engine: Engine,
        model_uri: str,
        settings: Settings,
        config: ServingConfig,
        loader: Loader | None = None,
    ) -> None:
        super().__init__(engine, config.registry.poll_interval_s)
        self.model_uri = model_uri
        self.settings = settings
        self.loader = loader or default_loader(settings, config)

    def step(self) -> bool:
        self.engine.status = f"loading {self.model_uri}"
        try:
            version = version_label(self.model_uri, self.settings)
            predictor = self.loader(self.model_uri, version, CHAMPION)
        except Exception as exc:  # keep trying: the model may not be registered yet
            self.last_error = str(exc)
            self.engine.status = f"cannot serve {self.model_uri}: {exc}"
            log.error("%s", self.engine.status)
            return False
        self.engine.swap(Deployment(champion=predictor), status=f"serving {self.model_uri}")
        return True


def default_loader(settings: Settings, config: ServingConfig) -> Loader:
    def load(model_uri: str, version: str, variant: str) -> Predictor:
        return Predictor.load(
            model_uri,
            version=version,
            variant=variant,
            settings=settings,
            threshold=config.decision_threshold,
            warmup_rounds=config.warmup.rounds,
        )

    return load


class RegistryReconciler(_Background):
    """Poll the registry; load, warm and switch to what its aliases and tags say."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        config: ServingConfig,
        loader: Loader | None = None,
        client: Any = None,
    ) -> None:
        super().__init__(engine, config.registry.poll_interval_s)
        self.settings = settings
        self.config = config
        self.loader = loader or default_loader(settings, config)
        if client is None:
            client = mlflow_client(settings.mlflow_uri)
        self.client = client
        self.desired: DesiredState | None = None
        engine.status = f"waiting for the registry at {settings.mlflow_uri}"
        self._failed: dict[str, str] = {}  # version → why it did not load (retried on every poll)

    def step(self) -> bool:
        try:
            self.reconcile_once()
        except Exception as exc:  # registry down, etc.: keep serving what we have
            self.last_error = f"registry {self.settings.mlflow_uri}: {exc}"
            log.warning("reconcile failed: %s", self.last_error)
            if not self.engine.deployment.ready:
                self.engine.status = f"no model loaded: {self.last_error}"
        return False

    def read_registry(self) -> DesiredState:
        name = self.config.registry.model_name
        model = self.client.get_registered_model(name)
        return desired_state(dict(model.aliases or {}), dict(model.tags or {}), self.config.registry)

    def _predictor(self, version: str, variant: str, current: Deployment) -> Predictor | None:
        """A warmed predictor for ``version``: reused when loaded already, else loaded now."""
        for loaded in (current.champion, current.challenger):
            if loaded is not None and loaded.version == version:
                return loaded if loaded.variant == variant else loaded.with_variant(variant)
        uri = f"models:/{self.config.registry.model_name}/{version}"
        try:
            predictor = self.loader(uri, version, variant)
        except Exception as exc:  # a bad version must not stop the reconciler
            self._failed[version] = str(exc)
            log.error("cannot load %s: %s", uri, exc)
            # Counted per attempt (one per poll while it fails) and summed over replicas by the canary,
            # which rolls back a challenger that keeps failing to load instead of waiting for traffic.
            self.engine.observer.load_failed(variant, version, str(exc))
            return None
        self._failed.pop(version, None)
        self.engine.observer.loaded(variant, version)
        return predictor

    def reconcile_once(self) -> Deployment:
        """One poll: read the registry, load what is missing, swap if anything changed."""
        desired = self.read_registry()
        self.desired = desired
        current = self.engine.deployment
        problems = list(desired.problems)
        champion = current.champion
        if desired.champion is None:
            problems.append(
                f"registered model {self.config.registry.model_name!r} has no "
                f"@{self.config.registry.champion_alias} alias"
            )
        elif champion is None or champion.version != desired.champion:
            champion = self._predictor(desired.champion, CHAMPION, current) or champion
            if champion is None or champion.version != desired.champion:
                problems.append(
                    f"champion version {desired.champion} failed to load: "
                    f"{self._failed.get(desired.champion, '')}"
                )
        challenger = None
        if desired.challenger is not None and champion is not None:
            challenger = self._predictor(desired.challenger, CHALLENGER, current)
            if challenger is None:
                problems.append(
                    f"challenger version {desired.challenger} failed to load "
                    f"(all traffic stays on the champion): {self._failed.get(desired.challenger, '')}"
                )
        deployment = Deployment(
            champion=champion,
            challenger=challenger,
            challenger_share=desired.challenger_share if challenger else 0.0,
            shadow=desired.shadow and challenger is not None,
        )
        self.last_error = "; ".join(problems) or None
        if deployment.key() != current.key():
            self.engine.swap(deployment)
        if deployment.ready:
            self.engine.status = "serving" + (f" ({self.last_error})" if self.last_error else "")
        else:
            self.engine.status = f"no model loaded: {self.last_error or 'waiting for the registry'}"
        return deployment
