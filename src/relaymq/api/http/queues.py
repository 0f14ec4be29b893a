"""REST resource: queues (``/v1/namespaces/{namespace}/queues``), sugar over streams.

A queue is a work-queue stream plus one shared subscription, both named after
the queue (see ``Broker.create_queue``). Besides its lifecycle, a queue has
shortcuts that publish to its stream and consume its subscription; they
delegate to the same functions as the stream and subscription routes.
"""

from __future__ import annotations

from fastapi import Request, Response

from relaymq.api.http.consume import fetch_messages, settle
from relaymq.api.http.dependencies import (
    BrokerDependency,
    NamespacePath,
    QueuePath,
    SettingsDependency,
)
from relaymq.api.http.pagination import CursorQuery, LimitQuery, paginate
from relaymq.api.http.publish import (
    PUBLISH_REQUEST_BODY,
    RawMetadataDependency,
    messages_from_request,
    publish_messages,
)
from relaymq.api.http.routing import resource_router
from relaymq.api.http.schemas import (
    ExtendRequest,
    FetchRequest,
    MessagesOut,
    NackRequest,
    Page,
    PublishResponse,
    QueueCreate,
    QueueOut,
    ReceiptResults,
    ReceiptsRequest,
    RedriveOut,
    RedriveRequest,
    StreamMessagesOut,
    TermRequest,
)
from relaymq.api.http.streams import OffsetQuery, PartitionQuery, ReadLimitQuery
from relaymq.api.http.subscriptions import browse_dead_letters
from relaymq.broker import Broker
from relaymq.broker.models import RetentionPolicy, StreamInfo
from relaymq.errors import NotFound, SubscriptionNotFound

router = resource_router("queues")

QUEUES = "/namespaces/{namespace}/queues"
QUEUE = QUEUES + "/{queue}"


def is_queue(broker: Broker, stream: StreamInfo) -> bool:
    """Whether a stream is the stream of a queue: work-queue retention and a
    subscription of the same name."""
    if stream.config.retention != RetentionPolicy.WORK_QUEUE:
        return False
    try:
        subscription = broker.subscription_info(stream.namespace, stream.config.name)
    except SubscriptionNotFound:
        return False
    return subscription.config.stream == stream.config.name


def queue_out(broker: Broker, namespace: str, queue: str) -> QueueOut:
    """A queue's settings and counters; :class:`NotFound` if ``queue`` is not a queue."""
    stream = broker.stream_info(namespace, queue)
    if not is_queue(broker, stream):
        raise NotFound(f"queue {queue!r} not found", queue=queue)
    return QueueOut.from_infos(stream, broker.subscription_info(namespace, queue))


@router.post(QUEUES, status_code=201, summary="Create a queue", response_model=QueueOut)
async def create_queue(
    namespace: NamespacePath, body: QueueCreate, broker: BrokerDependency
) -> QueueOut:
    """Create a queue (and its ``{name}-dlq`` dead-letter queue unless ``dead_letter``
    is false)."""
    await broker.create_queue(namespace, body.name, **body.to_arguments())
    return queue_out(broker, namespace, body.name)


@router.get(QUEUES, summary="List queues", response_model=Page[QueueOut])
async def list_queues(
    namespace: NamespacePath,
    broker: BrokerDependency,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> Page[QueueOut]:
    """Queues by name, one page at a time."""
    names = [
        stream.config.name for stream in broker.list_streams(namespace) if is_queue(broker, stream)
    ]
    page, next_cursor = paginate(names, str, limit, cursor)
    items = [queue_out(broker, namespace, name) for name in page]
    return Page[QueueOut](items=items, next_cursor=next_cursor)


@router.get(QUEUE, summary="Get a queue", response_model=QueueOut)
async def get_queue(
    namespace: NamespacePath, queue: QueuePath, broker: BrokerDependency
) -> QueueOut:
    """A queue's settings and counters (depth, in flight, lag)."""
    return queue_out(broker, namespace, queue)


@router.delete(QUEUE, status_code=204, summary="Delete a queue", response_class=Response)
async def delete_queue(
    namespace: NamespacePath, queue: QueuePath, broker: BrokerDependency
) -> Response:
    """Delete a queue, its messages and its dead-letter queue."""
    queue_out(broker, namespace, queue)
    await broker.delete_queue(namespace, queue)
    return Response(status_code=204)


@router.post(QUEUE + "/purge", status_code=204, summary="Purge a queue", response_class=Response)
async def purge_queue(
    namespace: NamespacePath, queue: QueuePath, broker: BrokerDependency
) -> Response:
    """Drop every message of the queue."""
    queue_out(broker, namespace, queue)
    await broker.purge_stream(namespace, queue)
    return Response(status_code=204)


@router.post(
    QUEUE + "/messages",
    summary="Send to a queue",
    response_model=PublishResponse,
    openapi_extra=PUBLISH_REQUEST_BODY,
)
async def send(
    namespace: NamespacePath,
    queue: QueuePath,
    request: Request,
    broker: BrokerDependency,
    metadata: RawMetadataDependency,
) -> PublishResponse:
    """Publish messages to the queue (their subject defaults to the queue's name)."""
    messages = await messages_from_request(request, metadata, default_subject=queue)
    return await publish_messages(broker, namespace, messages, stream=queue)


@router.post(QUEUE + "/fetch", summary="Receive from a queue", response_model=MessagesOut)
async def fetch(
    request: Request,
    namespace: NamespacePath,
    queue: QueuePath,
    body: FetchRequest,
    broker: BrokerDependency,
    settings: SettingsDependency,
) -> MessagesOut:
    """Lease messages of the queue (long-poll with ``wait_ms``)."""
    return await fetch_messages(request, broker, settings, namespace, queue, body)


@router.post(QUEUE + "/ack", summary="Acknowledge queue messages", response_model=ReceiptResults)
async def ack(
    namespace: NamespacePath, queue: QueuePath, body: ReceiptsRequest, broker: BrokerDependency
) -> ReceiptResults:
    """Delete processed messages from the queue."""
    return await settle(broker, namespace, queue, body)


@router.post(QUEUE + "/nack", summary="Reject queue messages", response_model=ReceiptResults)
async def nack(
    namespace: NamespacePath, queue: QueuePath, body: NackRequest, broker: BrokerDependency
) -> ReceiptResults:
    """Give messages back for redelivery after ``delay_ms`` (default: the backoff)."""
    return await settle(broker, namespace, queue, body)


@router.post(QUEUE + "/extend", summary="Extend queue leases", response_model=ReceiptResults)
async def extend(
    namespace: NamespacePath, queue: QueuePath, body: ExtendRequest, broker: BrokerDependency
) -> ReceiptResults:
    """Keep working on messages longer."""
    return await settle(broker, namespace, queue, body)


@router.post(QUEUE + "/term", summary="Terminate queue messages", response_model=ReceiptResults)
async def term(
    namespace: NamespacePath, queue: QueuePath, body: TermRequest, broker: BrokerDependency
) -> ReceiptResults:
    """Never deliver these messages again; they go to the dead-letter queue if any."""
    return await settle(broker, namespace, queue, body)


@router.get(
    QUEUE + "/dead-letters",
    summary="Browse a queue's dead letters",
    response_model=StreamMessagesOut,
)
async def list_dead_letters(
    request: Request,
    namespace: NamespacePath,
    queue: QueuePath,
    broker: BrokerDependency,
    settings: SettingsDependency,
    partition: PartitionQuery = 0,
    from_offset: OffsetQuery = None,
    limit: ReadLimitQuery = 100,
) -> StreamMessagesOut:
    """Messages of the queue's dead-letter queue, oldest first."""
    return await browse_dead_letters(
        request,
        broker,
        settings,
        namespace,
        queue,
        partition=partition,
        from_offset=from_offset,
        limit=limit,
    )


@router.post(
    QUEUE + "/dead-letters/redrive",
    summary="Redrive a queue's dead letters",
    response_model=RedriveOut,
)
async def redrive(
    namespace: NamespacePath,
    queue: QueuePath,
    broker: BrokerDependency,
    body: RedriveRequest | None = None,
) -> RedriveOut:
    """Move dead letters back into the queue."""
    max_messages = body.max_messages if body else None
    return RedriveOut(redriven=await broker.redrive(namespace, queue, max_messages=max_messages))
