"""How the bench talks to the server: the Python SDK over WebSocket, or REST over HTTP.

Owns the producers and consumers of a run, for each protocol:

* a producer publishes numbered messages (:mod:`relaymq.bench.payload`) with
  confirms, as fast as it can or paced at a fixed rate
  (:class:`~relaymq.bench.pacing.Pacer`), and
  records every confirm in :class:`~relaymq.bench.verify.Publications` and, when
  paced, how far behind its schedule each message was sent;
* a consumer receives, accounts (:class:`~relaymq.bench.verify.Deliveries`,
  latency) and acks each message until told to stop.

Each producer and consumer has its own connection, opened before the measured
window starts. Both protocols carry the same payload bytes and message ids.
A payload's ``sent_ns`` is read as the message is handed to the client, so
end-to-end latency is measured from the send call.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import msgspec

from relaymq import errors
from relaymq.bench.histogram import LatencyRecorder
from relaymq.bench.pacing import Pacer, default_pacing
from relaymq.bench.payload import decode_payload, encode_payload
from relaymq.bench.verify import Deliveries, Publications
from relaymq.client import AsyncClient, RetryPolicy
from relaymq.client.subscription import DEFAULT_ACK_LINGER_MS

SETTLE_EVERY_MESSAGES = 1_024  # how often a producer looks at its oldest futures
HTTP_FETCH_WAIT_MS = 250
HTTP_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Endpoint:
    """Where the server is, and how to talk to it."""

    url: str
    token: str | None
    namespace: str


@dataclass(frozen=True)
class Tuning:
    """The client-side knobs of a run."""

    message_bytes: int
    batch_messages: int
    linger_ms: float
    max_in_flight_messages: int
    prefetch_messages: int
    deliver_batch_messages: int
    ack_linger_ms: float = DEFAULT_ACK_LINGER_MS  # WebSocket consumers (the SDK's knob)


@dataclass(frozen=True)
class ProducerPlan:
    """What one producer publishes: ``messages`` of them, or until ``deadline``
    (``time.perf_counter``), at ``rate_per_second`` or as fast as it can."""

    producer: int
    subject: str
    messages: int | None
    deadline: float | None
    rate_per_second: float | None
    run_id: str
    pacing: str | None = field(default_factory=default_pacing)  # relaymq.bench.pacing

    def finished(self, sequence: int) -> bool:
        """Whether message ``sequence`` is past the plan."""
        if self.messages is not None:
            return sequence >= self.messages
        return self.deadline is not None and time.perf_counter() >= self.deadline

    @property
    def key(self) -> str:
        """The message key: the producer (order is checked per key)."""
        return f"producer-{self.producer}"


class Producer(Protocol):
    """Publishes a plan with confirms."""

    async def run(
        self, plan: ProducerPlan, publications: Publications, schedule_lag: LatencyRecorder
    ) -> None:
        """Publish everything in the plan; record confirms and failures, and (paced
        plans only) the schedule lag of every message."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


class Consumer(Protocol):
    """Receives and acks the messages of one subscription."""

    async def run(self, deliveries: Deliveries, latency: LatencyRecorder) -> None:
        """Receive, account and ack until :meth:`stop`."""
        ...

    def stop(self) -> None:
        """Make :meth:`run` return soon (after its acks are applied)."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


def account(
    payload: bytes, received_ns: int, deliveries: Deliveries, latency: LatencyRecorder
) -> None:
    """Count one delivered payload and, the first time it arrives, its latency."""
    try:
        producer, sequence, sent_ns = decode_payload(payload)
    except ValueError:
        deliveries.foreign += 1
        return
    if deliveries.receive(producer, sequence):
        latency.record((received_ns - sent_ns) // 1000)


# -- WebSocket: the Python SDK ------------------------------------------------------------


def sdk_client(endpoint: Endpoint) -> AsyncClient:
    """An SDK client of the endpoint; reconnects briefly, then gives up (a bench
    that hangs for minutes is worse than one that reports a failure)."""
    return AsyncClient(
        endpoint.url,
        token=endpoint.token,
        namespace=endpoint.namespace,
        retry=RetryPolicy(timeout_seconds=10),
    )


class WebSocketProducer:
    """A producer on its own SDK client: the batching publisher, pipelined."""

    def __init__(self, client: AsyncClient, tuning: Tuning) -> None:
        self.client = client
        self.tuning = tuning

    @classmethod
    async def open(cls, endpoint: Endpoint, tuning: Tuning) -> WebSocketProducer:
        """Connect now, so the measured window holds no handshake."""
        client = sdk_client(endpoint)
        await client.connect()
        return cls(client, tuning)

    async def run(
        self, plan: ProducerPlan, publications: Publications, schedule_lag: LatencyRecorder
    ) -> None:
        """Publish the plan through one publisher; confirms are read in chunks."""
        tuning = self.tuning
        publisher = self.client.publisher(
            linger_ms=tuning.linger_ms,
            max_batch_messages=tuning.batch_messages,
            max_unconfirmed_messages=tuning.max_in_flight_messages,
        )
        pending: collections.deque[tuple[int, asyncio.Future[Any]]] = collections.deque()
        sequence, key, subject = 0, plan.key, plan.subject
        try:
            with Pacer(plan.rate_per_second, schedule_lag, plan.pacing) as pacer:
                while not plan.finished(sequence):
                    await pacer.wait(sequence)
                    sent_ns = pacer.stamp(sequence)
                    payload = encode_payload(plan.producer, sequence, sent_ns, tuning.message_bytes)
                    future = await publisher.publish(subject, payload, key=key)
                    pending.append((sequence, future))
                    sequence += 1
                    if len(pending) >= SETTLE_EVERY_MESSAGES:
                        settle_confirmed(pending, plan.producer, publications, wait=False)
            await publisher.flush()
        except errors.RelayError:
            pass  # each future holds its own outcome; they are counted below
        settle_confirmed(pending, plan.producer, publications, wait=True)

    async def close(self) -> None:
        """Close the client."""
        await self.client.close()


def settle_confirmed(
    pending: collections.deque[tuple[int, asyncio.Future[Any]]],
    producer: int,
    publications: Publications,
    *,
    wait: bool,
) -> None:
    """Record the outcome of the oldest finished publishes (of all of them once
    ``wait``: an unfinished one then counts as failed)."""
    while pending and (wait or pending[0][1].done()):
        sequence, future = pending.popleft()
        if future.done() and not future.cancelled() and future.exception() is None:
            publications.confirm(producer, sequence)
        else:
            publications.fail()


class WebSocketConsumer:
    """A consumer on its own SDK client: the subscribe iterator, acking each message."""

    def __init__(self, client: AsyncClient, subscription: Any) -> None:
        self.client = client
        self.subscription = subscription

    @classmethod
    async def open(cls, endpoint: Endpoint, tuning: Tuning, name: str) -> WebSocketConsumer:
        """Connect and attach now, so the measured window holds no handshake."""
        client = sdk_client(endpoint)
        subscription = client.subscribe(
            name,
            prefetch=tuning.prefetch_messages,
            batch_messages=tuning.deliver_batch_messages,
            ack_linger_ms=tuning.ack_linger_ms,
        )
        await subscription.open()
        return cls(client, subscription)

    async def run(self, deliveries: Deliveries, latency: LatencyRecorder) -> None:
        """Receive and ack until stopped; then wait until the server applied the acks."""
        receive = self.subscription.receive
        clock_ns = time.perf_counter_ns
        while True:
            message = await receive()
            if message is None:
                break
            account(message.payload, clock_ns(), deliveries, latency)
            await message.ack()
        await self.client.ping()

    def stop(self) -> None:
        """Wake the waiting receive."""
        self.subscription.interrupt()

    async def close(self) -> None:
        """Detach and close the client."""
        await self.subscription.close()
        await self.client.close()


# -- HTTP: the REST API --------------------------------------------------------------------


class FetchedMessage(msgspec.Struct):
    """The fields of a fetched message the bench reads."""

    payload: str
    receipt: str


class Fetched(msgspec.Struct):
    """A fetch response."""

    messages: list[FetchedMessage]


class Published(msgspec.Struct):
    """A publish response: one result per message."""

    results: list[Any]


_fetched_decoder = msgspec.json.Decoder(Fetched)
_published_decoder = msgspec.json.Decoder(Published)
_encoder = msgspec.json.Encoder()


def http_client(endpoint: Endpoint) -> httpx.AsyncClient:
    """An HTTP client of the endpoint's ``/v1/namespaces/NAMESPACE`` routes."""
    headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
    headers["Content-Type"] = "application/json"
    return httpx.AsyncClient(
        base_url=f"{endpoint.url}/v1/namespaces/{endpoint.namespace}",
        headers=headers,
        timeout=HTTP_TIMEOUT_SECONDS,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
    )


class HttpProducer:
    """A producer posting JSON batches to ``/publish``, several requests in flight."""

    def __init__(self, client: httpx.AsyncClient, tuning: Tuning) -> None:
        self.client = client
        self.tuning = tuning

    @classmethod
    async def open(cls, endpoint: Endpoint, tuning: Tuning) -> HttpProducer:
        """An HTTP client (connections open on first use)."""
        return cls(http_client(endpoint), tuning)

    async def run(
        self, plan: ProducerPlan, publications: Publications, schedule_lag: LatencyRecorder
    ) -> None:
        """Publish the plan in batches; at most ``max_in_flight`` messages unconfirmed."""
        tuning = self.tuning
        requests = max(1, tuning.max_in_flight_messages // tuning.batch_messages)
        window = asyncio.Semaphore(requests)
        tasks: set[asyncio.Task[None]] = set()
        sequence = 0
        with Pacer(plan.rate_per_second, schedule_lag, plan.pacing) as pacer:
            while not plan.finished(sequence):
                batch = await next_batch(plan, pacer, sequence, tuning.batch_messages)
                if not batch:
                    break  # the deadline passed between the two looks at it
                sequence += len(batch)
                await window.acquire()
                task = asyncio.create_task(self.post(plan, batch, publications))
                tasks.add(task)
                task.add_done_callback(lambda done: (tasks.discard(done), window.release()))
        if tasks:
            await asyncio.wait(tasks)

    async def post(
        self, plan: ProducerPlan, batch: list[tuple[int, int]], publications: Publications
    ) -> None:
        """One publish request; its messages are confirmed or failed together."""
        size = self.tuning.message_bytes
        messages = [
            {
                "subject": plan.subject,
                "key": plan.key,
                "id": f"{plan.run_id}-{plan.producer}-{sequence}",
                "payload": encode_payload(plan.producer, sequence, sent_ns, size).decode("ascii"),
            }
            for sequence, sent_ns in batch
        ]
        try:
            response = await self.client.post(
                "/publish", content=_encoder.encode({"messages": messages})
            )
            response.raise_for_status()
            results = _published_decoder.decode(response.content).results
        except (httpx.HTTPError, msgspec.DecodeError):
            publications.fail(len(batch))
            return
        for sequence, _ in batch[: len(results)]:
            publications.confirm(plan.producer, sequence)
        publications.fail(len(batch) - len(results))

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()


async def next_batch(
    plan: ProducerPlan, pacer: Pacer, sequence: int, batch_messages: int
) -> list[tuple[int, int]]:
    """``(sequence, sent_ns)`` of the next request's messages, from ``sequence`` on:
    up to ``batch_messages`` of them, but only what is due once the first one is
    (the rest waits for its time). Each is stamped as it joins the batch."""
    batch: list[tuple[int, int]] = []
    while len(batch) < batch_messages and not plan.finished(sequence):
        if batch and not pacer.is_due(sequence):
            break
        await pacer.wait(sequence)
        batch.append((sequence, pacer.stamp(sequence)))
        sequence += 1
    return batch


class HttpConsumer:
    """A consumer long-polling ``fetch`` and acking each batch with one request."""

    def __init__(self, client: httpx.AsyncClient, tuning: Tuning, name: str, number: int) -> None:
        self.client = client
        self.name = name
        self.consumer_id = f"bench-{number}"
        self.batch_messages = tuning.deliver_batch_messages
        self.stopped = False

    @classmethod
    async def open(cls, endpoint: Endpoint, tuning: Tuning, name: str, number: int) -> HttpConsumer:
        """An HTTP client (connections open on first use)."""
        return cls(http_client(endpoint), tuning, name, number)

    async def run(self, deliveries: Deliveries, latency: LatencyRecorder) -> None:
        """Fetch, account, ack, until stopped."""
        fetch_body = _encoder.encode(
            {
                "consumer_id": self.consumer_id,
                "max_messages": self.batch_messages,
                "wait_ms": HTTP_FETCH_WAIT_MS,
            }
        )
        path = f"/subscriptions/{self.name}"
        while not self.stopped:
            response = await self.client.post(f"{path}/fetch", content=fetch_body)
            response.raise_for_status()
            messages = _fetched_decoder.decode(response.content).messages
            received_ns = time.perf_counter_ns()
            for message in messages:
                account(message.payload.encode(), received_ns, deliveries, latency)
            if messages:
                receipts = [message.receipt for message in messages]
                acked = await self.client.post(
                    f"{path}/ack", content=_encoder.encode({"receipts": receipts})
                )
                acked.raise_for_status()

    def stop(self) -> None:
        """End :meth:`run` after its current fetch (at most a long-poll away)."""
        self.stopped = True

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()
