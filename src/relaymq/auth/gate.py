"""The broker as every adapter sees it: the real broker behind the namespace quotas.

:class:`QuotaGate` forwards every call to the broker unchanged, except the
ones a quota limits: publishes are charged to the namespace's rate buckets and
refused once it stores ``max_stored_bytes``; creating streams (queues and
topics included) is refused beyond ``max_streams``. Adapters hold the gate, so
no adapter can forget a quota, and the broker stays free of tenancy rules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from types import MethodType
from typing import Any

from relaymq.auth.quotas import Quotas
from relaymq.broker import Broker
from relaymq.core.message import Message

STORED_BYTES_TTL_SECONDS = 1.0


class QuotaGate:
    """A :class:`Broker` look-alike applying :class:`Quotas` in front of one."""

    def __init__(
        self, broker: Broker, quotas: Quotas, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.broker = broker
        self.quotas = quotas
        self.clock = clock
        self.stored_bytes: dict[str, tuple[float, int]] = {}  # namespace -> (when, bytes)

    def __getattr__(self, name: str) -> Any:
        """Everything without a quota goes straight to the broker.

        A broker method is kept on the gate once looked up, so the calls of every
        message (fetch, ack) find it without coming here again (so a method patched on
        the broker later is not seen)."""
        value = getattr(self.broker, name)
        if isinstance(value, MethodType) and value.__self__ is self.broker:
            setattr(self, name, value)
        return value

    async def publish(
        self, namespace: str, messages: Sequence[Message], stream: str | None = None
    ) -> Any:
        """Publish within the namespace's rate and storage quotas."""
        return await self.start_publish(namespace, messages, stream)

    def start_publish(
        self, namespace: str, messages: Sequence[Message], stream: str | None = None
    ) -> asyncio.Future[Any]:
        """:meth:`Broker.start_publish` within the namespace's rate and storage quotas."""
        meter = self.quotas.meter(namespace)
        if meter.quota.max_stored_bytes:
            self.quotas.check_storage(namespace, self.namespace_bytes(namespace))
        if meter.limits_publish_rate:
            size_bytes = sum(len(message.payload) for message in messages)
            self.quotas.charge_publish(namespace, len(messages), size_bytes)
        return self.broker.start_publish(namespace, messages, stream=stream)

    def namespace_bytes(self, namespace: str) -> int:
        """Bytes the namespace stores (recomputed at most once a second)."""
        now_seconds = self.clock()
        cached = self.stored_bytes.get(namespace)
        if cached is not None and now_seconds - cached[0] < STORED_BYTES_TTL_SECONDS:
            return cached[1]
        total = sum(info.bytes for info in self.broker.list_streams(namespace))
        self.stored_bytes[namespace] = (now_seconds, total)
        return total

    def check_streams(self, namespace: str, adding: int) -> None:
        """Refuse ``adding`` more streams beyond the namespace's ``max_streams``."""
        if self.quotas.meter(namespace).quota.max_streams:
            current = len(self.broker.list_streams(namespace))
            self.quotas.check_streams(namespace, current, adding)

    async def create_stream(self, namespace: str, config: Any) -> Any:
        """Create a stream within ``max_streams``."""
        self.check_streams(namespace, 1)
        return await self.broker.create_stream(namespace, config)

    async def create_queue(self, namespace: str, name: str, **options: Any) -> Any:
        """Create a queue (and its dead-letter queue) within ``max_streams``."""
        self.check_streams(namespace, 2 if options.get("dead_letter", True) else 1)
        return await self.broker.create_queue(namespace, name, **options)

    async def create_topic(self, namespace: str, name: str, **options: Any) -> Any:
        """Create a topic within ``max_streams``."""
        self.check_streams(namespace, 1)
        return await self.broker.create_topic(namespace, name, **options)
