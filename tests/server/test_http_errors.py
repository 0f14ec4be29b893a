"""Every error class over HTTP: status, stable code, our body, never a traceback."""

from __future__ import annotations

import inspect
import json

import httpx
import pytest
from fastapi import FastAPI

from relaymq import errors
from relaymq.api.http.errors import (
    InternalError,
    error_response,
    install_error_handlers,
    status_for,
)
from tests.server.conftest import Api, expect_error

KIBIBYTE = 1024


# -- 404 -----------------------------------------------------------------------------------


def test_unknown_routes_are_404_in_our_body(http: httpx.Client) -> None:
    expect_error(http.get("/v1/nothing-here"), 404, "not_found")
    expect_error(http.post("/nowhere", json={}), 404, "not_found")


def test_wrong_method_is_405_in_our_body(http: httpx.Client) -> None:
    response = http.delete("/healthz")
    expect_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


def test_missing_resources_are_404(api: Api, http: httpx.Client) -> None:
    expect_error(http.get("/v1/namespaces/ghost/streams"), 404, "namespace_not_found")
    expect_error(api.get("/streams/ghost"), 404, "stream_not_found")
    expect_error(api.get("/subscriptions/ghost"), 404, "subscription_not_found")
    expect_error(api.post("/subscriptions/ghost/fetch", json={}), 404, "subscription_not_found")
    expect_error(api.get("/queues/ghost"), 404, "stream_not_found")
    body = {"subject": "nobody.listens", "payload": "x"}
    expect_error(api.post("/publish", json=body), 404, "no_stream_for_subject")
    api.ok("POST", "/streams", 201, json={"name": "one"})
    expect_error(
        api.get("/streams/one/messages", params={"partition": 5}), 404, "partition_not_found"
    )
    expect_error(api.get("/topics/one"), 404, "not_found")
    expect_error(api.get("/queues/one"), 404, "not_found")
    expect_error(api.get("/subscriptions/ghost/dead-letters"), 404, "subscription_not_found")


# -- 409 -----------------------------------------------------------------------------------


def test_conflicts_are_409(api: Api, http: httpx.Client) -> None:
    expect_error(http.post("/v1/namespaces", json={"name": api.namespace}), 409, "namespace_exists")
    api.ok("POST", "/streams", 201, json={"name": "orders", "subjects": ["orders.>"]})
    expect_error(api.post("/streams", json={"name": "orders"}), 409, "stream_exists")
    body = {"name": "copy", "subjects": ["orders.eu"]}
    expect_error(api.post("/streams", json=body), 409, "subject_overlap")
    api.ok("POST", "/subscriptions", 201, json={"name": "reader", "stream": "orders"})
    body = {"name": "reader", "stream": "orders"}
    expect_error(api.post("/subscriptions", json=body), 409, "subscription_exists")
    api.ok("POST", "/queues", 201, json={"name": "jobs"})
    expect_error(api.post("/queues", json={"name": "jobs"}), 409, "stream_exists")


# -- 413 -----------------------------------------------------------------------------------


def test_request_body_over_the_limit_by_content_length(api: Api) -> None:
    api.ok("POST", "/queues", 201, json={"name": "big", "dead_letter": False})
    body = b"x" * (300 * KIBIBYTE)
    headers = {"Content-Type": "application/octet-stream"}
    error = expect_error(
        api.post("/queues/big/messages", content=body, headers=headers), 413, "request_too_large"
    )
    assert error["details"]["limit"] == "max_request_bytes"


def test_request_body_over_the_limit_while_streaming(api: Api) -> None:
    api.ok("POST", "/queues", 201, json={"name": "chunked", "dead_letter": False})

    def chunks():
        for _ in range(40):
            yield b"y" * (8 * KIBIBYTE)

    headers = {"Content-Type": "application/octet-stream"}
    response = api.post("/queues/chunked/messages", content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    expect_error(response, 413, "request_too_large")


def test_payload_batch_and_headers_limits_are_413(api: Api) -> None:
    api.ok("POST", "/queues", 201, json={"name": "limits", "dead_letter": False})
    body = {"payload": "p" * (65 * KIBIBYTE)}
    expect_error(api.post("/queues/limits/messages", json=body), 413, "payload_too_large")
    body = {"messages": [{"payload": "m"}] * 101}
    expect_error(api.post("/queues/limits/messages", json=body), 413, "batch_too_large")
    body = {"payload": "h", "headers": {"big": "v" * (2 * KIBIBYTE)}}
    expect_error(api.post("/queues/limits/messages", json=body), 413, "headers_too_large")
    assert api.ok("GET", "/queues/limits")["messages"] == 0


# -- 422 -----------------------------------------------------------------------------------


def test_request_validation_is_422_with_each_problem(api: Api) -> None:
    error = expect_error(api.post("/streams", json={"partitions": "many"}), 422, "invalid_request")
    locations = {problem["location"] for problem in error["details"]["errors"]}
    assert {"body.name", "body.partitions"} <= locations
    expect_error(api.post("/streams", json={"name": "s", "typo": 1}), 422, "invalid_request")
    expect_error(api.get("/streams", params={"limit": 0}), 422, "invalid_request")
    body = {"payload": "x", "payload_json": {}}
    expect_error(api.post("/publish", json=body), 422, "invalid_request")
    body = {"payload": "not base64!", "encoding": "base64"}
    expect_error(api.post("/publish", json=body), 422, "invalid_request")


def test_malformed_json_is_422(api: Api) -> None:
    headers = {"Content-Type": "application/json"}
    for content in (b"{not json", b'{"name": "\\ud800"}', b'{"name": NaN}', b"\xff\xfe"):
        response = api.post("/streams", content=content, headers=headers)
        expect_error(response, 422, "invalid_request")
        response = api.post("/publish", content=content, headers=headers)
        expect_error(response, 422, "invalid_request")


def test_schema_violation_is_422(api: Api) -> None:
    schema = {
        "type": "object",
        "required": ["amount"],
        "properties": {"amount": {"type": "number"}},
    }
    api.ok("POST", "/streams", 201, json={"name": "payments", "json_schema": schema})
    api.ok("POST", "/streams/payments/messages", json={"payload_json": {"amount": 5}})
    body = {"payload_json": {"amount": "five"}}
    expect_error(api.post("/streams/payments/messages", json=body), 422, "schema_violation")


# -- 400 -----------------------------------------------------------------------------------


def test_invalid_arguments_are_400(api: Api, http: httpx.Client) -> None:
    api.ok("POST", "/streams", 201, json={"name": "events", "subjects": ["events.>"]})
    expect_error(
        api.post("/publish", json={"subject": "bad subject", "payload": "x"}),
        400,
        "invalid_subject",
    )
    expect_error(api.post("/publish", json={"subject": "a..b"}), 400, "invalid_subject")
    expect_error(api.post("/publish", json={"payload": "no subject"}), 400, "invalid_subject")
    expect_error(api.post("/streams", json={"name": "bad name!"}), 400, "invalid_name")
    expect_error(http.post("/v1/namespaces", json={"name": "-dash"}), 400, "invalid_name")
    expect_error(
        api.post("/streams", json={"name": "x", "subjects": ["a.>.b"]}), 400, "invalid_subject"
    )
    expect_error(api.get("/streams", params={"cursor": "%%%"}), 400, "invalid_argument")
    api.ok("POST", "/streams", 201, json={"name": "other"})
    body = {"subject": "other", "payload": "x"}
    expect_error(api.post("/streams/events/messages", json=body), 400, "invalid_argument")
    query = {"from_offset": 0, "from_timestamp_ms": 0}
    expect_error(api.get("/streams/events/messages", params=query), 400, "invalid_argument")


def test_limits_on_waiting_and_fetching_are_400(api: Api) -> None:
    api.ok("POST", "/queues", 201, json={"name": "capped", "dead_letter": False})
    error = expect_error(
        api.post("/queues/capped/fetch", json={"wait_ms": 10_001}), 400, "invalid_argument"
    )
    assert error["details"]["limit"] == "max_wait_ms"
    body = {"max_messages": 501}
    error = expect_error(api.post("/queues/capped/fetch", json=body), 400, "invalid_argument")
    assert error["details"]["limit"] == "max_fetch_messages"
    query = {"wait_ms": 10_001}
    expect_error(api.get("/streams/capped/messages", params=query), 400, "invalid_argument")


def test_seek_needs_an_ordered_subscription(api: Api) -> None:
    api.ok("POST", "/queues", 201, json={"name": "shared", "dead_letter": False})
    response = api.post("/subscriptions/shared/seek", json={"offset": 0})
    expect_error(response, 400, "wrong_delivery_mode")
    response = api.post("/subscriptions/shared/seek", json={"offset": 0, "timestamp_ms": 1})
    expect_error(response, 422, "invalid_request")


def test_raw_publish_with_bad_metadata_headers(api: Api) -> None:
    api.ok("POST", "/queues", 201, json={"name": "raw", "dead_letter": False})
    headers = {"Content-Type": "application/octet-stream", "RelayMQ-Delay-Ms": "soon"}
    expect_error(
        api.post("/queues/raw/messages", content=b"x", headers=headers), 422, "invalid_request"
    )
    headers = {"Content-Type": "application/octet-stream", "RelayMQ-Subject": "raw.>"}
    expect_error(api.post("/publish", content=b"x", headers=headers), 400, "invalid_subject")


# -- the mapping itself ----------------------------------------------------------------------


def all_error_classes() -> list[type[errors.RelayError]]:
    """Every RelayError subclass defined in relaymq.errors."""
    return [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, errors.RelayError)
    ]


@pytest.mark.parametrize("error_class", all_error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_class_maps_to_a_4xx_or_503_or_507(
    error_class: type[errors.RelayError],
) -> None:
    status = status_for(error_class("x"))
    assert 400 <= status < 500 or status in {503, 507}


def test_subclasses_inherit_their_parents_status() -> None:
    class ShelfNotFound(errors.NotFound):
        code = "shelf_not_found"

    class QuotaExhausted(errors.RateLimited):
        code = "quota_exhausted"

    assert status_for(ShelfNotFound()) == 404
    assert status_for(QuotaExhausted()) == 429
    assert status_for(errors.StaleReceipt()) == 409
    assert status_for(errors.StorageFull()) == 507
    assert status_for(errors.Unauthenticated()) == 401
    assert status_for(errors.PermissionDenied()) == 403
    assert status_for(errors.ShuttingDown()) == 503


def test_retryable_errors_carry_retry_after() -> None:
    limited = error_response(errors.RateLimited("slow down", retry_after_seconds=7))
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "7"
    unavailable = error_response(errors.ShuttingDown("bye"))
    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"] == "1"
    assert "retry-after" not in error_response(errors.NotFound("x")).headers
    assert json.loads(bytes(limited.body)) == {
        "error": {
            "code": "rate_limited",
            "message": "slow down",
            "details": {"retry_after_seconds": 7},
        }
    }


async def test_last_resort_handler_answers_500_without_a_traceback() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == InternalError.code
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert app.state.unexpected_errors == 1
