"""Plain counters the broker exposes for monitoring.

The broker never calls a metrics library on the hot path: it keeps integer
counters on its streams and subscriptions, and :func:`collect` copies them
into these values when a monitoring adapter (Prometheus) scrapes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from relaymq.broker.stream import StreamHandle


@dataclass(frozen=True, slots=True)
class StreamMetrics:
    namespace: str
    stream: str
    published_messages: int
    published_bytes: int
    stored_messages: int
    stored_bytes: int
    failed_partitions: int


@dataclass(frozen=True, slots=True)
class SubscriptionMetrics:
    namespace: str
    stream: str
    subscription: str
    delivered_messages: int
    delivered_bytes: int
    acked: int
    nacked: int
    redelivered: int
    dead_lettered: int
    in_flight: int
    pending: int
    lag_messages: int
    lag_seconds: float
    consumers: int


@dataclass(frozen=True, slots=True)
class BrokerMetrics:
    """A snapshot of every stream and subscription counter."""

    streams: list[StreamMetrics] = field(default_factory=list)
    subscriptions: list[SubscriptionMetrics] = field(default_factory=list)


def collect(streams: Iterable[StreamHandle], now_ms: int) -> BrokerMetrics:
    """Snapshot the counters of ``streams`` and their subscriptions."""
    snapshot = BrokerMetrics()
    for stream in streams:
        info = stream.info()
        snapshot.streams.append(
            StreamMetrics(
                namespace=stream.namespace,
                stream=stream.name,
                published_messages=stream.published_messages,
                published_bytes=stream.published_bytes,
                stored_messages=info.messages,
                stored_bytes=info.bytes,
                failed_partitions=stream.failed_partitions,
            )
        )
        for subscription in stream.subscriptions.values():
            sub_info = subscription.info(now_ms)
            snapshot.subscriptions.append(
                SubscriptionMetrics(
                    namespace=stream.namespace,
                    stream=stream.name,
                    subscription=subscription.name,
                    delivered_messages=subscription.delivered_messages,
                    delivered_bytes=subscription.delivered_bytes,
                    acked=sub_info.acked,
                    nacked=subscription.nacked,
                    redelivered=sub_info.redelivered,
                    dead_lettered=sub_info.dead_lettered,
                    in_flight=sub_info.in_flight,
                    pending=sub_info.pending,
                    lag_messages=sub_info.lag_messages,
                    lag_seconds=sub_info.lag_seconds,
                    consumers=sub_info.consumers,
                )
            )
    return snapshot
