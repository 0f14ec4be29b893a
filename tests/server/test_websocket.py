"""The WebSocket adapter over a real socket: a real server, the ``websockets`` client.

Resources are created through the HTTP API (``api`` fixture, one namespace per
test); everything else goes through WebSocket frames as a client would send them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.uri import parse_uri

from tests.server.conftest import AUTH_HEADERS, Api, RunningServer, start_server

RECEIVE_TIMEOUT_SECONDS = 10
NOWHERE_PUBLISH = {
    "op": "publish",
    "seq": 7,
    "messages": [{"subject": "nowhere.x", "payload": b"x"}],
}


def ws_url(server: RunningServer, namespace: str) -> str:
    """The WebSocket URL of a namespace."""
    return server.base_url.replace("http://", "ws://") + f"/v1/namespaces/{namespace}/ws"


def create_stream(api: Api, name: str, partitions: int = 1) -> None:
    """A stream capturing ``{name}.>``."""
    body = {"name": name, "subjects": [f"{name}.>"], "partitions": partitions}
    api.ok("POST", "/streams", 201, json=body)


def create_subscription(api: Api, name: str, stream: str, **options: Any) -> None:
    """A shared subscription on ``stream``."""
    api.ok("POST", "/subscriptions", 201, json={"name": name, "stream": stream, **options})


class Client:
    """A WebSocket client speaking the protocol's frames as dicts."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.backlog: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any], binary: bool = False) -> None:
        """Send a frame as JSON text, or as msgpack binary."""
        if binary:
            await self.websocket.send(msgspec.msgpack.encode(frame))
        else:
            await self.websocket.send(json.dumps(frame))

    async def receive(self) -> dict[str, Any]:
        """The next frame from the socket (JSON or msgpack)."""
        async with asyncio.timeout(RECEIVE_TIMEOUT_SECONDS):
            data = await self.websocket.recv()
        if isinstance(data, bytes):
            return msgspec.msgpack.decode(data)
        return json.loads(data)

    async def next(self, op: str) -> dict[str, Any]:
        """The next frame with ``op``; other frames wait in the backlog."""
        for index, frame in enumerate(self.backlog):
            if frame["op"] == op:
                return self.backlog.pop(index)
        while True:
            frame = await self.receive()
            if frame["op"] == op:
                return frame
            self.backlog.append(frame)

    async def messages(self, sub: str, count: int) -> list[dict[str, Any]]:
        """Exactly the next ``count`` delivered messages of ``sub``."""
        received: list[dict[str, Any]] = []
        while len(received) < count:
            frame = await self.next("deliver")
            assert frame["sub"] == sub
            received.extend(frame["messages"])
        assert len(received) == count, f"got {len(received)} messages, wanted {count}"
        return received

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Every frame that arrives within ``seconds`` (expected: none)."""
        frames = list(self.backlog)
        self.backlog.clear()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    frames.append(await self.receive())
        return frames

    async def publish(self, seq: int, subject: str, payload: str = "x") -> dict[str, Any]:
        """Publish one message and wait for its confirm."""
        frame = {
            "op": "publish",
            "seq": seq,
            "messages": [{"subject": subject, "payload": payload}],
        }
        await self.send(frame)
        confirm = await self.next("confirm")
        assert confirm["seq"] == seq
        return confirm


@pytest.fixture
async def client(running_server: RunningServer, api: Api) -> AsyncIterator[Client]:
    """A WebSocket client on the test's namespace."""
    async with connect(
        ws_url(running_server, api.namespace), max_size=None, additional_headers=AUTH_HEADERS
    ) as websocket:
        yield Client(websocket)


async def test_pipelined_publish_confirms_every_message(client: Client, api: Api) -> None:
    create_stream(api, "orders", partitions=2)
    count = 1_000
    for seq in range(count):
        message = {"subject": f"orders.{seq % 7}", "key": str(seq), "payload": f"m{seq}"}
        await client.send({"op": "publish", "seq": seq, "messages": [message]})
    confirms = [await client.next("confirm") for _ in range(count)]
    assert sorted(confirm["seq"] for confirm in confirms) == list(range(count))
    positions = {
        (result["partition"], result["offset"])
        for confirm in confirms
        for result in confirm["results"]
    }
    assert len(positions) == count
    stream = api.ok("GET", "/streams/orders")
    assert stream["messages"] == count


async def test_batch_publish_confirms_results_in_order(client: Client, api: Api) -> None:
    create_stream(api, "orders")
    messages = [{"subject": "orders.a", "payload": str(index)} for index in range(50)]
    await client.send({"op": "publish", "seq": 1, "messages": messages})
    confirm = await client.next("confirm")
    assert [result["offset"] for result in confirm["results"]] == list(range(50))


async def test_subscribe_receive_and_ack(client: Client, api: Api) -> None:
    create_stream(api, "orders")
    create_subscription(api, "work", "orders")
    for seq in range(5):
        await client.publish(seq, "orders.created", f"order {seq}")
    await client.send(
        {"op": "subscribe", "seq": 10, "sub": "s1", "subscription": "work", "credit": 10}
    )
    assert await client.next("result") == {"op": "result", "seq": 10, "sub": "s1", "mode": "shared"}
    messages = await client.messages("s1", 5)
    assert [message["payload"] for message in messages] == [f"order {n}" for n in range(5)]
    assert all(message["delivery_count"] == 1 for message in messages)
    receipts = [message["receipt"] for message in messages]
    await client.send({"op": "ack", "seq": 11, "sub": "s1", "receipts": receipts})
    result = await client.next("result")
    assert result["seq"] == 11
    assert [outcome["ok"] for outcome in result["results"]] == [True] * 5
    subscription = api.ok("GET", "/subscriptions/work")
    assert subscription["acked"] == 5


async def test_nack_redelivers(client: Client, api: Api) -> None:
    create_stream(api, "orders")
    create_subscription(api, "work", "orders")
    await client.publish(1, "orders.created")
    await client.send({"op": "subscribe", "sub": "s1", "subscription": "work", "credit": 1})
    [first] = await client.messages("s1", 1)
    await client.send({"op": "nack", "sub": "s1", "receipts": [first["receipt"]], "delay_ms": 0})
    [again] = await client.messages("s1", 1)
    assert (again["offset"], again["delivery_count"]) == (first["offset"], 2)
    assert again["receipt"] != first["receipt"]


async def test_acking_twice_reports_the_failed_receipt(client: Client, api: Api) -> None:
    create_stream(api, "orders")
    create_subscription(api, "work", "orders")
    await client.publish(1, "orders.created")
    await client.send({"op": "subscribe", "sub": "s1", "subscription": "work", "credit": 1})
    [message] = await client.messages("s1", 1)
    ack = {"op": "ack", "sub": "s1", "receipts": [message["receipt"]]}
    await client.send(ack)  # no seq, all fine: no result frame
    await client.send(ack)  # no seq, but a receipt failed: a result frame
    result = await client.next("result")
    [outcome] = result["results"]
    assert outcome["ok"] is False
    assert outcome["code"] in {"receipt_not_found", "stale_receipt"}


async def test_credit_is_the_most_unacked_messages(client: Client, api: Api) -> None:
    create_stream(api, "orders")
    create_subscription(api, "work", "orders")
    messages = [{"subject": "orders.a", "payload": str(index)} for index in range(20)]
    await client.send({"op": "publish", "seq": 1, "messages": messages})
    await client.next("confirm")
    await client.send({"op": "subscribe", "sub": "s1", "subscription": "work", "credit": 5})
    first = await client.messages("s1", 5)
    assert await client.quiet(0.5) == []
    receipts = [message["receipt"] for message in first[:2]]
    await client.send({"op": "ack", "sub": "s1", "receipts": receipts})
    assert len(await client.messages("s1", 2)) == 2  # acking freed two units
    assert await client.quiet(0.5) == []
    await client.send({"op": "credit", "sub": "s1", "credit": 3, "seq": 2})
    assert len(await client.messages("s1", 3)) == 3  # raising the credit allowed three more
    assert await client.quiet(0.5) == [{"op": "result", "seq": 2, "sub": "s1"}]


async def ordered_deliveries(client: Client, api: Api, count: int) -> list[dict[str, Any]]:
    """``count`` messages published to an ``ordered`` subscription with a credit of 5
    (at most), and the first deliveries: as many as the credit allows."""
    create_stream(api, "ledger")
    create_subscription(api, "books", "ledger", mode="ordered")
    messages = [{"subject": "ledger.a", "payload": str(index)} for index in range(count)]
    await client.send({"op": "publish", "seq": 1, "messages": messages})
    await client.next("confirm")
    credit = min(count, 5)
    await client.send({"op": "subscribe", "sub": "s1", "subscription": "books", "credit": credit})
    return await client.messages("s1", credit)


async def test_a_cumulative_ack_frees_the_credit_of_every_message_it_commits(
    client: Client, api: Api
) -> None:
    first = await ordered_deliveries(client, api, 10)
    await client.send({"op": "ack", "sub": "s1", "receipts": [first[2]["receipt"]]})
    more = await client.messages("s1", 3)  # the ack of offset 2 committed 0..2, not 3 and 4
    assert [message["offset"] for message in more] == [5, 6, 7]
    assert await client.quiet(0.5) == []
    await client.send({"op": "ack", "sub": "s1", "receipts": [more[-1]["receipt"]]})
    rest = await client.messages("s1", 2)
    assert [message["offset"] for message in rest] == [8, 9]


async def test_an_expired_ordered_lease_frees_the_credit_of_its_partition(
    client: Client, api: Api
) -> None:
    create_stream(api, "ledger")
    create_subscription(api, "books", "ledger", mode="ordered", ack_timeout_ms=1_000)
    messages = [{"subject": "ledger.a", "payload": str(index)} for index in range(2)]
    await client.send({"op": "publish", "seq": 1, "messages": messages})
    await client.next("confirm")
    await client.send({"op": "subscribe", "sub": "s1", "subscription": "books", "credit": 2})
    _, second = await client.messages("s1", 2)
    extend = {"op": "extend", "sub": "s1", "receipts": [second["receipt"]], "extend_ms": 60_000}
    await client.send(extend)
    # The first lease runs out and rewinds the partition, the extended one with it: both
    # units of credit come back, and both messages come again.
    again = await client.messages("s1", 2)
    assert [message["offset"] for message in again] == [0, 1]


async def test_an_ordered_nack_frees_the_credit_of_every_message_it_rewinds(
    client: Client, api: Api
) -> None:
    first = await ordered_deliveries(client, api, 3)
    nack = {"op": "nack", "sub": "s1", "receipts": [first[0]["receipt"]], "delay_ms": 0}
    await client.send(nack)
    again = await client.messages("s1", 3)  # the partition rewound: all three come again
    assert [message["offset"] for message in again] == [0, 1, 2]


async def test_an_expired_lease_frees_its_credit(client: Client, api: Api) -> None:
    create_stream(api, "orders")
    create_subscription(api, "work", "orders", ack_timeout_ms=1_000)
    await client.publish(1, "orders.a", "first")
    await client.send({"op": "subscribe", "sub": "s1", "subscription": "work", "credit": 1})
    [first] = await client.messages("s1", 1)
    extend = {"op": "extend", "seq": 2, "sub": "s1", "receipts": [first["receipt"]]}
    await client.send({**extend, "extend_ms": 60_000})
    assert (await client.next("result"))["results"][0]["ok"] is True
    await client.publish(3, "orders.a", "second")
    assert await client.quiet(2.5) == []  # the one unit of credit is still taken
    await client.send({**extend, "seq": 4, "extend_ms": 500})  # shorter than the lease left
    assert (await client.next("result"))["results"][0]["ok"] is True
    redelivered = await client.messages("s1", 1)  # the lease ran out: the credit came back
    assert redelivered[0]["payload"] in {"first", "second"}


async def test_credit_above_the_limit_is_refused(client: Client, api: Api) -> None:
    create_stream(api, "orders")
    create_subscription(api, "work", "orders")
    frame = {"op": "subscribe", "seq": 4, "sub": "s1", "subscription": "work", "credit": 10_001}
    await client.send(frame)
    error = await client.next("error")
    assert (error["code"], error["seq"], error["sub"]) == ("limit_exceeded", 4, "s1")
    await client.send({**frame, "credit": 10})
    assert (await client.next("result"))["seq"] == 4
    await client.send({"op": "credit", "seq": 5, "sub": "s1", "credit": 9_991})
    assert (await client.next("error"))["code"] == "limit_exceeded"


async def test_disconnect_hands_unacked_messages_to_another_consumer(
    running_server: RunningServer, client: Client, api: Api
) -> None:
    create_stream(api, "orders")
    create_subscription(api, "work", "orders", ack_timeout_ms=600_000)
    await client.publish(1, "orders.created")
    async with connect(
        ws_url(running_server, api.namespace), additional_headers=AUTH_HEADERS
    ) as websocket:
        leaver = Client(websocket)
        await leaver.send({"op": "subscribe", "sub": "a", "subscription": "work", "credit": 5})
        [taken] = await leaver.messages("a", 1)
    await client.send({"op": "subscribe", "sub": "b", "subscription": "work", "credit": 5})
    [again] = await client.messages("b", 1)  # long before the 10-minute lease ends
    assert (again["offset"], again["delivery_count"]) == (taken["offset"], 2)


async def test_unsubscribe_releases_and_stops_delivery(client: Client, api: Api) -> None:
    create_stream(api, "orders")
    create_subscription(api, "work", "orders")
    await client.send({"op": "subscribe", "sub": "s1", "subscription": "work", "credit": 5})
    await client.send({"op": "unsubscribe", "sub": "s1", "seq": 3})
    assert (await client.next("result"))["seq"] == 3
    await client.publish(1, "orders.created")
    assert await client.quiet(0.5) == []
    await client.send({"op": "ack", "seq": 4, "sub": "s1", "receipts": ["r"]})
    assert (await client.next("error"))["code"] == "not_found"


class StalledClient:
    """A WebSocket client on a blocking socket with a small receive buffer, reading
    only when told to: a client that stopped reading, as the server sees it."""

    def __init__(self, server: RunningServer, namespace: str) -> None:
        url = ws_url(server, namespace)
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # no autotuning
        self.socket.settimeout(RECEIVE_TIMEOUT_SECONDS)
        host, port = server.base_url.removeprefix("http://").split(":")
        self.socket.connect((host, int(port)))
        request = self.protocol.connect()
        request.headers.update(AUTH_HEADERS)
        self.protocol.send_request(request)
        self.flush()
        self.events: list[Any] = []
        while not self.events:
            self.read()
        assert self.protocol.handshake_exc is None
        self.events.clear()

    def flush(self) -> None:
        self.socket.sendall(b"".join(self.protocol.data_to_send()))

    def read(self) -> None:
        self.protocol.receive_data(self.socket.recv(1 << 20))
        self.events.extend(self.protocol.events_received())
        self.flush()

    def send(self, frame: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(frame).encode())
        self.flush()

    def frames(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` frames (reading as needed)."""
        while len(self.events) < count:
            self.read()
        events, self.events = self.events[:count], self.events[count:]
        return [json.loads(event.data) for event in events]


def test_every_confirm_arrives_after_a_client_stopped_reading(
    running_server: RunningServer, api: Api
) -> None:
    # Deliveries larger than the socket buffers pause the server's writes; the
    # confirms that come meanwhile fill the connection's send queue, and the rest
    # wait for room in it (the confirm callback's fallback) instead of being lost.
    create_stream(api, "orders")
    create_subscription(api, "work", "orders")
    big = {"subject": "orders.big", "payload": "x" * 60_000}
    for _ in range(25):
        api.ok("POST", "/publish", 200, json={"messages": [big] * 4})
    client = StalledClient(running_server, api.namespace)
    client.send({"op": "subscribe", "sub": "s1", "subscription": "work", "credit": 100})
    time.sleep(0.5)  # the deliveries fill the socket and pause the server's writes
    count = 600
    for seq in range(count):
        message = {"subject": "orders.small", "payload": str(seq)}
        client.send({"op": "publish", "seq": seq, "messages": [message]})
    time.sleep(0.5)  # the server answers into a socket nobody reads
    confirms, delivered = [], 0
    while len(confirms) < count or delivered < 100:
        [frame] = client.frames(1)
        if frame["op"] == "confirm":
            confirms.append(frame["seq"])
        else:
            assert frame["op"] == "deliver"
            delivered += len(frame["messages"])
    assert sorted(confirms) == list(range(count))
    assert delivered == 100
    assert api.ok("GET", "/streams/orders")["messages"] == 100 + count


async def test_msgpack_frames_round_trip(client: Client, api: Api) -> None:
    create_stream(api, "blobs")
    create_subscription(api, "work", "blobs")
    payload = bytes(range(256))
    publish = {"op": "publish", "seq": 1, "messages": [{"subject": "blobs.x", "payload": payload}]}
    await client.send(publish, binary=True)
    confirm = await client.websocket.recv()
    assert isinstance(confirm, bytes), "the confirm comes in the publish's encoding"
    assert msgspec.msgpack.decode(confirm)["seq"] == 1
    subscribe = {"op": "subscribe", "sub": "s1", "subscription": "work", "credit": 1}
    await client.send(subscribe, binary=True)
    deliver = await client.websocket.recv()
    assert isinstance(deliver, bytes)
    [message] = msgspec.msgpack.decode(deliver)["messages"]
    assert message["payload"] == payload
    assert "encoding" not in message


async def test_binary_payload_in_json_is_base64(client: Client, api: Api) -> None:
    create_stream(api, "blobs")
    create_subscription(api, "work", "blobs")
    message = {"subject": "blobs.x", "payload": "AP8=", "encoding": "base64"}
    await client.send({"op": "publish", "seq": 1, "messages": [message]})
    await client.next("confirm")
    await client.send({"op": "subscribe", "sub": "s1", "subscription": "work", "credit": 1})
    [delivered] = await client.messages("s1", 1)
    assert (delivered["payload"], delivered["encoding"]) == ("AP8=", "base64")


async def test_hello_pins_the_encoding(client: Client) -> None:
    await client.send({"op": "hello", "seq": 1, "encoding": "msgpack"})
    welcome = await client.websocket.recv()
    assert isinstance(welcome, bytes)
    decoded = msgspec.msgpack.decode(welcome)
    assert decoded["op"] == "welcome"
    assert decoded["limits"]["max_credit"] == 10_000
    await client.send({"op": "ping", "seq": 2})  # a JSON frame, answered in msgpack
    assert msgspec.msgpack.decode(await client.websocket.recv()) == {"op": "pong", "seq": 2}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_argument"),
        (b"\xc1\xff", "invalid_argument"),
        ('{"op":"explode","seq":7}', "invalid_argument"),
        ('{"op":"publish","seq":7}', "invalid_argument"),
        ('{"op":"publish","seq":7,"messages":[{"subject":"nowhere.x"}]}', "no_stream_for_subject"),
        ('{"op":"publish","seq":7,"messages":[{"subject":"bad..subject"}]}', "invalid_subject"),
        ('{"op":"subscribe","seq":7,"sub":"s","subscription":"missing"}', "subscription_not_found"),
        ('{"op":"ack","seq":7,"sub":"nope","receipts":["x"]}', "not_found"),
        # Binary publishes and acks are handled in the protocol's call (receive_now).
        (msgspec.msgpack.encode(NOWHERE_PUBLISH), "no_stream_for_subject"),
        (
            msgspec.msgpack.encode({"op": "ack", "seq": 7, "sub": "nope", "receipts": ["x"]}),
            "not_found",
        ),
    ],
)
async def test_bad_frames_get_error_frames(client: Client, frame: str | bytes, code: str) -> None:
    await client.websocket.send(frame)
    error = await client.next("error")
    assert error["code"] == code, error
    assert set(error) <= {"op", "code", "message", "details", "seq", "sub"}
    if b"seq" in (frame if isinstance(frame, bytes) else frame.encode()):
        assert error["seq"] == 7
    await client.send({"op": "ping", "seq": 8})
    assert await client.next("pong") == {"op": "pong", "seq": 8}


async def test_oversize_frame_closes_1009_and_the_server_stays_up(
    running_server: RunningServer, client: Client, api: Api
) -> None:
    await client.websocket.send("x" * (4 * 1024 * 1024 + 1))
    with pytest.raises(ConnectionClosed):
        await client.receive()
    assert client.websocket.close_code == 1009
    async with connect(
        ws_url(running_server, api.namespace), additional_headers=AUTH_HEADERS
    ) as websocket:
        again = Client(websocket)
        await again.send({"op": "ping", "seq": 1})
        assert await again.next("pong") == {"op": "pong", "seq": 1}


async def test_unknown_namespace_is_refused(running_server: RunningServer) -> None:
    async with connect(
        ws_url(running_server, "no-such-namespace"), additional_headers=AUTH_HEADERS
    ) as websocket:
        client = Client(websocket)
        error = await client.receive()
        assert error["code"] == "namespace_not_found"
        with pytest.raises(ConnectionClosed):
            await client.receive()
        assert websocket.close_code == 1008


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server closing WebSockets after one silent second."""
    running = start_server(Path(tmp_path_factory.mktemp("idle")), ws_idle_timeout_seconds=1)
    yield running
    running.stop()


async def test_idle_connection_is_closed(impatient_server: RunningServer) -> None:
    async with connect(
        ws_url(impatient_server, "default"), additional_headers=AUTH_HEADERS
    ) as websocket:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await websocket.recv()
        assert websocket.close_code == 4408
        assert 0.9 <= asyncio.get_running_loop().time() - started < 4


async def test_pings_keep_a_connection_open(impatient_server: RunningServer) -> None:
    async with connect(
        ws_url(impatient_server, "default"), additional_headers=AUTH_HEADERS
    ) as websocket:
        client = Client(websocket)
        for seq in range(8):  # 2.4 s, well past the 1 s idle timeout
            await client.send({"op": "ping", "seq": seq})
            assert await client.next("pong") == {"op": "pong", "seq": seq}
            await asyncio.sleep(0.3)


async def test_frames_keep_their_order_when_the_publish_window_fills(
    client: Client, api: Api
) -> None:
    """More than the publish window (16,384 messages) at once, pings between: small
    publishes are handled in the protocol's call while the reader waits idle, the
    large ones and everything behind a frame the reader holds (the window full, say)
    go through the reader; the offsets follow the frames' order all the same."""
    create_stream(api, "orders")
    frames = 600
    for seq in range(frames):
        count = 1 if seq % 3 == 0 else 100  # the test server's max_batch_messages
        messages = [{"subject": "orders.x", "payload": b"p" * 200}] * count
        await client.send({"op": "publish", "seq": seq, "messages": messages}, binary=True)
        if seq % 25 == 0:
            await client.send({"op": "ping", "seq": 1000 + seq})
    confirmed: dict[int, list[int]] = {}
    pongs: list[int] = []
    while len(confirmed) < frames or len(pongs) < len(range(0, frames, 25)):
        frame = await client.receive()
        if frame["op"] == "pong":
            pongs.append(frame["seq"])
            continue
        assert frame["op"] == "confirm", frame
        confirmed[frame["seq"]] = [result["offset"] for result in frame["results"]]
    offsets = [offset for seq in range(frames) for offset in confirmed[seq]]
    assert offsets == list(range(len(offsets)))
    assert pongs == [1000 + seq for seq in range(0, frames, 25)]


async def test_binary_publishes_keep_a_connection_open(impatient_server: RunningServer) -> None:
    async with connect(
        ws_url(impatient_server, "default"), additional_headers=AUTH_HEADERS
    ) as websocket:
        client = Client(websocket)
        for seq in range(8):  # 2.4 s, well past the 1 s idle timeout
            await client.send({**NOWHERE_PUBLISH, "seq": seq}, binary=True)
            error = await client.next("error")
            assert (error["code"], error["seq"]) == ("no_stream_for_subject", seq)
            await asyncio.sleep(0.3)


async def test_extend_and_term_report_per_receipt(client: Client, api: Api) -> None:
    create_stream(api, "orders")
    create_subscription(api, "work", "orders")
    await client.publish(1, "orders.created")
    await client.send({"op": "subscribe", "sub": "s1", "subscription": "work", "credit": 1})
    [message] = await client.messages("s1", 1)
    receipts = [message["receipt"], "not-a-receipt"]
    await client.send(
        {"op": "extend", "seq": 2, "sub": "s1", "receipts": receipts, "extend_ms": 60_000}
    )
    extended, invalid = (await client.next("result"))["results"]
    assert extended["ok"] is True
    assert extended["deadline_ms"] > message["lease_deadline_ms"]
    assert (invalid["ok"], invalid["code"]) == (False, "invalid_receipt")
    await client.send({"op": "term", "seq": 3, "sub": "s1", "receipts": receipts[:1]})
    assert (await client.next("result"))["results"] == [{"receipt": receipts[0], "ok": True}]
    assert api.ok("GET", "/subscriptions/work")["dead_lettered"] == 1


async def test_deleting_the_subscription_ends_the_sub(client: Client, api: Api) -> None:
    create_stream(api, "orders")
    create_subscription(api, "work", "orders")
    await client.send(
        {"op": "subscribe", "seq": 1, "sub": "s1", "subscription": "work", "credit": 5}
    )
    await client.next("result")
    api.ok("DELETE", "/subscriptions/work", 204)
    error = await client.next("error")
    assert (error["code"], error["sub"]) == ("subscription_not_found", "s1")
    await client.send({"op": "credit", "sub": "s1", "credit": 1, "seq": 2})
    assert (await client.next("error"))["code"] == "not_found"
