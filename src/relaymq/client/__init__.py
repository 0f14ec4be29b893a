"""The RelayMQ Python SDK: :class:`AsyncClient` (asyncio) and :class:`Client` (blocking).

Publish and consume go over the WebSocket protocol (msgpack frames, pipelined,
batched); admin goes over the REST API. Every failure is a
:class:`relaymq.errors.RelayError`. ``docs/client.md`` is the guide. This
package imports nothing of the server.
"""

from relaymq.client.async_client import AsyncClient
from relaymq.client.messages import Message
from relaymq.client.models import (
    NamespaceInfo,
    PartitionInfo,
    PublishResult,
    QueueInfo,
    StreamInfo,
    StreamMessage,
    SubscriptionInfo,
    TopicInfo,
)
from relaymq.client.publisher import Publisher
from relaymq.client.retry import RetryPolicy
from relaymq.client.subscription import Subscription
from relaymq.client.sync import Client
from relaymq.client.worker import Worker

__all__ = [
    "AsyncClient",
    "Client",
    "Message",
    "NamespaceInfo",
    "PartitionInfo",
    "PublishResult",
    "Publisher",
    "QueueInfo",
    "RetryPolicy",
    "StreamInfo",
    "StreamMessage",
    "Subscription",
    "SubscriptionInfo",
    "TopicInfo",
    "Worker",
]
