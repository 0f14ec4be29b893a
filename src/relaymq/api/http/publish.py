"""REST resource: publishing messages.

``POST .../publish`` routes each message by its subject; ``POST
.../streams/{stream}/messages`` targets one stream (the queue shortcut in
:mod:`relaymq.api.http.queues` reuses it). A body is JSON (one message or
``{"messages": [...]}``, see :class:`MessageIn`) or, with ``Content-Type:
application/octet-stream``, one raw payload whose metadata travels in
``RelayMQ-*`` headers. The response comes once the messages are durable.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from relaymq.api.http.auth import authorize_subjects
from relaymq.api.http.dependencies import BrokerDependency, NamespacePath, StreamPath
from relaymq.api.http.routing import parse_json, resource_router
from relaymq.api.http.schemas import (
    MAX_INTEGER,
    MessageIn,
    PublishBatch,
    PublishResponse,
    PublishResultOut,
)
from relaymq.broker import Broker
from relaymq.core.message import Message
from relaymq.errors import InvalidSubject

router = resource_router("publish")

BATCH_BODY: TypeAdapter[PublishBatch] = TypeAdapter(PublishBatch)
SINGLE_BODY: TypeAdapter[MessageIn] = TypeAdapter(MessageIn)
HEADER_PREFIX = "relaymq-header-"
RAW_CONTENT_TYPE = "application/octet-stream"

PUBLISH_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": 'JSON: one message or {"messages": [...]}. Raw bytes: one payload, '
        "metadata in RelayMQ-* headers (RelayMQ-Header-<name> for message headers).",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/PublishBatch"},
                        {"$ref": "#/components/schemas/MessageIn"},
                    ]
                }
            },
            RAW_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
"""The documented request body of the publish routes (they parse it themselves)."""

OPENAPI_BODY_MODELS = (PublishBatch, MessageIn)
"""Models referenced by :data:`PUBLISH_REQUEST_BODY` that the app adds to the components."""


@dataclass(frozen=True, slots=True)
class RawMetadata:
    """The metadata of a raw-body message, from its ``RelayMQ-*`` request headers."""

    subject: str | None
    key: str | None
    message_id: str | None
    delay_ms: int | None
    ttl_ms: int | None
    priority: int


async def raw_metadata(
    subject: Annotated[str | None, Header(alias="RelayMQ-Subject")] = None,
    key: Annotated[str | None, Header(alias="RelayMQ-Key")] = None,
    message_id: Annotated[str | None, Header(alias="RelayMQ-Message-Id")] = None,
    delay_ms: Annotated[int | None, Header(alias="RelayMQ-Delay-Ms", ge=0, le=MAX_INTEGER)] = None,
    ttl_ms: Annotated[int | None, Header(alias="RelayMQ-Ttl-Ms", ge=1, le=MAX_INTEGER)] = None,
    priority: Annotated[int, Header(alias="RelayMQ-Priority", ge=0, le=MAX_INTEGER)] = 0,
) -> RawMetadata:
    """Raw-body metadata (ignored for JSON bodies); ``RelayMQ-Header-<name>`` headers
    become message headers. ``async`` so FastAPI does not hand it to a worker thread."""
    return RawMetadata(subject, key, message_id, delay_ms, ttl_ms, priority)


RawMetadataDependency = Annotated[RawMetadata, Depends(raw_metadata)]


def now_ms() -> int:
    """The wall clock in ms since the epoch."""
    return time.time_ns() // 1_000_000


def is_raw(request: Request) -> bool:
    """Whether the body is a raw payload rather than JSON."""
    content_type = request.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == RAW_CONTENT_TYPE


async def messages_from_request(
    request: Request, metadata: RawMetadata, default_subject: str | None
) -> list[Message]:
    """The messages a publish request carries, JSON or raw."""
    body = await request.body()
    if is_raw(request):
        return [raw_message(request, metadata, body, default_subject)]
    items = parse_messages(body)
    timestamp_ms = now_ms()
    return [item.to_message(default_subject, timestamp_ms) for item in items]


def parse_messages(body: bytes) -> list[MessageIn]:
    """The messages of a JSON publish body: a batch if it has ``messages``, else one."""
    try:
        document = parse_json(body)
        if isinstance(document, dict) and "messages" in document:
            return BATCH_BODY.validate_python(document).messages
        return [SINGLE_BODY.validate_python(document)]
    except json.JSONDecodeError as error:
        raise RequestValidationError([json_problem(error)]) from error
    except ValidationError as error:
        raise RequestValidationError(prefix_body(error.errors(include_url=False))) from error


def json_problem(error: json.JSONDecodeError) -> dict[str, Any]:
    """A body that is not JSON, reported the way FastAPI reports it."""
    return {
        "type": "json_invalid",
        "loc": ("body", error.pos),
        "msg": f"JSON decode error: {error.msg}",
    }


def prefix_body(problems: list[Any]) -> list[dict[str, Any]]:
    """Validation problems located under ``body``, as FastAPI reports them."""
    return [{**problem, "loc": ("body", *problem["loc"])} for problem in problems]


def raw_message(
    request: Request, metadata: RawMetadata, body: bytes, default_subject: str | None
) -> Message:
    """A message from a raw body and its ``RelayMQ-*`` headers."""
    timestamp_ms = now_ms()
    delay_ms, ttl_ms = metadata.delay_ms, metadata.ttl_ms
    return Message(
        subject=metadata.subject or default_subject or "",
        payload=body,
        key=metadata.key,
        id=metadata.message_id,
        headers=message_headers(request),
        deliver_at_ms=timestamp_ms + delay_ms if delay_ms is not None else None,
        expires_at_ms=timestamp_ms + ttl_ms if ttl_ms is not None else None,
        priority=metadata.priority,
    )


def message_headers(request: Request) -> dict[str, str]:
    """Message headers from ``RelayMQ-Header-<name>`` request headers (names lowercased)."""
    return {
        name[len(HEADER_PREFIX) :]: value
        for name, value in request.headers.items()
        if name.startswith(HEADER_PREFIX) and len(name) > len(HEADER_PREFIX)
    }


async def publish_messages(
    broker: Broker, namespace: str, messages: list[Message], stream: str | None
) -> PublishResponse:
    """Publish and report where each message landed."""
    if stream is None:
        for message in messages:
            if not message.subject:
                raise InvalidSubject("every message needs a subject", reason="missing")
    results = await broker.publish(namespace, messages, stream=stream)
    return PublishResponse(results=[PublishResultOut.from_result(item) for item in results])


@router.post(
    "/namespaces/{namespace}/publish",
    summary="Publish by subject",
    response_model=PublishResponse,
    openapi_extra=PUBLISH_REQUEST_BODY,
)
async def publish(
    namespace: NamespacePath,
    request: Request,
    broker: BrokerDependency,
    metadata: RawMetadataDependency,
) -> PublishResponse:
    """Publish messages, each to the stream that captures its subject."""
    messages = await messages_from_request(request, metadata, default_subject=None)
    authorize_subjects(request, namespace, (message.subject for message in messages))
    return await publish_messages(broker, namespace, messages, stream=None)


@router.post(
    "/namespaces/{namespace}/streams/{stream}/messages",
    summary="Publish to a stream",
    response_model=PublishResponse,
    openapi_extra=PUBLISH_REQUEST_BODY,
)
async def publish_to_stream(
    namespace: NamespacePath,
    stream: StreamPath,
    request: Request,
    broker: BrokerDependency,
    metadata: RawMetadataDependency,
) -> PublishResponse:
    """Publish messages to this stream (which must capture their subjects; a message
    without a subject gets the stream's name)."""
    messages = await messages_from_request(request, metadata, default_subject=stream)
    return await publish_messages(broker, namespace, messages, stream=stream)
