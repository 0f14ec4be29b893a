"""The SDK's WebSocket session against the real server: keepalive and the writer.

An idle client pings often enough that a server with a short idle timeout
keeps its connection; a linger-free publisher's burst shares one frame, sealed
by the writer; publishers wait while too many messages are unconfirmed and a
flush until all are confirmed; closing the client fails a batch it never sealed instead of
leaving its futures waiting; a refused handshake raises the server's error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import relaymq
from relaymq import errors
from tests.client.conftest import TOKEN
from tests.server.conftest import RunningServer, start_server


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server closing WebSockets after one silent second."""
    running = start_server(Path(tmp_path_factory.mktemp("idle")), ws_idle_timeout_seconds=1)
    yield running
    running.stop()


async def test_an_idle_client_pings_so_the_server_keeps_its_connection(
    impatient_server: RunningServer,
) -> None:
    async with relaymq.AsyncClient(
        impatient_server.base_url, namespace="default", token=TOKEN
    ) as client:
        await client.connect()
        connection_id = client.session.connection_id
        await asyncio.sleep(2.6)  # well past the 1 s idle timeout, sending nothing ourselves
        assert client.session.connected
        assert client.session.reconnects == 0
        assert client.session.connection_id == connection_id
        await client.ping(timeout_seconds=5)


async def test_a_burst_without_linger_shares_one_frame(client: relaymq.AsyncClient) -> None:
    await client.queues.create("burst")
    await client.ping()  # connected, and the writer idles
    publisher = client.publisher(linger_ms=0)
    futures = [await publisher.publish("burst", f"m-{index}") for index in range(50)]
    assert client.session.unconfirmed_frames == 0  # not sealed before the writer wakes
    await asyncio.sleep(0)
    assert client.session.unconfirmed_frames == 1
    await publisher.flush()
    offsets = [(await future).offset for future in futures]
    assert offsets == sorted(offsets) and len(set(offsets)) == 50


async def test_publishers_wait_for_room_and_a_flush_for_every_confirm(
    client: relaymq.AsyncClient,
) -> None:
    await client.queues.create("room")
    await client.ping()  # connected: no publish waits for the connection
    publisher = client.publisher(linger_ms=0, max_batch_messages=5, max_unconfirmed_messages=5)
    most_unconfirmed = 0

    async def publish_many(producer: int) -> list[asyncio.Future[relaymq.PublishResult]]:
        nonlocal most_unconfirmed
        futures = []
        for index in range(40):
            futures.append(await publisher.publish("room", f"{producer}-{index}"))
            most_unconfirmed = max(most_unconfirmed, publisher.unconfirmed)
        return futures

    both = await asyncio.gather(publish_many(0), publish_many(1))
    assert most_unconfirmed == 5  # each publish past five waited for a confirm
    await publisher.flush()
    assert publisher.unconfirmed == 0 and publisher.published == 80
    assert all(future.done() for futures in both for future in futures)
    await publisher.flush()  # nothing unconfirmed: at once


async def test_closing_fails_a_batch_that_was_never_sealed(server_url: str, namespace: str) -> None:
    client = relaymq.AsyncClient(server_url, namespace=namespace, token=TOKEN)
    await client.queues.create("unsealed")
    publisher = client.publisher(linger_ms=0)
    future = await publisher.publish("unsealed", "late")
    await client.close()
    assert future.done()
    with pytest.raises(errors.ConnectionLost):
        future.result()


@pytest.mark.parametrize(
    ("token", "namespace", "error"),
    [
        ("rmq_0000000000000000_" + "B" * 43, "default", errors.Unauthenticated),
        (TOKEN, "no-such-namespace", errors.NamespaceNotFound),
    ],
)
async def test_a_refused_handshake_raises_the_servers_error(
    server_url: str, token: str | None, namespace: str, error: type[errors.RelayError]
) -> None:
    # The server's refusal carries its error as JSON; websockets hands the body over
    # as a bytearray.
    async with relaymq.AsyncClient(server_url, namespace=namespace, token=token) as client:
        with pytest.raises(error):
            await client.connect()
