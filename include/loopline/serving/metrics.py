"""Prometheus metrics of the prediction service (one registry per app, so tests can build many)."""

from __future__ import annotations

import re
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from loopline.serving.engine import Deployment, Observer
from loopline.serving.prediction_log import RetentionRun

# An error's text as a label: one line, bounded, no credentials of a URL (the tracking URI is in load errors).
ERROR_TEXT_CHARS = 200
_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")


def error_text(error: str) -> str:
    """``error`` as the ``error`` label of ``loopline_model_error_info``: one line, at most
    ``ERROR_TEXT_CHARS`` characters, ``user:password@`` of URLs masked."""
    text = " ".join(_USERINFO.sub("***@", str(error)).split())
    return text if len(text) <= ERROR_TEXT_CHARS else text[: ERROR_TEXT_CHARS - 1] + "…"


LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 21))  # a classifier's probability, 0.05 apart
# A regressor's prediction in its label's units (minutes, euros, ...): a 1-2-5 series over 0.01 .. 1e6, so any
# label's scale gets about three buckets per decade.
REGRESSION_SCORE_BUCKETS = tuple(
    round(m * 10.0**e, 2) for e in range(-2, 7) for m in (1, 2, 5) if m * 10.0**e <= 1e6
)


class ServingMetrics(Observer):
    def __init__(self, task: str = "binary_classification") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "loopline_http_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.errors = Counter(
            "loopline_http_errors", "HTTP responses with status >= 400", ["route", "status"], registry=r
        )
        self.request_latency = Histogram(
            "loopline_http_request_seconds",
            "HTTP request duration by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "loopline_predictions", "answered predictions", ["variant", "version", "decision"], registry=r
        )
        self.prediction_latency = Histogram(
            "loopline_prediction_seconds",
            "request received → scored, per prediction",
            ["variant", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.scores = Histogram(
            "loopline_score",
            "score distribution",
            ["variant", "version"],
            buckets=REGRESSION_SCORE_BUCKETS if task == "regression" else SCORE_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "loopline_batch_rows",
            "rows scored together",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.failures = Counter(
            "loopline_internal_failures", "scoring/logging failures", ["where"], registry=r
        )
        # Failed predictions by the variant and version at fault (the prediction log holds only answered
        # ones): the canary's error rate is these over these plus the logged predictions.
        self.prediction_errors = Counter(
            "loopline_prediction_errors",
            "events whose model raised, by variant and version",
            ["variant", "version"],
            registry=r,
        )
        # Failed attempts to load a version the registry asks to serve (one per reconcile poll while it fails):
        # the canary rolls back a challenger that keeps failing to load at once, summed over replicas like
        # the errors above. The first error of each (variant, version, stage) is kept as a label, so the
        # rollback can say what went wrong: one series per failing version, not one per attempt.
        self.load_failures = Counter(
            "loopline_model_load_failures",
            "failed attempts to load a version the registry asks to serve",
            ["variant", "version"],
            registry=r,
        )
        self.error_info = Gauge(
            "loopline_model_error_info",
            "1 per (variant, version, stage: load | score) that failed in this process; "
            "error: the first error's text",
            ["variant", "version", "stage", "error"],
            registry=r,
        )
        self._first_errors: dict[tuple[str, str, str], str] = {}
        self._errors_lock = threading.Lock()
        # Requests answered 503 because their rows were not committed in time: "database" (locked, statement
        # timeout, unreachable, failing fast after one of those) or "answer_timeout" (waited answer_timeout_s).
        self.log_unavailable = Counter(
            "loopline_prediction_log_unavailable",
            "requests answered 503 because the prediction log did not commit in time",
            ["cause"],
            registry=r,
        )
        # Prediction-log retention (serving.prediction_log.Retention): what each run deleted, and how far back.
        self.retention_deleted = Counter(
            "loopline_prediction_log_retention_deleted",
            "prediction-log rows deleted by retention",
            registry=r,
        )
        self.retention_runs = Counter(
            "loopline_prediction_log_retention_runs",
            "retention runs by outcome (deleted, nothing_to_delete, skipped, failed)",
            ["outcome"],
            registry=r,
        )
        self.retention_cutoff = Gauge(
            "loopline_prediction_log_retention_cutoff_timestamp_seconds",
            "rows made before this time were deleted by the last run",
            registry=r,
        )
        self.retention_floor = Gauge(
            "loopline_prediction_log_retention_floor_timestamp_seconds",
            "the oldest prediction time a reader still needs (last run)",
            registry=r,
        )
        self.model_info = Gauge(
            "loopline_model_loaded",
            "1 for each loaded (variant, version)",
            ["variant", "version"],
            registry=r,
        )
        self.challenger_share = Gauge("loopline_challenger_share", "challenger's traffic share", registry=r)
        # The labelled children of the per-request metrics, looked up once per label set: ``labels()`` validates
        # and locks on every call, a cost per request and per prediction. These series are never removed.
        self._http: dict[tuple[str, int], tuple[Counter, Counter | None, Histogram]] = {}
        self._predicted: dict[tuple[str, str, bool | None], tuple[Counter, Histogram, Histogram]] = {}

    def http(self, route: str, status: int, seconds: float) -> None:
        """One HTTP response: counted by route and status (and as an error from 400 on), its time observed."""
        children = self._http.get((route, status))
        if children is None:
            code = str(status)
            children = self._http[(route, status)] = (
                self.requests.labels(route, code),
                self.errors.labels(route, code) if status >= 400 else None,
                self.request_latency.labels(route),
            )
        requests, errors, latency = children
        requests.inc()
        if errors is not None:
            errors.inc()
        latency.observe(seconds)

    def retention(self, run: RetentionRun) -> None:
        self.retention_runs.labels(run.outcome).inc()
        self.retention_deleted.inc(run.deleted)
        if run.cutoff is not None and run.outcome in ("deleted", "nothing_to_delete"):
            self.retention_cutoff.set(run.cutoff)
        if run.floor is not None:
            self.retention_floor.set(run.floor)

    def prediction(
        self, variant: str, version: str, score: float, decision: bool | None, latency_s: float
    ) -> None:
        children = self._predicted.get((variant, version, decision))
        if children is None:
            # A regressor decides nothing: its predictions count under decision "none".
            label = "none" if decision is None else ("positive" if decision else "ok")
            children = self._predicted[(variant, version, decision)] = (
                self.predictions.labels(variant, version, label),
                self.prediction_latency.labels(variant, version),
                self.scores.labels(variant, version),
            )
        predictions, latency, scores = children
        predictions.inc()
        latency.observe(latency_s)
        scores.observe(score)

    def batch(self, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)

    def failure(self, where: str) -> None:
        self.failures.labels(where).inc()

    def scoring_failed(self, variant: str, version: str, rows: int, error: str = "") -> None:
        self.prediction_errors.labels(variant, version).inc(rows)
        if error:
            self._first_error(variant, version, "score", error)

    def load_failed(self, variant: str, version: str, error: str) -> None:
        self.load_failures.labels(variant, version).inc()
        self._first_error(variant, version, "load", error)

    def loaded(self, variant: str, version: str) -> None:
        # Loaded at last: a later failure (a restart, a re-canary) is reported with its own, fresh error.
        with self._errors_lock:
            text = self._first_errors.pop((variant, version, "load"), None)
            if text is not None:
                self.error_info.remove(variant, version, "load", text)

    def _first_error(self, variant: str, version: str, stage: str, error: str) -> None:
        with self._errors_lock:
            if (variant, version, stage) not in self._first_errors:
                text = error_text(error)
                self._first_errors[(variant, version, stage)] = text
                self.error_info.labels(variant, version, stage, text).set(1)

    def deployment(self, deployment: Deployment) -> None:
        """Refresh the loaded-model gauges (called when /metrics is scraped)."""
        self.model_info.clear()
        if deployment.champion is not None:
            self.model_info.labels("champion", deployment.champion.version).set(1)
        if deployment.challenger is not None:
            variant = "shadow" if deployment.shadow else "challenger"
            self.model_info.labels(variant, deployment.challenger.version).set(1)
        self.challenger_share.set(deployment.challenger_share)
