"""Reconnect: the server SIGKILLed mid-stream and restarted on the same port.

The client recovers by itself: publishes in flight are re-sent with their ids
(deduplicated), the subscription resumes, no caller sees an error, and every
confirmed message is consumed (confirmed lost = 0). A message delivered on
the dead connection cannot be acked (``StaleReceipt``, at once). When the
server stays away longer than the retry policy allows, callers get
``ConnectionLost``; when the client's API key is revoked, ``Unauthenticated``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import relaymq
from relaymq import errors
from tests.client.conftest import TOKEN, Api, ServeProcess

MESSAGES = 3_000
KILL_AFTER_MESSAGES = 1_000
RETRY = relaymq.RetryPolicy(initial_delay_ms=50, max_delay_ms=500, timeout_seconds=30)


async def publish_all(client: relaymq.AsyncClient, confirmed: set[str]) -> None:
    """Publish MESSAGES messages at a steady pace; record each confirmed id."""
    async with client.publisher(linger_ms=2, max_unconfirmed_messages=500) as publisher:
        futures = []
        for index in range(MESSAGES):
            message_id = f"r-{index}"
            future = await publisher.publish("restart", message_id, id=message_id)
            future.add_done_callback(lambda done, name=message_id: confirmed.add(name))
            futures.append(future)
            if index % 50 == 0:
                await asyncio.sleep(0.005)
        for future in futures:
            await future  # raises if any publish failed: none may


async def test_sigkill_and_restart_lose_no_confirmed_message(
    serve_process: ServeProcess,
) -> None:
    serve_process.start()
    async with relaymq.AsyncClient(serve_process.url, retry=RETRY, token=TOKEN) as client:
        await client.queues.create("restart", ack_timeout_ms=5_000, max_deliveries=0)
        confirmed: set[str] = set()
        received: set[str] = set()
        subscription = client.subscribe("restart", prefetch=200)
        held = await publish_and_hold_one(client, subscription)
        publishing = asyncio.create_task(publish_all(client, confirmed))

        async def consume() -> None:
            async for message in subscription:
                received.add(message.id)
                await message.ack()
                if len(received) >= KILL_AFTER_MESSAGES and not killed.is_set():
                    killed.set()

        killed = asyncio.Event()
        consuming = asyncio.create_task(consume())
        await asyncio.wait_for(killed.wait(), 30)
        assert not publishing.done(), "the kill must land mid-stream"
        serve_process.kill()
        await asyncio.sleep(0.3)
        serve_process.start()

        await asyncio.wait_for(publishing, 60)  # no error reached the publisher
        deadline = time.monotonic() + 30
        while not confirmed <= received and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        consuming.cancel()
        assert len(confirmed) == MESSAGES
        assert confirmed - received == set(), "confirmed messages were lost"
        assert client.session.reconnects >= 1
        with pytest.raises(errors.StaleReceipt):
            await held.ack()


async def publish_and_hold_one(
    client: relaymq.AsyncClient, subscription: relaymq.client.Subscription
) -> relaymq.Message:
    """A message delivered before the kill and never acked."""
    await client.publish("restart", b"held", id="held")
    message = await subscription.receive(timeout_seconds=10)
    assert message is not None and message.id == "held"
    return message


async def test_callers_get_connection_lost_when_the_server_stays_away(
    serve_process: ServeProcess,
) -> None:
    serve_process.start()
    policy = relaymq.RetryPolicy(initial_delay_ms=20, max_delay_ms=50, timeout_seconds=0.5)
    async with relaymq.AsyncClient(serve_process.url, retry=policy, token=TOKEN) as client:
        await client.queues.create("gone")
        await client.publish("gone", b"first")
        subscription = client.subscribe("gone")
        await subscription.open()
        serve_process.kill()
        with pytest.raises(errors.ConnectionLost):
            async with asyncio.timeout(10):
                async for message in subscription:
                    await message.ack()
        with pytest.raises(errors.ConnectionLost):
            await client.publish("gone", b"second")
        with pytest.raises(errors.ConnectionLost):
            await client.queues.get("gone")


async def test_connecting_to_nothing_fails_fast() -> None:
    url = "http://127.0.0.1:9"  # discard port: nothing listens
    async with relaymq.AsyncClient(url, retry=relaymq.RetryPolicy(timeout_seconds=0.2)) as client:
        started = time.monotonic()
        with pytest.raises(errors.ConnectionLost):
            await client.connect()
        with pytest.raises(errors.ConnectionLost):
            await client.streams.list()
        assert time.monotonic() - started < 5


async def test_a_revoked_key_ends_the_clients_subscription_with_unauthenticated(
    server_url: str, namespace: str, api: Api
) -> None:
    grants = [{"role": "publish"}, {"role": "consume"}, {"role": "manage"}]
    created = api.ok("POST", "/keys", 201, json={"name": "app", "grants": grants})
    async with relaymq.AsyncClient(
        server_url, namespace=namespace, token=created["token"], retry=RETRY
    ) as client:
        await client.queues.create("revoked")
        subscription = client.subscribe("revoked")
        await subscription.open()
        api.ok("DELETE", f"/keys/{created['id']}")
        # The server closes the connection; the reconnect is refused for good.
        with pytest.raises(errors.Unauthenticated):
            async with asyncio.timeout(10):
                await anext(subscription)
