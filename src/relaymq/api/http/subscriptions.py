"""REST resource: subscriptions (``/v1/namespaces/{namespace}/subscriptions``).

Their lifecycle, purge, and their dead letters: browsing the dead-letter stream
and redriving it back. Consuming (fetch, ack, ...) is in
:mod:`relaymq.api.http.consume`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request, Response

from relaymq.api.http.dependencies import (
    BrokerDependency,
    NamespacePath,
    SettingsDependency,
    SubscriptionPath,
)
from relaymq.api.http.pagination import CursorQuery, LimitQuery, paginate
from relaymq.api.http.routing import resource_router
from relaymq.api.http.schemas import (
    Page,
    RedriveOut,
    RedriveRequest,
    StreamMessagesOut,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionPatch,
)
from relaymq.api.http.streams import (
    OffsetQuery,
    PartitionQuery,
    ReadLimitQuery,
    messages_out,
    read_log,
)
from relaymq.broker import Broker
from relaymq.config import Settings
from relaymq.errors import NotFound

router = resource_router("subscriptions")

SUBSCRIPTIONS = "/namespaces/{namespace}/subscriptions"
SUBSCRIPTION = SUBSCRIPTIONS + "/{subscription}"

StreamFilterQuery = Annotated[
    str | None, Query(max_length=256, description="Only subscriptions on this stream.")
]


@router.post(
    SUBSCRIPTIONS, status_code=201, summary="Create a subscription", response_model=SubscriptionOut
)
async def create_subscription(
    namespace: NamespacePath, body: SubscriptionCreate, broker: BrokerDependency
) -> SubscriptionOut:
    """Create a durable cursor on a stream."""
    info = await broker.create_subscription(namespace, body.to_stream_config())
    return SubscriptionOut.from_info(info)


@router.get(SUBSCRIPTIONS, summary="List subscriptions", response_model=Page[SubscriptionOut])
async def list_subscriptions(
    namespace: NamespacePath,
    broker: BrokerDependency,
    stream: StreamFilterQuery = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> Page[SubscriptionOut]:
    """Subscriptions by name (optionally of one stream), one page at a time."""
    infos = broker.list_subscriptions(namespace, stream)
    page, next_cursor = paginate(infos, lambda info: info.config.name, limit, cursor)
    items = [SubscriptionOut.from_info(info) for info in page]
    return Page[SubscriptionOut](items=items, next_cursor=next_cursor)


@router.get(SUBSCRIPTION, summary="Get a subscription", response_model=SubscriptionOut)
async def get_subscription(
    namespace: NamespacePath, subscription: SubscriptionPath, broker: BrokerDependency
) -> SubscriptionOut:
    """A subscription's settings and counters (depth, in flight, lag)."""
    return SubscriptionOut.from_info(broker.subscription_info(namespace, subscription))


@router.patch(SUBSCRIPTION, summary="Update a subscription", response_model=SubscriptionOut)
async def update_subscription(
    namespace: NamespacePath,
    subscription: SubscriptionPath,
    body: SubscriptionPatch,
    broker: BrokerDependency,
) -> SubscriptionOut:
    """Change the fields given."""
    info = await broker.update_subscription(namespace, subscription, body.to_update())
    return SubscriptionOut.from_info(info)


@router.delete(
    SUBSCRIPTION, status_code=204, summary="Delete a subscription", response_class=Response
)
async def delete_subscription(
    namespace: NamespacePath, subscription: SubscriptionPath, broker: BrokerDependency
) -> Response:
    """Delete a subscription; its stream and messages stay."""
    await broker.delete_subscription(namespace, subscription)
    return Response(status_code=204)


@router.post(
    SUBSCRIPTION + "/purge",
    status_code=204,
    summary="Purge a subscription",
    response_class=Response,
)
async def purge_subscription(
    namespace: NamespacePath, subscription: SubscriptionPath, broker: BrokerDependency
) -> Response:
    """Skip every message now in the stream: none of them will be delivered."""
    await broker.purge_subscription(namespace, subscription)
    return Response(status_code=204)


def dead_letter_stream(broker: Broker, namespace: str, subscription: str) -> str:
    """The subscription's dead-letter stream; :class:`NotFound` if it has none."""
    stream = broker.subscription_info(namespace, subscription).config.dead_letter_stream
    if stream is None:
        raise NotFound(
            f"subscription {subscription!r} has no dead-letter stream",
            subscription=subscription,
        )
    return stream


async def browse_dead_letters(
    request: Request,
    broker: Broker,
    settings: Settings,
    namespace: str,
    subscription: str,
    *,
    partition: int,
    from_offset: int | None,
    limit: int,
) -> StreamMessagesOut:
    """Read the dead-letter stream of a subscription (shared with queues)."""
    stream = dead_letter_stream(broker, namespace, subscription)
    messages = await read_log(
        request,
        broker,
        settings,
        namespace,
        stream,
        partition=partition,
        from_offset=from_offset,
        from_timestamp_ms=None,
        limit=limit,
        wait_ms=0,
    )
    return messages_out(messages, from_offset)


@router.get(
    SUBSCRIPTION + "/dead-letters",
    summary="Browse dead letters",
    response_model=StreamMessagesOut,
)
async def list_dead_letters(
    request: Request,
    namespace: NamespacePath,
    subscription: SubscriptionPath,
    broker: BrokerDependency,
    settings: SettingsDependency,
    partition: PartitionQuery = 0,
    from_offset: OffsetQuery = None,
    limit: ReadLimitQuery = 100,
) -> StreamMessagesOut:
    """Messages that exhausted their deliveries or were terminated, with headers
    ``relaymq-origin-*``, ``relaymq-dead-letter-reason`` and ``relaymq-last-error``."""
    return await browse_dead_letters(
        request,
        broker,
        settings,
        namespace,
        subscription,
        partition=partition,
        from_offset=from_offset,
        limit=limit,
    )


@router.post(
    SUBSCRIPTION + "/dead-letters/redrive",
    summary="Redrive dead letters",
    response_model=RedriveOut,
)
async def redrive_dead_letters(
    namespace: NamespacePath,
    subscription: SubscriptionPath,
    broker: BrokerDependency,
    body: RedriveRequest | None = None,
) -> RedriveOut:
    """Publish dead letters back to the subscription's stream for another try."""
    max_messages = body.max_messages if body else None
    redriven = await broker.redrive(namespace, subscription, max_messages=max_messages)
    return RedriveOut(redriven=redriven)
