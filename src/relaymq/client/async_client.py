"""``relaymq.AsyncClient``: the asyncio client, the SDK's front door.

Owns the composition of the SDK's parts for one server and namespace: the
HTTP transport (admin: ``client.streams``, ``client.subscriptions``,
``client.queues``, ``client.topics``, ``client.namespaces``), the WebSocket
session (opened on first publish or subscribe, reconnected by itself), and
the entry points that use them: :meth:`AsyncClient.publish`,
:meth:`AsyncClient.publisher`, :meth:`AsyncClient.subscribe`,
:meth:`AsyncClient.worker` / :meth:`AsyncClient.work`,
:meth:`AsyncClient.replay`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from types import TracebackType

from relaymq import errors
from relaymq.client.admin import Namespaces, Queues, Streams, Subscriptions, Topics
from relaymq.client.connection import Session
from relaymq.client.http import HttpTransport
from relaymq.client.models import PublishResult, StreamMessage
from relaymq.client.publisher import Publisher
from relaymq.client.retry import RetryPolicy
from relaymq.client.subscription import DEFAULT_ACK_LINGER_MS, Subscription
from relaymq.client.worker import Handler, Worker
from relaymq.protocol import frames

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_NAMESPACE = "default"


class AsyncClient:
    """A client of one RelayMQ server and namespace, for asyncio.

    ::

        async with relaymq.AsyncClient("http://127.0.0.1:8765", token=...) as client:
            await client.queues.create("jobs", exist_ok=True)
            await client.publish("jobs", b"hello")
            async for message in client.subscribe("jobs"):
                await message.ack()

    ``retry`` governs reconnecting after a dropped connection or a server
    restart (and retrying HTTP requests the server never received); while it
    lasts, failures show only as latency. ``timeout_seconds`` bounds each
    HTTP request; ``open_timeout_seconds`` each connection attempt.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        timeout_seconds: float = 30,
        open_timeout_seconds: float = 10,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self.namespace = namespace
        self.http = HttpTransport(
            url, token=token, timeout_seconds=timeout_seconds, retry=self.retry
        )
        self.url = self.http.base_url
        self.session = Session(
            self.http.base_url,
            namespace,
            headers=self.http.headers,
            retry=self.retry,
            open_timeout_seconds=open_timeout_seconds,
        )
        self.namespaces = Namespaces(self.http)
        self.streams = Streams(self.http, namespace)
        self.subscriptions = Subscriptions(self.http, namespace)
        self.queues = Queues(self.http, namespace)
        self.topics = Topics(self.http, namespace)
        self._publishers: dict[str | None, Publisher] = {}
        self._handles = itertools.count(1)

    # -- life -----------------------------------------------------------------------------------

    async def connect(self) -> AsyncClient:
        """Open the WebSocket session now (otherwise the first publish or subscribe
        does); raises the tree's error if the server cannot be reached."""
        await self.session.start()
        return self

    async def ping(self, timeout_seconds: float = 30) -> None:
        """A round trip over the WebSocket. When it returns, the server has handled
        every frame this client sent before it (fire-and-forget acks included)."""
        await self.session.start()
        await self.session.request(frames.Ping(seq=self.session.next_seq()), timeout_seconds)

    async def close(self) -> None:
        """Wait for the confirms of :meth:`publish` calls in flight, then close."""
        try:
            for publisher in self._publishers.values():
                publisher.send_batch()
            if self.session.connected:
                for publisher in self._publishers.values():
                    with contextlib.suppress(errors.RelayError):  # each caller got its own
                        await publisher.flush()
        finally:
            await self.session.close()
            await self.http.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- publishing -----------------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        payload: bytes | str = b"",
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        id: str | None = None,
        deliver_at_ms: int | None = None,
        priority: int = 0,
        expires_at_ms: int | None = None,
        stream: str | None = None,
    ) -> PublishResult:
        """Publish one message and wait until it is durable; where it landed.

        Concurrent calls share frames (no linger), so ``asyncio.gather`` of many
        publishes is fast; for throughput use :meth:`publisher`. ``key`` picks
        the partition and keeps per-key order; ``id`` (generated when absent)
        deduplicates; ``deliver_at_ms`` delays; ``stream`` forces the stream."""
        publisher = self._publishers.get(stream)
        if publisher is None:
            publisher = Publisher(self.session, linger_ms=0, stream=stream)
            self._publishers[stream] = publisher
        future = await publisher.publish(
            subject,
            payload,
            key=key,
            headers=headers,
            id=id,
            deliver_at_ms=deliver_at_ms,
            priority=priority,
            expires_at_ms=expires_at_ms,
        )
        return await future

    def publisher(
        self,
        *,
        linger_ms: float = 5,
        max_batch_messages: int = 1_000,
        max_batch_bytes: int = 1024 * 1024,
        max_unconfirmed_messages: int = 10_000,
        stream: str | None = None,
    ) -> Publisher:
        """A batching publisher (see :class:`~relaymq.client.publisher.Publisher`):
        ``publish`` returns a future per message; batches of up to
        ``max_batch_messages`` leave after ``linger_ms``; at most
        ``max_unconfirmed_messages`` wait for confirms (then ``publish`` waits)."""
        return Publisher(
            self.session,
            linger_ms=linger_ms,
            max_batch_messages=max_batch_messages,
            max_batch_bytes=max_batch_bytes,
            max_unconfirmed_messages=max_unconfirmed_messages,
            stream=stream,
        )

    # -- consuming ------------------------------------------------------------------------------

    def subscribe(
        self,
        subscription: str,
        *,
        prefetch: int = 256,
        batch_messages: int = 100,
        ack_linger_ms: float = DEFAULT_ACK_LINGER_MS,
    ) -> Subscription:
        """The messages of an existing subscription (a queue's name works too), pushed
        over the WebSocket: ``async for message in client.subscribe("jobs")``.

        ``prefetch`` is the most messages the server hands out before they are
        acked (the credit); ``batch_messages`` the most in one push. An ack (nack,
        term, extend) without ``confirm`` waits up to ``ack_linger_ms`` to share a
        frame with others, never holding back more than half the prefetch; in a
        ``key_ordered`` subscription it goes at once (the key's next message waits
        for it). ``0`` sends each at once."""
        handle = f"{subscription}#{next(self._handles)}"
        return Subscription(
            self.session,
            subscription,
            handle,
            prefetch=prefetch,
            batch_messages=batch_messages,
            ack_linger_ms=ack_linger_ms,
        )

    def worker(
        self,
        subscription: str | Subscription,
        handler: Handler,
        *,
        concurrency: int = 8,
        prefetch: int | None = None,
        extend_leases: bool = True,
        ack_linger_ms: float = DEFAULT_ACK_LINGER_MS,
    ) -> Worker:
        """A :class:`~relaymq.client.worker.Worker` running ``handler`` (an async
        function of a message) on ``concurrency`` messages at a time; start it with
        ``await worker.run()``, end it with ``worker.stop()``. ``prefetch`` and
        ``ack_linger_ms`` (see :meth:`subscribe`) apply to a subscription given by name."""
        if isinstance(subscription, str):
            subscription = self.subscribe(
                subscription, prefetch=prefetch or 2 * concurrency, ack_linger_ms=ack_linger_ms
            )
        return Worker(subscription, handler, concurrency=concurrency, extend_leases=extend_leases)

    async def work(
        self,
        subscription: str | Subscription,
        handler: Handler,
        *,
        concurrency: int = 8,
        prefetch: int | None = None,
        ack_linger_ms: float = DEFAULT_ACK_LINGER_MS,
    ) -> None:
        """Run ``handler`` on every message until cancelled: ack on return, nack with
        the subscription's backoff on an exception, lease extended while it runs."""
        worker = self.worker(
            subscription,
            handler,
            concurrency=concurrency,
            prefetch=prefetch,
            ack_linger_ms=ack_linger_ms,
        )
        await worker.run()

    def replay(
        self,
        stream: str,
        *,
        partition: int | None = None,
        from_offset: int | None = None,
        from_timestamp_ms: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[StreamMessage]:
        """Read a stream again from an offset or a time (see
        :meth:`~relaymq.client.admin.Streams.replay`); no subscription needed."""
        return self.streams.replay(
            stream,
            partition=partition,
            from_offset=from_offset,
            from_timestamp_ms=from_timestamp_ms,
            follow=follow,
        )
