"""``relaymq.Client``: the blocking client, the same surface as ``AsyncClient``.

Owns a private event loop on a daemon thread that runs one
:class:`~relaymq.client.async_client.AsyncClient`, and blocking wrappers over
it: methods block until the coroutine ends, iterators are plain iterators,
messages settle with plain calls, handlers run in worker threads. Errors are
the same tree.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from relaymq.client.async_client import DEFAULT_NAMESPACE, DEFAULT_URL, AsyncClient
from relaymq.client.messages import Message
from relaymq.client.models import PublishResult, StreamMessage
from relaymq.client.publisher import Publisher
from relaymq.client.retry import RetryPolicy
from relaymq.client.subscription import DEFAULT_ACK_LINGER_MS, Subscription
from relaymq.client.worker import Worker

Result = TypeVar("Result")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """An event loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="relaymq", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Result]) -> Result:
        """Run a coroutine on the loop and block until it ends."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop and let its thread end."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class Blocking:
    """Wraps an object whose methods are coroutines: calling them blocks.

    Used for the admin resources (``client.streams.create(...)`` and so on);
    async iterators come back as plain iterators."""

    def __init__(self, target: Any, runner: LoopThread) -> None:
        self._target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if inspect.iscoroutinefunction(attribute):

            @functools.wraps(attribute)
            def call(*args: Any, **kwargs: Any) -> Any:
                return self._runner.run(attribute(*args, **kwargs))

            return call
        if inspect.isasyncgenfunction(attribute):

            @functools.wraps(attribute)
            def iterate(*args: Any, **kwargs: Any) -> Iterator[Any]:
                return blocking_iterator(attribute(*args, **kwargs), self._runner)

            return iterate
        return attribute

    def __dir__(self) -> list[str]:
        return dir(self._target)


def blocking_iterator(iterator: Any, runner: LoopThread) -> Iterator[Any]:
    """An async iterator as a blocking one."""
    while True:
        try:
            yield runner.run(iterator.__anext__())
        except StopAsyncIteration:
            return


class SyncMessage:
    """A received message with blocking ``ack`` / ``nack`` / ``term`` / ``extend``;
    every field of :class:`~relaymq.client.messages.Message` reads through."""

    def __init__(self, message: Message, runner: LoopThread) -> None:
        self.message = message
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.message, name)

    def __repr__(self) -> str:
        return repr(self.message)

    def ack(self, *, confirm: bool = False) -> None:
        """Done (``ordered``: commit up to this message)."""
        self._runner.run(self.message.ack(confirm=confirm))

    def nack(
        self, delay_ms: int | None = None, *, error: str | None = None, confirm: bool = False
    ) -> None:
        """Deliver again after ``delay_ms`` (default: the subscription's backoff)."""
        self._runner.run(self.message.nack(delay_ms, error=error, confirm=confirm))

    def term(self, reason: str | None = None, *, confirm: bool = False) -> None:
        """Dead-letter the message now."""
        self._runner.run(self.message.term(reason, confirm=confirm))

    def extend(self, extend_ms: int | None = None, *, confirm: bool = False) -> None:
        """Push the lease out by ``extend_ms`` (default: the ack timeout)."""
        self._runner.run(self.message.extend(extend_ms, confirm=confirm))


class SyncSubscription:
    """Messages of a subscription as a plain iterator: ``for message in sub``."""

    def __init__(self, subscription: Subscription, runner: LoopThread) -> None:
        self.subscription = subscription
        self._runner = runner

    def __iter__(self) -> Iterator[SyncMessage]:
        while True:
            message = self.receive()
            if message is None:
                return
            yield message

    def receive(self, timeout_seconds: float | None = None) -> SyncMessage | None:
        """The next message, or ``None`` once closed or after ``timeout_seconds``."""
        message = self._runner.run(self.subscription.receive(timeout_seconds))
        return SyncMessage(message, self._runner) if message is not None else None

    def close(self) -> None:
        """Detach; unacked messages go back to the server."""
        self._runner.run(self.subscription.close())

    def __enter__(self) -> SyncSubscription:
        self._runner.run(self.subscription.open())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SyncPublisher:
    """The batching publisher, blocking: ``publish`` returns a
    :class:`concurrent.futures.Future` of the message's :class:`PublishResult`."""

    def __init__(self, publisher: Publisher, runner: LoopThread) -> None:
        self.publisher = publisher
        self._runner = runner

    def publish(
        self, subject: str, payload: bytes | str = b"", **options: Any
    ) -> concurrent.futures.Future[PublishResult]:
        """Queue a message (blocks while too many are unconfirmed)."""
        result: concurrent.futures.Future[PublishResult] = concurrent.futures.Future()
        future = self._runner.run(self.publisher.publish(subject, payload, **options))
        future.add_done_callback(functools.partial(copy_outcome, result))
        return result

    def flush(self) -> None:
        """Send what lingers and wait for every confirm."""
        self._runner.run(self.publisher.flush())

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.flush()


def copy_outcome(target: concurrent.futures.Future[Any], source: asyncio.Future[Any]) -> None:
    """Copy an asyncio future's outcome to a thread future."""
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())


class SyncWorker:
    """A worker whose handler is a plain function, run in ``concurrency`` threads."""

    def __init__(self, worker: Worker, runner: LoopThread) -> None:
        self.worker = worker
        self._runner = runner

    @property
    def processed(self) -> int:
        """Messages handled successfully."""
        return self.worker.processed

    @property
    def failed(self) -> int:
        """Messages whose handler raised."""
        return self.worker.failed

    def run(self) -> None:
        """Process messages until :meth:`stop` (from another thread) or Ctrl-C."""
        self._runner.run(self.worker.run())

    def stop(self) -> None:
        """Stop gracefully (thread-safe)."""
        self._runner.loop.call_soon_threadsafe(self.worker.stop)


class Client:
    """A blocking client of one RelayMQ server and namespace.

    Same arguments and methods as :class:`~relaymq.client.async_client.AsyncClient`,
    without ``await``::

        with relaymq.Client("http://127.0.0.1:8765") as client:
            client.queues.create("jobs", exist_ok=True)
            client.publish("jobs", b"hello")
            for message in client.subscribe("jobs"):
                message.ack()
                break
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
        self._runner = LoopThread()

        async def build() -> AsyncClient:
            return AsyncClient(
                url,
                token=token,
                namespace=namespace,
                timeout_seconds=timeout_seconds,
                open_timeout_seconds=open_timeout_seconds,
                retry=retry,
            )

        self.client = self._runner.run(build())
        self.namespace = namespace
        self.url = self.client.url
        self.namespaces: Any = Blocking(self.client.namespaces, self._runner)
        self.streams: Any = Blocking(self.client.streams, self._runner)
        self.subscriptions: Any = Blocking(self.client.subscriptions, self._runner)
        self.queues: Any = Blocking(self.client.queues, self._runner)
        self.topics: Any = Blocking(self.client.topics, self._runner)
        self._closed = False

    def connect(self) -> Client:
        """Open the WebSocket session now."""
        self._runner.run(self.client.connect())
        return self

    def close(self) -> None:
        """Wait for publishes in flight, close, and stop the loop thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self.client.close())
        finally:
            self._runner.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def publish(self, subject: str, payload: bytes | str = b"", **options: Any) -> PublishResult:
        """Publish one message and wait until durable (options as ``AsyncClient.publish``)."""
        return self._runner.run(self.client.publish(subject, payload, **options))

    def publisher(self, **options: Any) -> SyncPublisher:
        """A batching publisher (options as ``AsyncClient.publisher``)."""
        return SyncPublisher(self.client.publisher(**options), self._runner)

    def subscribe(
        self,
        subscription: str,
        *,
        prefetch: int = 256,
        batch_messages: int = 100,
        ack_linger_ms: float = DEFAULT_ACK_LINGER_MS,
    ) -> SyncSubscription:
        """The messages of a subscription as a plain iterator (options as
        ``AsyncClient.subscribe``)."""

        async def make() -> Subscription:
            return self.client.subscribe(
                subscription,
                prefetch=prefetch,
                batch_messages=batch_messages,
                ack_linger_ms=ack_linger_ms,
            )

        return SyncSubscription(self._runner.run(make()), self._runner)

    def worker(
        self,
        subscription: str,
        handler: Callable[[SyncMessage], object],
        *,
        concurrency: int = 8,
        prefetch: int | None = None,
        ack_linger_ms: float = DEFAULT_ACK_LINGER_MS,
    ) -> SyncWorker:
        """A worker running ``handler`` (a plain function) in ``concurrency`` threads
        (options as ``AsyncClient.worker``)."""
        pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="relaymq")
        runner = self._runner

        async def run_in_thread(message: Message) -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(pool, handler, SyncMessage(message, runner))

        async def make() -> Worker:
            return self.client.worker(
                subscription,
                run_in_thread,
                concurrency=concurrency,
                prefetch=prefetch,
                ack_linger_ms=ack_linger_ms,
            )

        return SyncWorker(self._runner.run(make()), self._runner)

    def work(
        self,
        subscription: str,
        handler: Callable[[SyncMessage], object],
        *,
        concurrency: int = 8,
        prefetch: int | None = None,
        ack_linger_ms: float = DEFAULT_ACK_LINGER_MS,
    ) -> None:
        """Run ``handler`` on every message until Ctrl-C (ack on return, nack on raise)."""
        worker = self.worker(
            subscription,
            handler,
            concurrency=concurrency,
            prefetch=prefetch,
            ack_linger_ms=ack_linger_ms,
        )
        worker.run()

    def replay(self, stream: str, **options: Any) -> Iterator[StreamMessage]:
        """Read a stream again from an offset or a time (options as ``AsyncClient.replay``)."""
        return blocking_iterator(self.client.replay(stream, **options), self._runner)
