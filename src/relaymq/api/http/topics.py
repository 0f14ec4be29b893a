"""REST resource: topics (``/v1/namespaces/{namespace}/topics``), sugar over streams.

A topic is a stream capturing ``{name}`` and ``{name}.>`` with limits
retention; each subscriber gets its own subscription and so every message
(fan-out). Publish to a topic through ``.../publish`` (by subject) or the
``.../topics/{topic}/messages`` shortcut.
"""

from __future__ import annotations

from fastapi import Request, Response

from relaymq.api.http.auth import principal_of
from relaymq.api.http.dependencies import BrokerDependency, NamespacePath, TopicPath
from relaymq.api.http.pagination import CursorQuery, LimitQuery, paginate
from relaymq.api.http.publish import (
    PUBLISH_REQUEST_BODY,
    RawMetadataDependency,
    messages_from_request,
    publish_messages,
)
from relaymq.api.http.routing import resource_router
from relaymq.api.http.schemas import (
    Page,
    PublishResponse,
    SubscriptionOut,
    TopicCreate,
    TopicOut,
    TopicSubscriptionCreate,
)
from relaymq.auth.policy import Action, enforce
from relaymq.auth.principal import Resource, ResourceKind
from relaymq.broker import Broker
from relaymq.broker.models import RetentionPolicy, StreamInfo
from relaymq.errors import NotFound

router = resource_router("topics")

TOPICS = "/namespaces/{namespace}/topics"
TOPIC = TOPICS + "/{topic}"


def topic_subjects(name: str) -> list[str]:
    """The subjects a topic's stream captures."""
    return [name, f"{name}.>"]


def is_topic(stream: StreamInfo) -> bool:
    """Whether a stream is the stream of a topic."""
    config = stream.config
    return config.retention == RetentionPolicy.LIMITS and list(config.subjects) == topic_subjects(
        config.name
    )


def topic_out(broker: Broker, stream: StreamInfo) -> TopicOut:
    """A topic with its subscriptions."""
    subscriptions = broker.list_subscriptions(stream.namespace, stream.config.name)
    return TopicOut.from_infos(stream, subscriptions)


def topic_stream(broker: Broker, namespace: str, topic: str) -> StreamInfo:
    """The topic's stream; :class:`NotFound` if ``topic`` names no topic."""
    stream = broker.stream_info(namespace, topic)
    if not is_topic(stream):
        raise NotFound(f"topic {topic!r} not found", topic=topic)
    return stream


@router.post(TOPICS, status_code=201, summary="Create a topic", response_model=TopicOut)
async def create_topic(
    namespace: NamespacePath, body: TopicCreate, broker: BrokerDependency
) -> TopicOut:
    """Create a topic capturing subjects ``{name}`` and ``{name}.>``."""
    stream = await broker.create_topic(
        namespace,
        body.name,
        partitions=body.partitions,
        max_age_ms=body.max_age_ms,
        max_bytes=body.max_bytes,
        max_messages=body.max_messages,
    )
    return topic_out(broker, stream)


@router.get(TOPICS, summary="List topics", response_model=Page[TopicOut])
async def list_topics(
    namespace: NamespacePath,
    broker: BrokerDependency,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> Page[TopicOut]:
    """Topics by name, one page at a time."""
    topics = [stream for stream in broker.list_streams(namespace) if is_topic(stream)]
    page, next_cursor = paginate(topics, lambda stream: stream.config.name, limit, cursor)
    return Page[TopicOut](items=[topic_out(broker, item) for item in page], next_cursor=next_cursor)


@router.get(TOPIC, summary="Get a topic", response_model=TopicOut)
async def get_topic(
    namespace: NamespacePath, topic: TopicPath, broker: BrokerDependency
) -> TopicOut:
    """A topic, its contents and its subscriptions."""
    return topic_out(broker, topic_stream(broker, namespace, topic))


@router.delete(TOPIC, status_code=204, summary="Delete a topic", response_class=Response)
async def delete_topic(
    namespace: NamespacePath, topic: TopicPath, broker: BrokerDependency
) -> Response:
    """Delete a topic, its messages and its subscriptions."""
    topic_stream(broker, namespace, topic)
    await broker.delete_stream(namespace, topic)
    return Response(status_code=204)


@router.post(
    TOPIC + "/subscriptions",
    status_code=201,
    summary="Subscribe to a topic",
    response_model=SubscriptionOut,
)
async def subscribe(
    namespace: NamespacePath,
    topic: TopicPath,
    body: TopicSubscriptionCreate,
    broker: BrokerDependency,
    request: Request,
) -> SubscriptionOut:
    """Create a subscription on the topic; consume it with the subscription routes.

    Subscribing needs only ``consume`` on the topic, but dead letters are written into
    their stream without the publish checks, so naming a dead-letter stream needs
    ``manage`` on that stream.
    """
    topic_stream(broker, namespace, topic)
    if body.dead_letter_stream is not None:
        target = Resource(ResourceKind.STREAM, body.dead_letter_stream)
        enforce(principal_of(request), Action.MANAGE, namespace, target)
    info = await broker.create_subscription(namespace, body.to_config(topic))
    return SubscriptionOut.from_info(info)


@router.post(
    TOPIC + "/messages",
    summary="Publish to a topic",
    response_model=PublishResponse,
    openapi_extra=PUBLISH_REQUEST_BODY,
)
async def publish_to_topic(
    namespace: NamespacePath,
    topic: TopicPath,
    request: Request,
    broker: BrokerDependency,
    metadata: RawMetadataDependency,
) -> PublishResponse:
    """Publish messages to the topic (their subject defaults to the topic's name)."""
    topic_stream(broker, namespace, topic)
    messages = await messages_from_request(request, metadata, default_subject=topic)
    return await publish_messages(broker, namespace, messages, stream=topic)
