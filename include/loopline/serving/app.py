"""The HTTP API of the prediction service (FastAPI): ``/v1/predict``, ``/healthz``, ``/readyz``, ``/metrics``.

Deliberately without ``from __future__ import annotations``: the request model is built per app (its
batch limit comes from the config) and FastAPI must see the real class in the endpoint's signature.
"""

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError, create_model
from pydantic_core import to_json

from loopline.config import Settings
from loopline.config.use_case import UseCase, load_use_case
from loopline.serving.config import API_KEY_ENV, ServingConfig, api_keys
from loopline.serving.engine import Engine, NotReady
from loopline.serving.metrics import ServingMetrics
from loopline.serving.prediction_log import (
    AnyPredictionLog,
    PredictionLogUnavailable,
    Retention,
    open_prediction_log,
)
from loopline.serving.request import contract, prediction_model, request_model

log = logging.getLogger("loopline.serving")
PREDICT_PATH = "/v1/predict"
ROUTES = (PREDICT_PATH, "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
# With an API key set, every path but these needs it (unknown paths too: deny by default).
OPEN_PATHS = frozenset(("/healthz", "/readyz"))
UNAUTHORIZED = json.dumps(
    {"detail": "missing or invalid API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"}
).encode()


class Problem(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='where, e.g. ["body", "<events>", 0, "<field>"]')
    msg: str
    type: str


class ValidationProblem(BaseModel):
    detail: list[FieldError]


def _json(status: int, detail: str) -> tuple[int, bytes]:
    return status, json.dumps({"detail": detail}).encode()


class GuardMiddleware:
    """Pure ASGI (cheap per request): the API key when one is set (401 before anything else; nothing at all
    when none is), 415/413 for the predict body before anything parses it, and the per-route
    request/error/latency metrics for every response.

    It also answers a valid predict request itself with ``predict(body)``, the very function the FastAPI
    route runs: FastAPI's per-request machinery under it (exception middleware, router, dependency
    solving) cost ~10 % of the event loop at concurrency 32. An invalid body (``predict`` raises
    ``RequestValidationError``) goes on to the route, so FastAPI's handler writes its usual 422."""

    def __init__(
        self,
        app: Any,
        metrics: ServingMetrics,
        max_body_bytes: int,
        predict: Callable[[bytes], Awaitable[Response]] | None = None,
        api_keys: Sequence[str] = (),
        events: str = "events",
    ) -> None:
        self.app = app
        self.events = events  # what a request lists (its 413 says to send fewer of them)
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.predict = predict
        self.keys = tuple(key.encode() for key in api_keys)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else "other"
        status_seen = [500]

        async def send_with_status(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
            await send(message)

        try:
            if self.keys and path not in OPEN_PATHS and not self._authorized(scope["headers"]):
                await self._reply(send_with_status, 401, UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
                return
            if path == PREDICT_PATH and scope["method"] == "POST":
                refusal, body, receive = await self._check_body(scope, receive)
                if refusal is not None:
                    await self._reply(send_with_status, *refusal)
                    return
                if self.predict is not None:
                    with contextlib.suppress(RequestValidationError):
                        response = await self.predict(body)
                        await response(scope, receive, send_with_status)
                        return
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.http(route, status_seen[0], time.perf_counter() - started)

    async def _check_body(
        self, scope: dict[str, Any], receive: Any
    ) -> tuple[tuple[int, bytes] | None, bytes, Any]:
        headers = {
            k.lower(): v for k, v in scope["headers"] if k.lower() in (b"content-type", b"content-length")
        }
        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            return (
                _json(415, f"Content-Type must be application/json, not {media or 'missing'!r}"),
                b"",
                receive,
            )
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body
            except ValueError:
                return _json(400, "Content-Length is not a number"), b"", receive
            if too_big:
                return (
                    _json(
                        413,
                        f"body of {int(declared)} bytes exceeds the limit of {self.max_body} bytes; "
                        f"send fewer {self.events} per request",
                    ),
                    b"",
                    receive,
                )
        chunks, size = [], 0
        while True:  # read it all (chunked bodies have no Content-Length): count as it streams in
            message = await receive()
            if message["type"] == "http.disconnect":
                return _json(400, "client disconnected"), b"", receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return (
                    _json(
                        413,
                        f"body exceeds the limit of {self.max_body} bytes; "
                        f"send fewer {self.events} per request",
                    ),
                    b"",
                    receive,
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            message: dict[str, Any] = await receive()
            return message

        return None, body, replay

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` holds an accepted key (compared in constant
        time with every accepted key, so timing tells neither which nor how much matched)."""
        offered = b""
        for name, value in headers:
            name = name.lower()
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    offered = token.strip()
            elif name == b"x-api-key":
                offered = value.strip()
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(offered, key)
        return matched

    @staticmethod
    async def _reply(
        send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *(headers or ()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


_TIMED_OUT = object()  # a request's future, settled by its answer timeout


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _echo(value: Any) -> Any:
    """``value`` as JSON can carry it: undecodable bytes with replacement characters, non-finite numbers
    (``NaN``, ``Infinity``, ``1e400``, which the JSON parser reads as inf) as their JSON spelling in a string.
    Without this FastAPI's 422 handler fails to encode the input it echoes and answers 500."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {k: _echo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_echo(v) for v in value]
    return value


def _field_error(error: Any) -> dict[str, Any]:
    """A pydantic error as FastAPI's 422 item, its echoed input made encodable (``_echo``)."""
    item = {**error, "loc": ("body", *error["loc"])}
    if "input" in item:
        item["input"] = _echo(item["input"])
    return item


# uuid.UUID's version and variant bits (RFC 4122), as uuid.UUID(version=4) sets them.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (4 << 76) | (0x8000 << 48)


def new_request_id() -> str:
    """A random (version 4) UUID as 32 hex digits, as ``uuid.uuid4().hex`` gives it, without building the
    ``UUID`` object (its checks cost more than the random bytes, once per request)."""
    return f"{int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET:032x}"


def _document_auth(schema: dict[str, Any]) -> None:
    """The API key in the OpenAPI schema: both ways of sending it, required everywhere but the probes."""
    schema["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": f"the key of {API_KEY_ENV}"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    schema["security"] = [{"bearer": []}, {"apiKey": []}]
    schema["components"]["schemas"].setdefault("Problem", Problem.model_json_schema())
    unauthorized = {
        "description": "missing or invalid API key",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path in OPEN_PATHS:
                operation["security"] = []
            else:
                operation.setdefault("responses", {})["401"] = unauthorized


# /readyz is open (probes, load balancers) even when an API key guards the rest: it says *that* and, as a code,
# *why* the service is (not) ready, never registry URLs, paths or exception text; the details go to the log.
READY_REASONS = (
    "starting",
    "model_not_loaded",
    "no_champion",
    "registry_unreachable",
    "model_load_failed",
    "warming",
    "serving",
)


def _readiness(engine: Engine | None, source: Any) -> tuple[bool, str, str | None]:
    """(ready, reason code, problem code or None) from the engine and the model source's state.

    ``problem``: a failure the source reports (``model_load_failed``, ``registry_unreachable``,
    ``no_champion``; ``challenger_load_failed`` while the champion serves) — the gate's probe stops
    waiting on it."""
    if engine is None:
        return False, "starting", None
    deployment = engine.deployment
    error = getattr(source, "last_error", None)
    desired = getattr(source, "desired", None)
    problem = None
    if error:
        if str(error).startswith("registry "):  # RegistryReconciler: the registry itself did not answer
            problem = "registry_unreachable"
        elif desired is not None and desired.champion is None:
            problem = "no_champion"
        else:
            problem = "challenger_load_failed" if deployment.ready else "model_load_failed"
    if deployment.ready:
        return True, "serving", problem
    if deployment.champion is not None:
        return False, "warming", problem
    return False, problem or "model_not_loaded", problem


def _versions(deployment: Any) -> dict[str, Any]:
    """What serves, by version (as every prediction names it): no model URIs."""
    champion, challenger = deployment.champion, deployment.challenger
    return {
        "champion": champion and {"version": champion.version},
        "challenger": challenger
        and {
            "version": challenger.version,
            "share": deployment.challenger_share,
            "shadow": deployment.shadow,
        },
    }


def _log_readiness(state: dict[str, Any], reason: str, problem: str | None) -> None:
    """Log the full story (the engine's status, the source's error) once per change of what /readyz says."""
    engine, source = state.get("engine"), state.get("source")
    detail = (reason, problem, getattr(engine, "status", None), getattr(source, "last_error", None))
    if state.get("readiness_logged") != detail:
        state["readiness_logged"] = detail
        level = logging.WARNING if problem else logging.INFO
        log.log(
            level,
            "readiness: %s%s; status: %s; source error: %s",
            reason,
            f" ({problem})" if problem else "",
            detail[2],
            detail[3],
        )


def _fresh_features(settings: Settings, config: ServingConfig, plog: AnyPredictionLog) -> Any:
    """The recent events that keep features fresh (``loopline.features.fresh``), loaded and started; None
    when switched off or when they cannot be set up (logged: features are then as of the last
    materialisation, and ``loopline features check-served`` will show it)."""
    if not config.fresh_features.enabled:
        return None

    from loopline.features.fresh import FreshFeatures, FreshFeaturesUnavailable
    from loopline.serving.prediction_log import AnsweredFeed, served_events_lookback

    fresh = FreshFeatures(
        settings,
        flush_interval_s=config.fresh_features.flush_interval_s,
        refresh_interval_s=config.fresh_features.refresh_interval_s,
        slice_entities=config.fresh_features.write_slice,
        coalesce_s=config.fresh_features.coalesce_s,
    )
    # The app's own settings' use case reads the served rows, not the process environment's default.
    feed = AnsweredFeed(plog, known=fresh.knows, settings=settings)
    fresh.served = feed
    lookback = served_events_lookback(settings)
    fresh.backlog = lambda: feed.backlog(datetime.now(UTC) - lookback)
    try:
        fresh.bootstrap()
    except FreshFeaturesUnavailable as exc:
        log.warning("fresh features are OFF: %s", exc)
        return None
    except Exception as exc:  # e.g. no feature view registered yet: the writer thread retries
        log.warning(
            "fresh features wait: %s (retried every %.0f s; until then features are as of the last "
            "materialisation)",
            exc,
            config.fresh_features.refresh_interval_s,
        )
    else:
        log.info("fresh features on: %d recent events known", len(fresh.windows))
    return fresh.start()


def create_app(
    settings: Settings,
    config: ServingConfig,
    *,
    source_factory: Any = None,
    prediction_log: AnyPredictionLog | None = None,
    keys: Sequence[str] | None = None,
    use_case: UseCase | None = None,
) -> FastAPI:
    """The ASGI app. ``source_factory(engine)`` returns what feeds the engine models (a ``FixedModel`` or a
    ``RegistryReconciler``, started with the app and stopped with it). ``keys``: the accepted API keys
    (default: ``LOOPLINE_SERVING_API_KEY``, else the config's ``auth.api_key_file``; none: no key needed).
    ``use_case``: what it scores (default: the settings' use case): the request and answer shapes, the id
    the log keys rows by, the unit routing is sticky by (``loopline.serving.request``)."""
    use_case = use_case or load_use_case(settings.use_case)
    keys = tuple(api_keys(config) if keys is None else keys)
    if keys:
        log.info("API key required on every route but /healthz and /readyz (%d key(s) accepted)", len(keys))
    else:
        log.info("no API key set (%s): every route is open", API_KEY_ENV)
    metrics = ServingMetrics(use_case.task)
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        plog = prediction_log or open_prediction_log(
            settings,
            synchronous=config.log.synchronous,
            timeout_s=config.log.db_timeout_s,
            connect_timeout_s=config.log.connect_timeout_s,
            fail_fast_s=config.log.fail_fast_s,
        )
        fresh = _fresh_features(settings, config, plog)
        engine = Engine(
            plog,
            max_rows=config.batching.max_rows,
            observer=metrics,
            inline=config.batching.mode == "inline",
            fresh=fresh,
            use_case=use_case,
        )
        state["engine"] = engine
        source = source_factory(engine).start() if source_factory is not None else None
        state["source"] = source
        retention = (
            Retention(plog, settings, config.log.retention, observer=metrics.retention).start()
            if config.log.retention.enabled
            else None
        )
        try:
            yield
        finally:
            if retention is not None:
                retention.stop()
            if source is not None:
                source.stop()
            engine.close()
            if fresh is not None:
                fresh.close()
            if prediction_log is None:
                plog.close()

    app = FastAPI(
        title="Loopline prediction service",
        version="1",
        description=f"{use_case.description or use_case.name} Scores from the registry's champion (and "
        "challenger), with online features from Feast and a durable prediction log.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.serving = state
    payload_model = request_model(use_case, config.limits.max_events_per_request)
    events_key = contract(use_case).list_key
    response_model = create_model("PredictResponse", predictions=(list[prediction_model(use_case)], ...))  # type: ignore[misc,arg-type]
    answer_timeout, retry_after = config.log.answer_timeout_s, str(config.log.retry_after_s)

    async def answer(body: bytes) -> Response:
        """Score one predict request's body; ``RequestValidationError`` for an invalid one. Run by the
        route below and, for speed, by ``GuardMiddleware`` itself."""
        # The body is validated here straight from bytes (pydantic-core parses and validates in one pass,
        # ~2x cheaper than FastAPI's json.loads + validate); errors keep FastAPI's 422 shape.
        try:
            payload: Any = payload_model.model_validate_json(body)  # a model made at runtime (request_model)
        except ValidationError as exc:
            raise RequestValidationError(
                [_field_error(e) for e in exc.errors(include_url=False, include_context=False)]
            ) from None
        engine: Engine = state["engine"]
        request_id = new_request_id()
        events = [event.model_dump(mode="json") for event in getattr(payload, events_key)]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        # Inline batching answers on the event loop itself: no need to wake it (call_soon_threadsafe) per request.
        schedule = loop.call_soon if engine.inline else loop.call_soon_threadsafe

        def settle(result: list[dict[str, Any]] | BaseException) -> None:
            schedule(_settle, future, result)

        try:
            engine.route(events, request_id, settle)
        except NotReady:
            reason = _readiness(engine, state.get("source"))[1]
            return JSONResponse(
                {"detail": f"no model is ready to serve ({reason}); GET /readyz for the state"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        # Bounded: a batch stuck in the log (or scoring) answers 503 instead of holding the request.
        timer = loop.call_later(answer_timeout, _settle, future, _TIMED_OUT)
        try:
            result = await future
        finally:
            timer.cancel()
        if result is _TIMED_OUT or isinstance(result, PredictionLogUnavailable):
            cause = "answer_timeout" if result is _TIMED_OUT else "database"
            metrics.log_unavailable.labels(cause).inc()
            if result is _TIMED_OUT:
                log.warning(
                    "request %s was not scored and logged within %g s: answered 503",
                    request_id,
                    answer_timeout,
                )
            return JSONResponse(
                {
                    "detail": f"the prediction log did not commit request {request_id} in time; it "
                    f"was not answered: retry after {retry_after} s"
                },
                status_code=503,
                headers={"Retry-After": retry_after},
            )
        if isinstance(result, BaseException):
            return JSONResponse(
                {"detail": f"internal error while scoring request {request_id}; see the server log"},
                status_code=500,
            )
        # pydantic-core writes the answer in a fraction of json.dumps' time; a non-finite score as null.
        content = to_json({"predictions": result}, inf_nan_mode="null")
        return Response(content, media_type="application/json", headers={"X-Request-ID": request_id})

    async def predict(request: Request) -> Response:
        return await answer(await request.body())

    app.add_api_route(
        PREDICT_PATH,
        predict,
        methods=["POST"],
        response_model=response_model,
        summary=f"Score {events_key}",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
            }
        },
        responses={
            422: {"model": ValidationProblem, "description": "invalid input, per field"},
            413: {"model": Problem, "description": "body too large"},
            415: {"model": Problem, "description": "Content-Type is not application/json"},
            503: {
                "model": Problem,
                "description": "no model loaded yet, or the prediction log did not "
                "commit in time (see Retry-After)",
            },
        },
    )

    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus the request model the endpoint validates itself."""
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            request_schema = payload_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(request_schema.pop("$defs", {}))
            components["PredictRequest"] = request_schema
            if keys:
                _document_auth(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/readyz",
        summary="200 once a model is loaded and warmed",
        responses={503: {"description": "not ready; `reason` says why, as a code"}},
    )
    async def readyz() -> JSONResponse:
        ready, reason, problem = _readiness(state.get("engine"), state.get("source"))
        _log_readiness(state, reason, problem)
        engine: Engine | None = state.get("engine")
        body = {
            "status": "ready" if ready else "not ready",
            "reason": reason,
            "problem": problem,
            "deployment": _versions(engine.deployment) if engine is not None else None,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_endpoint() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        engine: Engine | None = state.get("engine")
        if engine is not None:
            metrics.deployment(engine.deployment)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(
        GuardMiddleware,
        metrics=metrics,
        max_body_bytes=config.limits.max_body_bytes,
        predict=answer,
        api_keys=keys,
        events=events_key,
    )
    return app
