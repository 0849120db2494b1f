"""What the canary reads: per-variant windows of the prediction log, failed predictions summed over every
serving replica, and the labels that have arrived.

Errors, and why not from the prediction log: it holds only answered predictions, so a failure leaves no
row there. Each serving process counts failed predictions per variant and version
(``loopline_prediction_errors_total``, include/loopline/serving/metrics.py). Behind several replicas
(compose's serving-a/serving-b, Kubernetes' Deployment + HPA) every replica counts its own, so the canary
needs the sum over all of them. ``ErrorSource`` is where it gets them, chosen once per canary
(``loopline.deployment.canary.error_source``) and stored, JSON-safe, in the plan:

- **Prometheus** (``LOOPLINE_PROMETHEUS_URL``; compose and Kubernetes set it): every replica Prometheus
  scrapes, replicas that came and went during the window included. The query is NOT
  ``sum(increase(...[window]))``: increase() extrapolates to the window's edges (fractions, and a guess
  rather than a count), and drops a series with one sample in the window. Instead one instant query
  ``{__name__=~"loopline_prediction_errors_total|loopline_challenger_share"}[window + 5 min]`` returns the
  raw scraped samples and each series is counted here: from its last sample at or before the window's
  start (none within Prometheus' 5-minute lookback: the series, i.e. the replica or the version's first
  error, was born in the window, so from 0) to its last sample, a drop meaning the process restarted
  (count from 0 again, as for the per-URL scrape). The result is an exact integer count of what
  Prometheus scraped; the window is shifted by at most one scrape interval at each end (the errors of
  the last interval are not scraped yet while the answered rows run to now: a step should last many
  scrape intervals). A window that does not hold two scrapes of any replica is too short to judge:
  unavailable, with that reason.
  ``loopline_challenger_share`` (a label-less gauge every replica exports from its start) tells the two
  cases apart that the error series alone cannot: "no errors" and "Prometheus scrapes no replica".
  ``prometheus_selector`` (policy) adds label matchers when one Prometheus scrapes several installations.
  Sample times are Prometheus' clock, window edges the canary's: keep both on NTP.
- **``/metrics`` URLs** (default: the serving URL's, one process; or the policy's ``metrics_urls``, a
  fixed set of replicas): each URL is scraped when a window starts and again at analysis; the per-URL
  differences are summed (a counter that went down means that process restarted: its new value is the
  count since then). A replica that is not listed is not counted: use Prometheus when replicas scale.

The same read (one scrape per URL, one Prometheus query) also counts failed *load* attempts per version
(``loopline_model_load_failures_total``: each replica's reconciler retries a version it cannot load on
every poll) and collects the first error text of each failing version (``loopline_model_error_info``):
the canary rolls back a challenger that cannot load, or fails every request, at once with that reason.

Unreadable or unjudgeable counts never read as zero: they block promotion, with the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from loopline.config import Settings

ERRORS_METRIC = "loopline_prediction_errors"
LOAD_FAILURES_METRIC = "loopline_model_load_failures"
ERROR_INFO_METRIC = "loopline_model_error_info"
Key = tuple[str, str]  # (variant, version)
ErrorKey = tuple[str, str, str]  # (stage: load | score, variant, version)


def _log(settings: Settings) -> Any:
    from loopline.serving.prediction_log import open_prediction_log

    return open_prediction_log(settings, read_only=True)  # SQLite or Postgres: what serving writes to


def logged_counts(settings: Settings, since: float, until: float | None = None) -> dict[Key, int]:
    """Answered predictions per (variant, version) in [since, until) — cheap enough to poll while baking.
    No log yet (no replica has started): nothing, not an error."""
    counts: dict[Key, int] = _log(settings).counts(since, until)
    return counts


def read_predictions(settings: Settings, since: float, until: float, variant: str, version: str) -> Any:
    """The window's rows of one variant and version, oldest first, as a DataFrame."""
    return _log(settings).read(since, until, variant=variant, version=str(version))


@dataclass(frozen=True)
class Scrape:
    """One process's counters now: failed predictions and failed load attempts per (variant, version),
    and the first error text it saw per (stage, variant, version)."""

    errors: dict[Key, float] = field(default_factory=dict)
    load_failures: dict[Key, float] = field(default_factory=dict)
    first_errors: dict[ErrorKey, str] = field(default_factory=dict)


def _key(labels: dict[str, str]) -> Key:
    return labels.get("variant", ""), labels.get("version", "")


def parse_metrics(text: str) -> Scrape:
    """The canary's counters from Prometheus exposition text (a replica's ``/metrics``)."""
    from prometheus_client.parser import text_string_to_metric_families

    errors: dict[Key, float] = {}
    loads: dict[Key, float] = {}
    texts: dict[ErrorKey, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (f"{ERRORS_METRIC}_total", f"{LOAD_FAILURES_METRIC}_total"):
                into = errors if sample.name.startswith(ERRORS_METRIC) else loads
                into[_key(sample.labels)] = into.get(_key(sample.labels), 0.0) + sample.value
            elif sample.name == ERROR_INFO_METRIC and sample.value > 0:
                texts.setdefault(
                    (sample.labels.get("stage", ""), *_key(sample.labels)), sample.labels.get("error", "")
                )
    return Scrape(errors, loads, texts)


def parse_errors(text: str) -> dict[Key, float]:
    """``loopline_prediction_errors_total`` by (variant, version) from Prometheus exposition text."""
    return parse_metrics(text).errors


def scrape_metrics(metrics_url: str, timeout: float = 5.0) -> Scrape:
    """The service's counters now; raises ``ConnectionError`` saying which URL failed."""
    import httpx

    from loopline.serving.config import client_headers

    try:
        response = httpx.get(metrics_url, timeout=timeout, headers=client_headers())
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ConnectionError(
            f"cannot read the prediction service's metrics at {metrics_url}: {exc}"
        ) from exc
    return parse_metrics(response.text)


def scrape_errors(metrics_url: str, timeout: float = 5.0) -> dict[Key, float]:
    """The service's error counters now; raises ``ConnectionError`` saying which URL failed."""
    return scrape_metrics(metrics_url, timeout).errors


def _increase(start: float, end: float) -> float:
    """A counter from ``start`` to ``end``; one that went down was reset (restart): count from 0."""
    return end - start if end >= start else end


def error_delta(before: dict[Key, float], after: dict[Key, float], key: Key) -> int:
    """Errors of ``key`` between two scrapes of one process (a restart in between: counted from 0)."""
    return int(_increase(before.get(key, 0.0), after.get(key, 0.0)))


def encode_counters(counters: dict[Key, float]) -> dict[str, float]:
    """JSON-safe (XCom, trigger kwargs): ``variant|version`` keys."""
    return {f"{v}|{m}": n for (v, m), n in counters.items()}


def decode_counters(data: dict[str, float] | None) -> dict[Key, float]:
    out: dict[Key, float] = {}
    for key, value in (data or {}).items():
        variant, _, version = key.partition("|")
        out[(variant, version)] = float(value)
    return out


def encode_mark(scrape: Scrape) -> dict[str, dict[str, float]]:
    """One URL's counters when a window starts, JSON-safe."""
    return {"errors": encode_counters(scrape.errors), "load_failures": encode_counters(scrape.load_failures)}


def decode_mark(data: dict[str, Any]) -> tuple[dict[Key, float], dict[Key, float] | None]:
    """(errors, load failures) of one URL's mark. A mark of the errors alone (taken before load failures
    were counted, e.g. by a canary that was running during an upgrade): load failures unknown (None)."""
    if set(data) == {"errors", "load_failures"} and all(isinstance(v, dict) for v in data.values()):
        return decode_counters(data["errors"]), decode_counters(data["load_failures"])
    return decode_counters(data), None


@dataclass(frozen=True)
class WindowCounts:
    """What serving counted in a window, summed over replicas: failed predictions (``errors``) and failed
    load attempts per (variant, version), and a first error text per (stage, variant, version).
    ``load_failures`` None: they could not be counted (a mark from before they were)."""

    errors: dict[Key, int]
    load_failures: dict[Key, int] | None = field(default_factory=dict)
    first_errors: dict[ErrorKey, str] = field(default_factory=dict)

    def load_failures_of(self, version: str) -> int | None:
        """Failed load attempts of ``version``, whatever role it was to serve in."""
        if self.load_failures is None:
            return None
        return sum(n for (_, v), n in self.load_failures.items() if v == str(version))

    def first_error(self, stage: str, version: str, variant: str | None = None) -> str:
        """The first error text a replica reported for ``version`` at ``stage`` ("" when none did)."""
        return next(
            (
                text
                for (s, var, v), text in sorted(self.first_errors.items())
                if s == stage and v == str(version) and variant in (None, var)
            ),
            "",
        )


# --- Errors summed over replicas ------------------------------------------------------------------------

# Every serving replica exports this label-less gauge from its start (include/loopline/serving/metrics.py):
# its series in Prometheus are the replicas scraped, its samples their scrapes.
REPLICA_METRIC = "loopline_challenger_share"
# How far before a window Prometheus is asked for a series' last sample (its default lookback delta: a
# series without a sample for this long is gone).
LOOKBACK_S = 300.0
_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(rf"^{_MATCHER}(?:,{_MATCHER})*$")


class ErrorsUnavailable(RuntimeError):
    """The window's failed predictions cannot be counted; the message says why (it blocks promotion)."""


def check_http_url(url: str, what: str) -> str:
    """``url`` when it is an absolute http(s) URL, else ``ValueError`` naming ``what``."""
    parsed = urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host, got {url!r}")
    return url.strip()


def check_selector(selector: str) -> str:
    """PromQL label matchers (``job="loopline-serving", namespace=~"prod-.*"``) or ``""``, else ``ValueError``."""
    selector = selector.strip().strip("{}").strip()
    if selector and not _SELECTOR.match(selector):
        raise ValueError(
            f"prometheus_selector must be PromQL label matchers separated by commas, e.g. "
            f'job="loopline-serving", got {selector!r}'
        )
    if re.search(r"(^|,)\s*__name__\s*[=!]", selector):
        raise ValueError("prometheus_selector must not match __name__: the canary chooses the metrics itself")
    return selector


def counted_in_window(samples: Sequence[tuple[float, float]], since: float) -> float:
    """What one counter series (``(time, value)`` samples, oldest first) counted after ``since``: from its
    last sample at or before ``since`` (none: the series was born in the window, so from 0) to its last."""
    count, last = 0.0, 0.0
    for at, value in samples:
        if at > since:
            count += _increase(last, value)
        last = value
    return count


def prometheus_query(
    prometheus_url: str, promql: str, at: float, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """The ``result`` of an instant query at ``at`` (epoch seconds); ``ErrorsUnavailable`` saying why not."""
    import httpx

    url = f"{prometheus_url.rstrip('/')}/api/v1/query"
    try:
        response = httpx.get(url, params={"query": promql, "time": f"{at:.3f}"}, timeout=timeout)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ErrorsUnavailable(f"cannot query Prometheus at {prometheus_url}: {exc}") from exc
    if response.status_code != 200 or body.get("status") != "success":
        raise ErrorsUnavailable(
            f"Prometheus at {prometheus_url} refused the query {promql!r}: "
            f"HTTP {response.status_code}: {body.get('error') or body}"
        )
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def window_errors(result: list[dict[str, Any]], since: float, until: float, where: str) -> dict[Key, int]:
    """Failed predictions per (variant, version) in ``(since, until]`` from the raw samples of the error
    counters and of ``REPLICA_METRIC`` (a Prometheus matrix ``result``), summed over replicas."""
    return window_counts(result, since, until, where).errors


def window_counts(result: list[dict[str, Any]], since: float, until: float, where: str) -> WindowCounts:
    """``window_errors``, and likewise the failed load attempts; the error texts of the window's
    ``ERROR_INFO_METRIC`` series (a gauge: present while its process lives)."""
    counts: dict[Key, float] = {}
    loads: dict[Key, float] = {}
    texts: dict[ErrorKey, str] = {}
    replicas, scrapes = 0, 0
    for series in result:
        labels = series["metric"]
        samples = [(float(at), float(value)) for at, value in series["values"]]
        name = labels.get("__name__")
        if name == REPLICA_METRIC:
            replicas += 1
            scrapes = max(scrapes, sum(since < at <= until for at, _ in samples))
        elif name == ERROR_INFO_METRIC:
            if any(at > since and value > 0 for at, value in samples):
                texts.setdefault((labels.get("stage", ""), *_key(labels)), labels.get("error", ""))
        else:
            into = loads if name == f"{LOAD_FAILURES_METRIC}_total" else counts
            into[_key(labels)] = into.get(_key(labels), 0.0) + counted_in_window(samples, since)
    if not replicas:
        raise ErrorsUnavailable(
            f"{where} holds no {REPLICA_METRIC} series: it scrapes no serving replica "
            "(check its scrape config and prometheus_selector)"
        )
    if scrapes < 2:
        raise ErrorsUnavailable(
            f"the window of {until - since:.0f} s holds {scrapes} scrape(s) of any serving "
            f"replica in {where}: too short to count errors (it needs two scrape intervals)"
        )
    return WindowCounts(
        {key: int(round(value)) for key, value in counts.items()},
        {key: int(round(value)) for key, value in loads.items()},
        texts,
    )


@dataclass(frozen=True)
class ErrorSource:
    """Where a canary counts failed predictions: Prometheus (every replica it scrapes, ``selector`` narrowing
    them) or the ``/metrics`` of each of ``metrics_urls`` (a fixed set of processes)."""

    metrics_urls: tuple[str, ...] = ()
    prometheus_url: str | None = None
    selector: str = ""

    def __post_init__(self) -> None:
        if bool(self.metrics_urls) == bool(self.prometheus_url):
            raise ValueError("count errors from exactly one of: metrics_urls, prometheus_url")
        for url in self.metrics_urls:
            check_http_url(url, "every metrics URL")
        if len(set(self.metrics_urls)) != len(self.metrics_urls):
            raise ValueError(
                f"metrics URLs repeat (each replica would be counted twice): {list(self.metrics_urls)}"
            )
        if self.prometheus_url:
            object.__setattr__(
                self, "prometheus_url", check_http_url(self.prometheus_url, "the Prometheus URL")
            )
        object.__setattr__(self, "selector", check_selector(self.selector))

    def describe(self) -> str:
        if self.prometheus_url:
            return f"Prometheus at {self.prometheus_url}" + (f" {{{self.selector}}}" if self.selector else "")
        return "/metrics of " + ", ".join(self.metrics_urls)

    def mark(self) -> dict[str, Any] | None:
        """What to remember when a window starts (JSON-safe): each URL's counters; Prometheus keeps the
        history itself (``{}``). None: a URL could not be read, so this window's errors cannot be counted."""
        if self.prometheus_url:
            return {}
        try:
            return {url: encode_mark(scrape_metrics(url)) for url in self.metrics_urls}
        except ConnectionError:
            return None

    def count(self, mark: dict[str, Any] | None, since: float, until: float) -> dict[Key, int]:
        """Failed predictions per (variant, version) between ``since`` (when ``mark`` was taken) and ``until``
        (now), summed over the replicas; ``ErrorsUnavailable`` when they cannot be counted."""
        return self.count_all(mark, since, until).errors

    def count_all(self, mark: dict[str, Any] | None, since: float, until: float) -> WindowCounts:
        """``count``, with the failed load attempts and first error texts of the same read."""
        if self.prometheus_url:
            return self._count_prometheus(self.prometheus_url, since, until)
        if mark is None or set(mark) != set(self.metrics_urls):
            raise ErrorsUnavailable("the error counters could not be read when the window began")
        errors: dict[Key, int] = {}
        loads: dict[Key, int] | None = {}
        texts: dict[ErrorKey, str] = {}
        for url in self.metrics_urls:
            before, loads_before = decode_mark(mark[url])
            try:
                after = scrape_metrics(url)
            except ConnectionError as exc:
                raise ErrorsUnavailable(str(exc)) from exc
            for key in after.errors:
                errors[key] = errors.get(key, 0) + error_delta(before, after.errors, key)
            if loads is not None and loads_before is not None:
                for key in after.load_failures:
                    loads[key] = loads.get(key, 0) + error_delta(loads_before, after.load_failures, key)
            else:
                loads = None  # a replica's baseline is unknown: the sum is too
            for error_key, text in after.first_errors.items():
                texts.setdefault(error_key, text)
        return WindowCounts(errors, loads, texts)

    def _count_prometheus(self, prometheus_url: str, since: float, until: float) -> WindowCounts:
        names = "|".join(
            (f"{ERRORS_METRIC}_total", f"{LOAD_FAILURES_METRIC}_total", ERROR_INFO_METRIC, REPLICA_METRIC)
        )
        matchers = f'__name__=~"{names}"' + (f", {self.selector}" if self.selector else "")
        reach_ms = math.ceil((max(until - since, 0.0) + LOOKBACK_S) * 1000)
        result = prometheus_query(prometheus_url, f"{{{matchers}}}[{reach_ms}ms]", until)
        return window_counts(result, since, until, self.describe())

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics_urls": list(self.metrics_urls),
            "prometheus_url": self.prometheus_url,
            "selector": self.selector,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorSource:
        return cls(
            tuple(data.get("metrics_urls") or ()), data.get("prometheus_url"), data.get("selector") or ""
        )


def arrived_labels(settings: Settings, event_ids: Iterable[str]) -> dict[str, float]:
    """Labels known now (curated store, label delay honoured) for these events: id → the use case's label
    (0/1 for a classifier, the true value for a regressor)."""
    from loopline.config.use_case import load_use_case
    from loopline.features.curated import read_labels

    wanted = set(event_ids)
    if not wanted:
        return {}
    use_case = load_use_case(settings.use_case)
    id_column, label = use_case.id_column, use_case.label_column
    labels = read_labels(settings, datetime.now(UTC))
    labels = labels[labels[id_column].astype(str).isin(wanted) & labels[label].notna()]
    return {str(t): float(y) for t, y in zip(labels[id_column], labels[label], strict=True)}
