"""Helpers of the canary tests: faulty challengers registered as real MLflow pyfunc versions (or with
their files gone), a constant client load against a running service, chargebacks (labels) arriving for
what it answered, and a serving replica's real /metrics on a free port."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import mlflow.pyfunc
import numpy as np
from serving_testkit import MODEL

from loopline.config import Settings
from loopline.deployment.actions import PREVIOUS_CHAMPION_ALIAS


class FaultyModel(mlflow.pyfunc.PythonModel):
    """The trained model with one fault: ``raise`` for some inputs, ``raise_all`` for every amount with
    cents, ``slow`` by ``delay_s`` per call, ``shift`` its scores to just below 1 (it flags everything),
    ``shuffled``: ranks backwards with the score distribution of ``reference`` (the champion's scores on
    live traffic), so only labels reveal it. Warm-up rows (integral amounts) never raise, so it loads —
    except ``unloadable``, whose loading itself raises."""

    def __init__(self, fault: str, delay_s: float = 0.15, reference: Sequence[float] = ()) -> None:
        if fault == "shuffled" and not len(reference):
            raise ValueError("the shuffled fault needs reference scores: the champion's on live traffic")
        self.fault = fault
        self.delay_s = delay_s
        self.reference = tuple(sorted(float(s) for s in reference))

    def load_context(self, context: Any) -> None:
        if self.fault == "unloadable":
            raise RuntimeError("injected fault: this model's weights do not match its code")
        self.base = mlflow.pyfunc.load_model(context.artifacts["base"])

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        if self.fault == "raise_all":
            cents = (model_input["amount"] * 100).round().astype("int64")
            if (cents % 100 != 0).any():
                raise ValueError("injected fault: this model cannot score any amount with cents")
        if self.fault == "raise":
            cents = (model_input["amount"] * 100).round().astype("int64")
            if ((cents % 100 != 0) & (cents % 3 == 0)).any():
                raise ValueError("injected fault: this model cannot score amounts like these")
        out = self.base.predict(model_input)
        if self.fault == "slow":
            time.sleep(self.delay_s)
        if self.fault == "shift":  # miscalibrated: every transaction looks like fraud (ranking kept)
            out = out.copy()
            out["score"] = 0.99 + 0.009 * out["score"]
        if self.fault == "shuffled":
            # Each score goes to the reference's mirrored quantile: a fixed function of the transaction's own
            # score (deterministic per transaction), the same distribution (PSI ~ 0), the ranking reversed.
            reference = np.asarray(self.reference)
            quantile = np.searchsorted(reference, out["score"].to_numpy(dtype="float64")) / len(reference)
            out = out.copy()
            out["score"] = np.quantile(reference, 1.0 - quantile)
        return out


def register_faulty(
    tracking_uri: str,
    base_version: str,
    fault: str,
    model_name: str = "fraud_detector",
    reference: Sequence[float] = (),
) -> str:
    """Log and register a ``FaultyModel`` wrapping ``base_version``; returns the new version."""
    import mlflow
    from mlflow.artifacts import download_artifacts

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    base_uri = f"models:/{model_name}/{base_version}"
    signature = mlflow.models.get_model_info(base_uri).signature
    local = download_artifacts(base_uri)
    mlflow.set_experiment("canary-tests")
    with mlflow.start_run(run_name=f"faulty-{fault}"):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=FaultyModel(fault, reference=reference),
            artifacts={"base": local},
            signature=signature,
            pip_requirements=["mlflow"],
        )  # no inference: seconds
    return str(mlflow.register_model(info.model_uri, model_name).version)


def remove_files(tracking_uri: str, version: str, model_name: str = "fraud_detector") -> Path:
    """Delete the stored files of a registered version (a lost or unreadable artifact store): the registry
    still lists it, serving cannot load it. Returns the directory removed."""
    import shutil
    from urllib.parse import urlsplit
    from urllib.request import url2pathname

    from loopline.platform.mlflow_util import mlflow_client

    uri = mlflow_client(tracking_uri).get_model_version_download_uri(model_name, version)
    path = Path(url2pathname(urlsplit(uri).path)) if uri.startswith("file:") else Path(uri)
    if not (path / "MLmodel").is_file():
        raise AssertionError(f"version {version}'s files are not at {path} (download URI {uri})")
    shutil.rmtree(path)
    return path


class Replica:
    """One serving process's /metrics: its real ServingMetrics behind prometheus_client's HTTP server on a
    free loopback port; ``restart()`` is a new process (fresh counters) at the same URL."""

    def __init__(self) -> None:
        from prometheus_client import start_http_server

        from loopline.platform.processes import free_port
        from loopline.serving.metrics import ServingMetrics

        self._new = ServingMetrics
        self.metrics = ServingMetrics()
        self.server, self.thread = start_http_server(free_port(), addr="127.0.0.1", registry=self)
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"

    def collect(self):  # the registry prometheus_client's server exposes: this process's, now
        return self.metrics.registry.collect()

    def restart(self) -> None:
        self.metrics = self._new()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Load:
    """Single-row requests in ``clients`` threads until stopped: (status, variant, version) per request."""

    url: str
    transactions: list[dict[str, Any]]
    clients: int = 2
    outcomes: list[tuple[int, str | None, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._loop, args=(n,), daemon=True) for n in range(self.clients)
        ]

    def _loop(self, offset: int) -> None:
        n = len(self.transactions)
        stride = next(s for s in range(7, 7 + n) if math.gcd(s, n) == 1)  # coprime: every transaction is sent
        with httpx.Client(base_url=self.url, timeout=30) as http:
            i = offset
            while not self._stop.is_set():
                tx = self.transactions[i % n]
                try:
                    response = http.post("/v1/predict", json={"transactions": [tx]})
                    p = response.json()["predictions"][0] if response.status_code == 200 else {}
                    outcome = (response.status_code, p.get("variant"), p.get("model_version"))
                except httpx.HTTPError:
                    outcome = (-1, None, None)
                with self._lock:
                    self.outcomes.append(outcome)
                i += stride

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def failed(self) -> list[tuple[int, str | None, str | None]]:
        with self._lock:
            return [o for o in self.outcomes if o[0] != 200]

    def versions(self) -> Counter:
        with self._lock:
            return Counter((v, m) for s, v, m in self.outcomes if s == 200)


class LabelFeed:
    """Chargebacks as production delivers them, while the service answers: every ``every`` seconds the labels
    of the transactions it answered since the feed started (and that have ground truth in ``truth``) land
    as one batch file in ``landing/labels/`` and go through the real write–audit–publish (``ingest_file``:
    the GX suite, the curated store, the ledger), stamped with the moment they land — which is what
    ``read_labels`` honours as the label delay."""

    def __init__(self, settings: Settings, truth: Mapping[str, int], every: float = 1.0) -> None:
        self.settings = settings
        self.truth = dict(truth)
        self.every = every
        self.delivered: set[str] = set()
        self.batches: list[Any] = []  # IngestResult of each landed batch
        self._since = time.time()
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _answered(self) -> set[str]:
        import sqlite3

        path = self.settings.state.prediction_log
        if not path.exists():
            return set()
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute(
                "SELECT DISTINCT transaction_id FROM predictions WHERE ts >= ?", (self._since,)
            )
            return {str(r[0]) for r in rows}
        finally:
            conn.close()

    def deliver(self) -> int:
        """Land one batch now: the labels of every answered transaction not labelled yet; returns how many."""
        from loopline.data.batch_files import write_frame
        from loopline.data.ingest import ingest_file

        ids = sorted(t for t in self._answered() if t in self.truth and t not in self.delivered)
        if not ids:
            return 0
        path = self.settings.state.landing / "labels" / f"labels_chargebacks_{len(self.batches):04d}.parquet"
        write_frame(self._frame(ids), path, "parquet")
        result = ingest_file(self.settings, path)
        if result.status != "published" or result.published_rows != len(ids):
            raise AssertionError(f"a label batch was not published: {result.summary()}")
        self.delivered.update(ids)
        self.batches.append(result)
        return len(ids)

    def _frame(self, ids: list[str]) -> Any:
        """A labels batch as the contract has it, known now."""
        import pandas as pd

        from loopline.usecases.fraud.schema import LABEL_COLUMNS
        from loopline.usecases.fraud.simulator import conform

        return conform(
            pd.DataFrame(
                {
                    "transaction_id": ids,
                    "is_fraud": [self.truth.get(t, 0) for t in ids],
                    "label_timestamp": pd.Timestamp(datetime.now(UTC)),
                }
            ),
            LABEL_COLUMNS,
        )

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.deliver()
            except (
                BaseException
            ) as exc:  # surfaced by __exit__: a feed that dies silently would look like "no labels"
                self._errors.append(exc)
                return

    def __enter__(self) -> LabelFeed:
        from loopline.data.ingest import use_case_of
        from loopline.data.validation import validate_frame

        # GX builds the suite's validator once per process (seconds of CPU): before the traffic, not mid-bake.
        validate_frame(self._frame(["tx_warmup"]), "labels", use_case_of(self.settings).expectations_dir)
        self._since = time.time()
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        if self._errors and exc_type is None:
            raise self._errors[0]


# What a canary test leaves on the registered model; reset between tests so none inherits another's state.
ALIASES = ("champion", "challenger", PREVIOUS_CHAMPION_ALIAS)
TAGS = ("loopline.challenger_traffic", "loopline.challenger_mode")


def reset(client: Any) -> None:
    """The registered model without canary aliases and traffic tags."""
    model = client.get_registered_model(MODEL)
    for alias in ALIASES:
        if alias in (model.aliases or {}):
            client.delete_registered_model_alias(MODEL, alias)
    for tag in TAGS:
        if tag in (model.tags or {}):
            client.delete_registered_model_tag(MODEL, tag)
