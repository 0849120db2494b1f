"""Infra validation: the serving app starts with the candidate in a separate process and answers
sample and edge-case requests correctly within a time limit. The process is always stopped (by PID)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loopline.config import Settings, telemetry_off_env
from loopline.config.use_case import UseCase, load_use_case
from loopline.platform.processes import ProcessRegistry, free_port, spawn, stop_trees, tail
from loopline.serving.prediction_log import PROBE_ID_PREFIX

LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class ProbeResult:
    name: str
    passed: bool
    status: int | None
    detail: str = ""


@dataclass(frozen=True)
class InfraResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    ready_s: float | None = None  # seconds until /readyz answered 200
    probes: list[ProbeResult] = field(default_factory=list)
    log: str = ""
    log_tail: str = ""  # the server's last log lines when something failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _jsonable(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def as_request(row: dict[str, Any]) -> dict[str, Any]:
    """An event row (pandas types) as the JSON the prediction API takes."""
    return {k: _jsonable(v) for k, v in row.items()}


def _call(url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int | None, Any]:
    from loopline.serving.config import client_headers

    request = urllib.request.Request(
        url,
        data=body,
        method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json", **client_headers()},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)
    try:
        return status, json.loads(raw or b"null")
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")[:500]


def _check_predictions(
    name: str,
    status: int | None,
    payload: Any,
    sent: list[dict[str, Any]],
    version: str,
    use_case: UseCase,
) -> ProbeResult:
    """One answer per event sent, in order, echoing its id (the use case's id column), with the version and
    a score: a probability for a classifier, a finite number for a regressor."""
    if status != 200:
        return ProbeResult(name, False, status, f"expected 200, got {status}: {str(payload)[:300]}")
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(sent):
        return ProbeResult(name, False, status, f"expected {len(sent)} predictions, got {str(payload)[:300]}")
    id_column, regression = use_case.id_column, use_case.task == "regression"
    problems = []
    for event, pred in zip(sent, predictions, strict=True):
        score, event_id = pred.get("score"), event[id_column]
        if pred.get(id_column) != event_id:
            problems.append(f"id {pred.get(id_column)!r} echoed for {event_id!r}")
        number = isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score)
        if not number or (not regression and not 0.0 <= float(score) <= 1.0):
            problems.append(
                f"{event_id}: score {score!r} not {'a finite number' if regression else 'in [0, 1]'}"
            )
        if str(pred.get("model_version")) != str(version):
            problems.append(f"{event_id}: model_version {pred.get('model_version')!r} != {version}")
    return ProbeResult(name, not problems, status, "; ".join(problems[:5]))


def _is_text(dtype: str) -> bool:
    return dtype in ("object", "string", "str") or dtype.startswith("string")


def _edge_cases(sample: dict[str, Any], use_case: UseCase) -> list[tuple[str, list[dict[str, Any]]]]:
    """From the use case's event columns and dtypes: an event whose unit and other entity keys (text columns
    named ``*_id``) were never seen, and one without the descriptive fields only some channels send (the
    fairness groups, which are never model inputs)."""
    id_column = use_case.id_column
    keys = [
        column
        for column, dtype in use_case.event_columns.items()
        if column != id_column
        and column in sample
        and _is_text(dtype)
        and (column == use_case.unit_column or column.endswith("_id"))
    ]
    unknown = {
        **sample,
        id_column: f"{sample[id_column]}_gate_unknown",
        **{column: f"{column}_gate_probe_unknown" for column in keys},
    }
    sparse = {k: v for k, v in sample.items() if k not in use_case.group_columns}
    sparse[id_column] = f"{sample[id_column]}_gate_sparse"
    return [("unknown_unit", [unknown]), ("missing_optional_fields", [sparse])]


def _missing_required(use_case: UseCase) -> dict[str, Any]:
    """An event with one numeric field and neither its id nor anything else the API requires."""
    numeric = [
        c
        for c, dtype in use_case.event_columns.items()
        if c != use_case.id_column and not _is_text(dtype) and not dtype.startswith("datetime")
    ]
    return {numeric[0]: 1.0} if numeric else {"gate_probe_field": 1.0}


def probe_requests(
    requests: list[dict[str, Any]], version: str, use_case: UseCase | None = None
) -> list[dict[str, Any]]:
    """The sample with ids of their own: the server logs what it scores, and a probe must never pass for
    a real event in the prediction log (monitoring joins it with labels). ``use_case``: default the
    configured one."""
    id_column = (use_case or load_use_case(Settings().use_case)).id_column
    return [{**r, id_column: f"{PROBE_ID_PREFIX}v{version}_{r[id_column]}"} for r in requests]


def validate_serving(
    settings: Settings,
    model_uri: str,
    version: str,
    requests: list[dict[str, Any]],
    timeout_s: float,
    workdir: Path,
) -> InfraResult:
    """Start ``python -m loopline.serving`` for ``model_uri`` on a free loopback port, wait for
    ``/readyz`` within ``timeout_s``, probe it, stop it. Never raises for a bad model: it reports."""
    use_case = load_use_case(settings.use_case)
    requests = probe_requests(requests, version, use_case)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(settings.host)
    log_path = workdir / "serving.log"
    log_path.unlink(missing_ok=True)
    # Fresh features off: the probes are not real events and must not enter the online store.
    argv = [
        sys.executable,
        "-m",
        "loopline.serving",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model-uri",
        model_uri,
        "--fresh-features",
        "off",
    ]
    env = {**os.environ, **telemetry_off_env(), **settings.env()}
    registry = ProcessRegistry(workdir / "processes.json")
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    record = spawn("gate-serving", argv, env, log_path, registry, cwd=settings.project_dir)
    reasons: list[str] = []
    probes: list[ProbeResult] = []
    ready_s = None
    try:
        while time.monotonic() - started < timeout_s:
            status, body = _call(f"{base}/readyz", timeout=2.0)
            if status == 200:
                ready_s = time.monotonic() - started
                break
            problem = body.get("problem") if isinstance(body, dict) else None
            if problem:  # the app is up but says it cannot load the model: no point waiting it out
                reasons.append(f"the serving app cannot load {model_uri}: {str(problem)[:500]}")
                break
            if not record.is_running():
                reasons.append(f"the serving process exited before it was ready (see {log_path})")
                break
            time.sleep(0.25)
        else:
            reasons.append(f"the serving app was not ready within {timeout_s:g} s")
        if ready_s is not None:
            probes = _probe(base, version, requests, use_case, deadline=started + timeout_s)
            reasons += [f"{p.name}: {p.detail or f'HTTP {p.status}'}" for p in probes if not p.passed]
    finally:
        stop_trees([record], timeout=10.0)
        registry.clear()
    log_tail = tail(log_path, LOG_TAIL_LINES) if reasons else ""
    return InfraResult(
        passed=not reasons,
        reasons=reasons,
        ready_s=ready_s,
        probes=probes,
        log=str(log_path),
        log_tail=log_tail,
    )


def _probe(
    base: str, version: str, requests: list[dict[str, Any]], use_case: UseCase, deadline: float
) -> list[ProbeResult]:
    url = f"{base}/v1/predict"
    remaining = max(deadline - time.monotonic(), 5.0)
    probes: list[ProbeResult] = []
    if not requests:
        return [ProbeResult("sample", False, None, "no sample requests to send")]
    key = use_case.batch_names["events"]  # the API takes {"<events batch name>": [event, ...]}

    def body(events: Any) -> bytes:
        return json.dumps({key: events}).encode()

    status, payload = _call(url, body(requests), timeout=remaining)
    probes.append(_check_predictions("sample", status, payload, requests, version, use_case))
    status, payload = _call(url, body(requests[:1]), timeout=remaining)
    probes.append(_check_predictions("single", status, payload, requests[:1], version, use_case))
    for name, sent in _edge_cases(requests[0], use_case):
        status, payload = _call(url, body(sent), timeout=remaining)
        probes.append(_check_predictions(name, status, payload, sent, version, use_case))
    for name, raw in (
        ("malformed_json", b"{not json"),
        ("wrong_shape", body("nope")),
        ("missing_required_field", body([_missing_required(use_case)])),
    ):
        status, payload = _call(url, raw, timeout=remaining)
        ok = status is not None and 400 <= status < 500
        probes.append(
            ProbeResult(name, ok, status, "" if ok else f"expected a 4xx, got {status}: {str(payload)[:200]}")
        )
    return probes
