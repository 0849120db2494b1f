"""The serving engine: the current deployment (swapped atomically), micro-batched scoring and the
group-committed prediction log.

Threads, and why:
- the event loop (uvicorn) validates requests, routes each transaction and waits on a future;
- one scoring thread takes every request that is waiting (up to ``batching.max_rows`` rows), looks up
  features and scores them per predictor in one call: per-call overhead (Feast, pandas, MLflow's schema
  check) is paid once per batch, not per request, which is what makes concurrency cheap;
- one log thread commits the scored rows of every waiting batch in one transaction and only then
  resolves the futures, so no response precedes the commit of its rows.

A deployment is an immutable snapshot; a request keeps the snapshot it was routed with until it is
answered, so swapping in new versions never fails a request in flight.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loopline.config.use_case import UseCase
from loopline.features.fresh import FreshFeatures
from loopline.serving import collector
from loopline.serving.prediction_log import AnyPredictionLog, LoggedPrediction, PredictionLogUnavailable
from loopline.serving.predictor import Predictor, Scored
from loopline.serving.routing import CHALLENGER, CHAMPION, SHADOW, assign

log = logging.getLogger("loopline.serving")


class NotReady(RuntimeError):
    """No model is loaded yet (or none could be): the service answers 503 with this message."""


class ScoringFailed(RuntimeError):
    """A model version raised while scoring: names the variant and version at fault, so errors can be
    counted per variant (the canary compares the challenger's error rate with the champion's)."""

    def __init__(self, variant: str, version: str, rows: int, cause: BaseException) -> None:
        super().__init__(f"{variant} version {version} failed to score {rows} row(s): {cause!r}")
        self.variant = variant
        self.version = version
        self.rows = rows


@dataclass(frozen=True)
class Deployment:
    """What serves now: the champion, optionally a challenger with a traffic share or in shadow mode."""

    champion: Predictor | None
    challenger: Predictor | None = None
    challenger_share: float = 0.0
    shadow: bool = False

    def route(self, unit: str) -> tuple[str, Predictor]:
        """The variant an event of ``unit`` (its unit column's value, sticky) is scored by."""
        if (
            self.challenger is not None
            and not self.shadow
            and assign(unit, self.challenger_share) == CHALLENGER
        ):
            return CHALLENGER, self.challenger
        if self.champion is None:
            raise NotReady("no champion model is loaded")
        return CHAMPION, self.champion

    @property
    def ready(self) -> bool:
        return self.champion is not None and self.champion.warmed

    def key(self) -> tuple[Any, ...]:
        """Identity for change detection: versions, share, mode."""
        return (
            self.champion and self.champion.version,
            self.challenger and self.challenger.version,
            self.challenger_share,
            self.shadow,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "champion": self.champion and {"version": self.champion.version, "uri": self.champion.model_uri},
            "challenger": self.challenger
            and {
                "version": self.challenger.version,
                "uri": self.challenger.model_uri,
                "share": self.challenger_share,
                "shadow": self.shadow,
            },
        }


EMPTY = Deployment(champion=None)
Resolve = Callable[[list[dict[str, Any]] | BaseException], None]


@dataclass
class Job:
    """One request's events, routed, waiting to be scored and logged."""

    request_id: str
    events: list[dict[str, Any]]
    deployment: Deployment
    routes: list[tuple[str, Predictor]]
    resolve: Resolve  # called from the log thread with the response rows, or the exception
    received_wall: float = field(default_factory=time.time)
    received: float = field(default_factory=time.perf_counter)
    scored: list[tuple[Scored, str, Predictor, float]] = field(default_factory=list)
    shadow: list[tuple[Scored, Predictor, float]] = field(default_factory=list)
    error: BaseException | None = None


class Observer:
    """Hooks for metrics; the default does nothing."""

    def prediction(
        self, variant: str, version: str, score: float, decision: bool | None, latency_s: float
    ) -> None: ...

    def batch(self, rows: int, seconds: float) -> None: ...

    def failure(self, where: str) -> None: ...

    def scoring_failed(self, variant: str, version: str, rows: int, error: str = "") -> None: ...

    def load_failed(self, variant: str, version: str, error: str) -> None:
        """A version the registry asks to serve (as ``variant``) could not be loaded; retried next poll."""

    def loaded(self, variant: str, version: str) -> None:
        """A version was loaded and warmed (after earlier failures, its load error is history)."""


_STOP = object()


class Engine:
    """Holds the deployment, scores and logs requests. ``submit`` is safe from any thread."""

    def __init__(
        self,
        prediction_log: AnyPredictionLog,
        *,
        max_rows: int = 128,
        observer: Observer | None = None,
        inline: bool = False,
        fresh: FreshFeatures | None = None,
        use_case: UseCase | None = None,
    ) -> None:
        if use_case is None:
            from loopline.config import Settings
            from loopline.config.use_case import load_use_case

            use_case = load_use_case(Settings().use_case)
        # Answers are keyed by the id column; routing is sticky by the unit column (else each event), which
        # the log keeps as the unit of each row.
        self.id_column = use_case.id_column
        self.unit_column = use_case.unit_column
        self.route_by = use_case.unit_column or use_case.id_column
        self.deployment: Deployment = EMPTY
        self.fresh = fresh  # recent events: every scored transaction counts before the next is scored
        self.inline = inline
        self._pending: list[Job] = []
        self._flush_scheduled = False
        self._seen = self._waited = 0  # inline mode: pending count at the last look, looks so far
        self.status = "starting: no model loaded yet"
        self.log = prediction_log
        self.max_rows = max_rows
        self.observer = observer or Observer()
        self._scoring: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._logging: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._score_loop, name="loopline-score", daemon=True),
            threading.Thread(target=self._log_loop, name="loopline-log", daemon=True),
        ]
        if not inline:
            for thread in self._threads:
                thread.start()

    # --- deployment -------------------------------------------------------------------------------

    def swap(self, deployment: Deployment, status: str = "serving") -> None:
        """Publish a new deployment in one reference assignment (atomic under the GIL)."""
        previous = self.deployment
        self.deployment = deployment
        self.status = status
        if previous.key() != deployment.key():
            log.info("deployment is now %s", deployment.describe())
            # Everything loaded so far (torch, MLflow, Feast, the model) out of the collector's scans, and
            # what an earlier deployment left behind freed (loopline.serving.collector).
            collector.collect_everything()

    # --- requests ---------------------------------------------------------------------------------

    def route(self, events: list[dict[str, Any]], request_id: str, resolve: Resolve) -> Job:
        """Route every transaction with one deployment snapshot and queue the request for scoring."""
        deployment = self.deployment
        if not deployment.ready:
            raise NotReady(self.status)
        by = self.route_by
        routes = [deployment.route(str(event[by])) for event in events]
        job = Job(request_id, events, deployment, routes, resolve)
        if self.inline:
            self._pending.append(job)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._scoring.put(job)
        return job

    def _flush(self) -> None:
        """Inline mode: score and commit everything pending, on the event loop itself. Requests that arrive
        meanwhile wait in the socket buffers and form the next batch; no thread hand-offs (GIL) at all."""
        if len(self._pending) != self._seen and self._waited < 3:
            # Requests are still reaching route() in this burst: let the loop run their handlers first.
            self._seen, self._waited = len(self._pending), self._waited + 1
            asyncio.get_running_loop().call_soon(self._flush)
            return
        self._seen = self._waited = 0
        batch: list[Job] = []
        rows = 0
        while self._pending and (not batch or rows + len(self._pending[0].events) <= self.max_rows):
            job = self._pending.pop(0)
            batch.append(job)
            rows += len(job.events)
        if self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._flush_scheduled = False
        self._process(batch)
        self._commit(batch)

    @staticmethod
    def _drain(source: queue.SimpleQueue[Any], size: Callable[[Any], int], limit: float) -> list[Any] | None:
        """Block for one item, then take what else is waiting (up to ``limit`` by ``size``); None once
        stopped. A stop marker met while draining is put back for the next call."""
        first = source.get()
        if first is _STOP:
            return None
        items, total = [first], size(first)
        while total < limit:
            try:
                item = source.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                source.put(_STOP)
                break
            items.append(item)
            total += size(item)
        return items

    def _score_loop(self) -> None:
        while (batch := self._drain(self._scoring, lambda job: len(job.events), self.max_rows)) is not None:
            self._process(batch)
            self._logging.put(batch)

    def _process(self, batch: list[Job]) -> None:
        """Score a batch; a failure is pinned on the request(s) at fault, never raised."""
        started = time.perf_counter()
        if self.fresh is not None:
            try:
                self.fresh.observe([tx for job in batch for tx in job.events])
            except Exception:  # scoring goes on with the online store's rows
                log.exception("fresh features: observing a batch failed")
                self.observer.failure("fresh_features")
        try:
            self._score(batch)
        except BaseException as exc:  # the batch failed as a whole: find the request(s) at fault
            if len(batch) == 1:
                self._failed(batch[0], exc)
            else:
                for job in batch:
                    job.scored.clear()
                    try:
                        self._score([job])
                    except BaseException as single:
                        job.scored.clear()
                        self._failed(job, single)
        self._shadow(batch)
        self.observer.batch(sum(len(j.events) for j in batch), time.perf_counter() - started)

    def _failed(self, job: Job, exc: BaseException) -> None:
        job.error = exc
        log.exception("scoring request %s failed", job.request_id)
        self.observer.failure("score")
        if isinstance(exc, ScoringFailed):
            self.observer.scoring_failed(exc.variant, exc.version, exc.rows, repr(exc.__cause__ or exc))

    def _score(self, batch: list[Job]) -> None:
        """Score every transaction of the batch: one call per predictor."""
        groups: dict[int, tuple[Predictor, str, list[tuple[Job, int]]]] = {}
        for job in batch:
            for i, (variant, predictor) in enumerate(job.routes):
                groups.setdefault(id(predictor), (predictor, variant, []))[2].append((job, i))
        slots: dict[tuple[int, int], tuple[Scored, str, Predictor, float]] = {}
        # The champion first: a slow challenger must not add its time to the champion's answers.
        for predictor, variant, members in sorted(groups.values(), key=lambda g: g[1] != CHAMPION):
            try:
                results = predictor.score([job.events[i] for job, i in members], self.fresh)
            except Exception as exc:  # blame the version at fault (per-variant error rates)
                raise ScoringFailed(variant, predictor.version, len(members), exc) from exc
            done = time.perf_counter()
            for (job, i), scored in zip(members, results, strict=True):
                slots[(id(job), i)] = (scored, variant, predictor, done - job.received)
        for job in batch:
            job.scored = [slots[(id(job), i)] for i in range(len(job.events))]

    def _shadow(self, batch: list[Job]) -> None:
        """In shadow mode the challenger scores every transaction too; logged, never answered."""
        jobs = [
            j
            for j in batch
            if j.error is None and j.deployment.shadow and j.deployment.challenger is not None
        ]
        by_predictor: dict[int, tuple[Predictor, list[Job]]] = {}
        for job in jobs:
            challenger = job.deployment.challenger
            assert challenger is not None  # jobs holds only deployments with a challenger
            by_predictor.setdefault(id(challenger), (challenger, []))[1].append(job)
        for predictor, members in by_predictor.values():
            try:
                results = predictor.score([tx for job in members for tx in job.events], self.fresh)
            except Exception as exc:
                log.exception("shadow scoring with version %s failed", predictor.version)
                self.observer.failure("shadow")
                self.observer.scoring_failed(
                    SHADOW, predictor.version, sum(len(j.events) for j in members), repr(exc)
                )
                continue
            done, it = time.perf_counter(), iter(results)
            for job in members:
                job.shadow = [(next(it), predictor, done - job.received) for _ in job.events]

    def _log_loop(self) -> None:
        # Group commit: every batch scored meanwhile goes into the same transaction.
        while (batches := self._drain(self._logging, lambda _: 0, 1)) is not None:
            self._commit([job for batch in batches for job in batch])

    def _commit(self, jobs: list[Job]) -> None:
        """Log every scored row in one transaction, then (and only then) answer the requests."""
        try:
            self.log.append(self._log_rows(jobs))
        except BaseException as exc:  # not durable → not acknowledged
            if isinstance(
                exc, PredictionLogUnavailable
            ):  # a stalled database: one line per batch, not a trace
                log.warning("writing %d requests to the prediction log failed: %s", len(jobs), exc)
            else:
                log.exception("writing %d requests to the prediction log failed", len(jobs))
            self.observer.failure("log")
            for job in jobs:
                job.error = job.error or exc
        for job in jobs:
            self._answer(job)

    def _log_rows(self, jobs: list[Job]) -> list[LoggedPrediction]:
        now = time.time()
        unit = self.unit_column
        rows = []
        for job in jobs:
            if job.error is not None:
                continue
            answered = [(s, variant, p.version, lat) for s, variant, p, lat in job.scored]
            shadowed = [(s, SHADOW, p.version, lat) for s, p, lat in job.shadow]
            for results in (answered, shadowed):
                for (scored, variant, version, latency), tx in zip(results, job.events, strict=False):
                    rows.append(
                        LoggedPrediction(
                            request_id=job.request_id,
                            ts=now,
                            event_id=scored.event_id,
                            unit_id=None if unit is None else str(tx.get(unit)),
                            inputs=tx,
                            features=scored.features,
                            score=scored.score,
                            decision=scored.decision,
                            variant=variant,
                            model_version=version,
                            latency_ms=latency * 1000,
                        )
                    )
        return rows

    def _answer(self, job: Job) -> None:
        if job.error is not None:
            job.resolve(job.error)
            return
        out = []
        for scored, variant, predictor, latency in job.scored:
            self.observer.prediction(variant, predictor.version, scored.score, scored.decision, latency)
            row = scored.response(predictor.version, variant, self.id_column)
            row["request_id"] = job.request_id
            out.append(row)
        try:
            job.resolve(out)
        except Exception:  # the client went away; the prediction is logged all the same
            log.debug("could not answer request %s", job.request_id, exc_info=True)

    def close(self) -> None:
        if self.inline:
            return
        self._scoring.put(_STOP)
        self._threads[0].join(timeout=30)
        self._logging.put(_STOP)
        self._threads[1].join(timeout=30)
