"""REST resource: streams (``/v1/namespaces/{namespace}/streams``) and reading them as logs.

Publishing into a stream is in :mod:`relaymq.api.http.publish`; this module
owns the stream's lifecycle and the replay endpoint
``GET .../streams/{stream}/messages`` (by offset or by time, with long-poll).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

from fastapi import Query, Request, Response

from relaymq.api.http.dependencies import (
    BrokerDependency,
    NamespacePath,
    SettingsDependency,
    StreamPath,
    require_at_most,
)
from relaymq.api.http.draining import unless_draining
from relaymq.api.http.pagination import CursorQuery, LimitQuery, paginate
from relaymq.api.http.routing import resource_router
from relaymq.api.http.schemas import (
    MAX_INTEGER,
    MessageOut,
    Page,
    StreamCreate,
    StreamMessagesOut,
    StreamOut,
    StreamPatch,
)
from relaymq.broker import Broker
from relaymq.broker.models import StreamInfo, SubscriptionInfo
from relaymq.config import Settings
from relaymq.core.message import Message
from relaymq.errors import InvalidArgument

router = resource_router("streams")

STREAMS = "/namespaces/{namespace}/streams"
STREAM = STREAMS + "/{stream}"

PartitionQuery = Annotated[int, Query(ge=0, le=MAX_INTEGER, description="Partition to read.")]
OffsetQuery = Annotated[
    int | None, Query(ge=0, le=MAX_INTEGER, description="First offset to return.")
]
TimestampQuery = Annotated[
    int | None,
    Query(ge=0, le=MAX_INTEGER, description="Start at the first message at or after this time."),
]
ReadLimitQuery = Annotated[
    int, Query(ge=1, le=MAX_INTEGER, description="Most messages (at most max_fetch_messages).")
]
WaitQuery = Annotated[
    int,
    Query(ge=0, le=MAX_INTEGER, description="Long-poll up to this long (at most max_wait_ms)."),
]


def stream_out(broker: Broker, info: StreamInfo) -> StreamOut:
    """A stream with its subscriptions' totals."""
    subscriptions = broker.list_subscriptions(info.namespace, info.config.name)
    return StreamOut.from_info(info, subscriptions)


@router.post(STREAMS, status_code=201, summary="Create a stream", response_model=StreamOut)
async def create_stream(
    namespace: NamespacePath, body: StreamCreate, broker: BrokerDependency
) -> StreamOut:
    """Create a stream capturing ``subjects`` (default: its name)."""
    info = await broker.create_stream(namespace, body.to_config())
    return stream_out(broker, info)


@router.get(STREAMS, summary="List streams", response_model=Page[StreamOut])
async def list_streams(
    namespace: NamespacePath,
    broker: BrokerDependency,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> Page[StreamOut]:
    """Streams by name, one page at a time."""
    infos = broker.list_streams(namespace)
    page, next_cursor = paginate(infos, lambda info: info.config.name, limit, cursor)
    by_stream: dict[str, list[SubscriptionInfo]] = defaultdict(list)
    for subscription in broker.list_subscriptions(namespace):
        by_stream[subscription.config.stream].append(subscription)
    items = [StreamOut.from_info(info, by_stream[info.config.name]) for info in page]
    return Page[StreamOut](items=items, next_cursor=next_cursor)


@router.get(STREAM, summary="Get a stream", response_model=StreamOut)
async def get_stream(
    namespace: NamespacePath, stream: StreamPath, broker: BrokerDependency
) -> StreamOut:
    """A stream's settings, per-partition offsets and subscription totals."""
    return stream_out(broker, broker.stream_info(namespace, stream))


@router.patch(STREAM, summary="Update a stream", response_model=StreamOut)
async def update_stream(
    namespace: NamespacePath, stream: StreamPath, body: StreamPatch, broker: BrokerDependency
) -> StreamOut:
    """Change the fields given; partitions, storage and retention policy are fixed."""
    info = await broker.update_stream(namespace, stream, body.to_update())
    return stream_out(broker, info)


@router.delete(STREAM, status_code=204, summary="Delete a stream", response_class=Response)
async def delete_stream(
    namespace: NamespacePath, stream: StreamPath, broker: BrokerDependency
) -> Response:
    """Delete a stream, its messages and its subscriptions."""
    await broker.delete_stream(namespace, stream)
    return Response(status_code=204)


@router.post(STREAM + "/purge", status_code=204, summary="Purge a stream", response_class=Response)
async def purge_stream(
    namespace: NamespacePath, stream: StreamPath, broker: BrokerDependency
) -> Response:
    """Drop every message of the stream; offsets keep counting up."""
    await broker.purge_stream(namespace, stream)
    return Response(status_code=204)


@router.get(
    STREAM + "/messages", summary="Read a stream partition", response_model=StreamMessagesOut
)
async def read_stream(
    request: Request,
    namespace: NamespacePath,
    stream: StreamPath,
    broker: BrokerDependency,
    settings: SettingsDependency,
    partition: PartitionQuery = 0,
    from_offset: OffsetQuery = None,
    from_timestamp_ms: TimestampQuery = None,
    limit: ReadLimitQuery = 100,
    wait_ms: WaitQuery = 0,
) -> StreamMessagesOut:
    """Replay a partition from an offset or a time (default: its first message)."""
    messages = await read_log(
        request,
        broker,
        settings,
        namespace,
        stream,
        partition=partition,
        from_offset=from_offset,
        from_timestamp_ms=from_timestamp_ms,
        limit=limit,
        wait_ms=wait_ms,
    )
    return messages_out(messages, from_offset)


async def read_log(
    request: Request,
    broker: Broker,
    settings: Settings,
    namespace: str,
    stream: str,
    *,
    partition: int,
    from_offset: int | None,
    from_timestamp_ms: int | None,
    limit: int,
    wait_ms: int,
) -> list[Message]:
    """Read a stream partition within the configured limits (also used for dead letters)."""
    if from_offset is not None and from_timestamp_ms is not None:
        raise InvalidArgument("give from_offset or from_timestamp_ms, not both")
    require_at_most("limit", limit, "max_fetch_messages", settings.max_fetch_messages)
    require_at_most("wait_ms", wait_ms, "max_wait_ms", settings.max_wait_ms)
    long_poll = broker.read_stream(
        namespace,
        stream,
        partition=partition,
        from_offset=from_offset,
        from_timestamp_ms=from_timestamp_ms,
        max_messages=limit,
        wait_ms=wait_ms,
    )
    return await unless_draining(request, wait_ms, long_poll)


def messages_out(messages: list[Message], from_offset: int | None) -> StreamMessagesOut:
    """Read messages and the offset to continue from."""
    next_offset = messages[-1].offset + 1 if messages else from_offset
    return StreamMessagesOut(
        messages=[MessageOut.from_message(message) for message in messages],
        next_offset=next_offset,
    )
