"""The prediction API fuzzed from its own OpenAPI schema with schemathesis: valid and invalid inputs,
every documented operation; the server never answers 5xx and valid requests get schema-conformant
answers. A real uvicorn server with a loaded model (a 503 "not ready" would be a 5xx too)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from serving_testkit import quick_config, running_server, wait_until

from loopline.serving.app import create_app
from loopline.serving.predictor import Predictor
from loopline.serving.registry import FixedModel

URI = "models:/fraud_detector/1"
EXAMPLES = {"/v1/predict": 80}  # the operation worth fuzzing hard; probes get a few each


@pytest.fixture(scope="module")
def served(serving_world):
    config = quick_config()
    loaded = Predictor.load(
        URI, version="1", variant="champion", settings=serving_world.settings, warmup_rounds=2
    )
    app = create_app(
        serving_world.settings,
        config,
        source_factory=lambda engine: FixedModel(
            engine, URI, serving_world.settings, config, loader=lambda uri, version, variant: loaded
        ),
    )
    with running_server(app) as url:
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, what="/readyz")
        yield url, schemathesis.openapi.from_dict(app.openapi())


def operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


def test_the_schema_documents_every_route(served) -> None:
    _, schema = served
    assert {op.path for op in operations(schema)} >= {"/v1/predict", "/healthz", "/readyz", "/metrics"}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzzed_requests_never_get_a_server_error(served, mode: GenerationMode) -> None:
    url, schema = served
    seen: dict[int, int] = {}
    for operation in operations(schema):
        if (
            mode is GenerationMode.NEGATIVE
            and operation.method.upper() == "GET"
            and not operation.path.startswith("/v1")
        ):
            continue  # the probes take no input: nothing to make invalid

        @settings(
            max_examples=EXAMPLES.get(operation.path, 5),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case) -> None:
            response = case.call(base_url=url)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            checks = [not_a_server_error]
            if mode is GenerationMode.POSITIVE:
                checks += [response_schema_conformance, content_type_conformance]
            case.validate_response(response, checks=checks)

        fuzz()
    assert seen and max(seen) < 500, seen
    if mode is GenerationMode.NEGATIVE:
        assert any(400 <= status < 500 for status in seen), f"no invalid request was refused: {seen}"
    else:
        assert seen.get(200), f"no valid request was answered: {seen}"


def test_a_body_that_is_not_utf8_is_a_422_not_a_500(served) -> None:
    """Found by the fuzzer: FastAPI could not encode the raw bytes echoed in the 422 and answered 500."""
    url, _ = served
    response = httpx.post(
        f"{url}/v1/predict", content=b'{"\x9d": 1}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][0] == "body"
