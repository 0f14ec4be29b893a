"""Fuzzing the REST API from its own OpenAPI document (schemathesis).

For every operation in the live ``/openapi.json``, schemathesis generates
valid (positive) and invalid (negative) requests and sends them to a real
server, at most ``MAX_EXAMPLES_PER_OPERATION`` per operation and mode; every response
must be free of 5xx, carry a documented status and content type, and match
its documented schema. The fuzzed server is its own (tiny long-poll cap so
generated ``wait_ms`` values stay cheap) and must never reach the last-resort
error handler. (Operations are looped over inside one test per mode because
``schemathesis.pytest.from_fixture`` 4.32 does not run under pytest 9.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.conftest import AUTH_HEADERS, RunningServer, start_server

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES_PER_OPERATION = 20
REQUEST_TIMEOUT_SECONDS = 10


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own, with small caps so random values stay cheap."""
    data_dir: Path = tmp_path_factory.mktemp("relaymq-fuzz")
    running = start_server(data_dir, max_wait_ms=50, max_partitions=4)
    yield running
    unexpected = running.unexpected_errors
    running.stop()
    assert unexpected == 0, "the last-resort error handler ran during fuzzing"


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: RunningServer) -> schemathesis.BaseSchema:
    """The live OpenAPI document of the fuzzed server."""
    return schemathesis.openapi.from_url(
        f"{fuzzed_server.base_url}/openapi.json", timeout=REQUEST_TIMEOUT_SECONDS
    )


def fuzz_operation(operation: schemathesis.APIOperation, mode: GenerationMode) -> None:
    """Send generated requests for one operation; raise on the first failed check."""

    @settings(
        max_examples=MAX_EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS, timeout=REQUEST_TIMEOUT_SECONDS, headers=AUTH_HEADERS)

    check()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
def test_api_conforms_to_its_schema(
    api_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    failures = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        try:
            fuzz_operation(operation, mode)
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to make invalid
        except Exception as error:
            failures.append(f"{operation.label}: {error}")
    assert not failures, "\n\n".join(failures)
