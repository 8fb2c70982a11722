"""Fuzz the HTTP API from its own OpenAPI schema with schemathesis: whatever a client sends
(valid by the schema, or deliberately not), the answer is never a 5xx and always matches the
schema (documented status, content type and body). Bounded: a fixed number of examples per
operation and mode, derandomized, with the tiny test model of tests/tiny_reader.py."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from captcha_ocr.infer import Reader
from captcha_ocr.serve import ServeSettings, create_app
from tests import tiny_reader

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [("GET", "/healthz"), ("GET", "/v1/model"), ("POST", "/v1/read")]
EXAMPLES = 50  # per operation and mode: about 2 s in all on 2 cores


@pytest.fixture(scope="module")
def schema():
    # Small limits, so that fuzzed bodies also reach the 413 answers.
    settings_ = ServeSettings(
        threads=1, batch_wait_ms=0, max_images=4, max_image_bytes=20_000, max_body_bytes=100_000
    )
    app = create_app(Reader.load(tiny_reader.PATH, threads=1), settings_)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_the_schema_lists_every_operation(schema) -> None:
    listed = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert listed == set(OPERATIONS)


# Negative mode breaks the schema on purpose; the GET operations take nothing to break.
FUZZED = [(*op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    ("POST", "/v1/read", GenerationMode.NEGATIVE)
]


@pytest.mark.parametrize(("method", "path", "mode"), FUZZED)
def test_no_server_error_and_every_answer_matches_the_schema(
    schema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = schema[path][method]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        response = case.call()
        assert response.status_code < 500, (response.status_code, response.text[:500])
        case.validate_response(response, checks=CHECKS)

    check()


def test_fuzzing_reaches_the_model(schema) -> None:
    """A sanity check that the fuzzed app really reads: a valid image gets a 200."""
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 100), 200, np.uint8)).save(buffer, "PNG")
    operation = schema["/v1/read"]["POST"]
    case = operation.Case(
        body={"image": [buffer.getvalue()]},
        media_type="multipart/form-data",
    )
    response = case.call()
    assert response.status_code == 200, response.text
    case.validate_response(response, checks=CHECKS)
