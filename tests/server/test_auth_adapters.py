"""Authentication and abuse limits on the streaming adapters and the HTTP server.

WebSocket: credentials and Origin checked at the handshake, another tenant's
namespace refused exactly like a nonexistent one, publish and subscribe
authorized per frame. SSE: authenticated. HTTP: a slow request head is cut
off (slowloris), a slow body gets 408, an oversize head gets 431, and the
probes stay public.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.server.conftest import AUTH_HEADERS, Api, RunningServer, expect, start_server


def ws_url(server: RunningServer, namespace: str) -> str:
    """The WebSocket URL of a namespace."""
    return server.base_url.replace("http://", "ws://") + f"/v1/namespaces/{namespace}/ws"


def namespace_key(
    http: httpx.Client, namespace: str, role: str, resources: list[str]
) -> dict[str, str]:
    """The Authorization header of a fresh key with one grant in ``namespace``."""
    body = {"name": role, "grants": [{"role": role, "resources": resources}]}
    token = expect(http.post(f"/v1/namespaces/{namespace}/keys", json=body), 201)["token"]
    return {"Authorization": f"Bearer {token}"}


def create_namespace(http: httpx.Client, namespace: str) -> None:
    """A new namespace."""
    expect(http.post("/v1/namespaces", json={"name": namespace}), 201)


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with a short handshake timeout, a small head limit and one allowed origin."""
    running = start_server(
        Path(tmp_path_factory.mktemp("guarded")),
        handshake_timeout_seconds=1,
        body_timeout_seconds=1,
        max_header_bytes=4096,
        allowed_origins=["https://app.example"],
    )
    yield running
    running.stop()


async def test_websocket_handshake_needs_credentials(running_server: RunningServer) -> None:
    for headers in ({}, {"Authorization": "Bearer rmq_0000000000000000_" + "B" * 43}):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(running_server, "default"), additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401
        body = json.loads(refused.value.response.body)
        assert body["error"]["code"] == "unauthenticated"


async def test_websocket_other_tenant_is_like_nonexistent(
    running_server: RunningServer, api: Api, http: httpx.Client
) -> None:
    create_namespace(http, f"{api.namespace}-b")
    headers = namespace_key(http, api.namespace, "manage", ["*"])
    answers = []
    for namespace in (f"{api.namespace}-b", "does-not-exist"):
        async with connect(ws_url(running_server, namespace), additional_headers=headers) as ws:
            frame = json.loads(await ws.recv())
            await ws.wait_closed()
            answers.append((frame["code"], frame["message"].replace(namespace, "N"), ws.close_code))
    assert answers[0] == answers[1] == ("namespace_not_found", "no namespace 'N'", 1008)


async def test_websocket_authorizes_each_publish_and_subscribe(
    running_server: RunningServer, api: Api, http: httpx.Client
) -> None:
    api.ok("POST", "/streams", 201, json={"name": "orders", "subjects": ["orders.>"]})
    api.ok("POST", "/subscriptions", 201, json={"name": "billing", "stream": "orders"})
    headers = namespace_key(http, api.namespace, "publish", ["subject:orders.eu.>"])
    async with connect(ws_url(running_server, api.namespace), additional_headers=headers) as ws:
        allowed = [{"subject": "orders.eu.created", "payload": "1"}]
        await ws.send(json.dumps({"op": "publish", "seq": 1, "messages": allowed}))
        assert json.loads(await ws.recv())["op"] == "confirm"
        denied = [{"subject": "orders.us.created", "payload": "1"}]
        await ws.send(json.dumps({"op": "publish", "seq": 2, "messages": denied}))
        frame = json.loads(await ws.recv())
        assert (frame["op"], frame["code"], frame["seq"]) == ("error", "permission_denied", 2)
        subscribe = {"op": "subscribe", "seq": 3, "sub": "s", "subscription": "billing"}
        await ws.send(json.dumps(subscribe))
        frame = json.loads(await ws.recv())
        assert (frame["op"], frame["code"]) == ("error", "permission_denied")
        # msgpack publishes are handled in the protocol's call; allowed targets are
        # remembered per connection, denied ones never are.
        for seq, messages, stream in [
            (4, allowed, None),
            (5, allowed, None),
            (6, denied, None),
            (7, allowed, "orders"),  # stream:orders was not granted
            (8, denied, None),
        ]:
            publish = {"op": "publish", "seq": seq, "messages": messages, "stream": stream}
            await ws.send(msgspec.msgpack.encode(publish))
            frame = msgspec.msgpack.decode(await ws.recv())
            expected = ("confirm", None) if seq < 6 else ("error", "permission_denied")
            assert (frame["op"], frame.get("code"), frame["seq"]) == (*expected, seq)


def test_resource_patterns_limit_http_publishes(api: Api, http: httpx.Client) -> None:
    api.ok("POST", "/streams", 201, json={"name": "orders", "subjects": ["orders.>"]})
    headers = namespace_key(http, api.namespace, "publish", ["subject:orders.eu.>"])
    allowed = {"subject": "orders.eu.created", "payload": "1"}
    expect(api.post("/publish", json=allowed, headers=headers), 200)
    denied = {"messages": [allowed, {"subject": "orders.us.created", "payload": "1"}]}
    response = api.post("/publish", json=denied, headers=headers)
    assert response.status_code == 403
    response = api.post("/streams/orders/messages", json=allowed, headers=headers)
    assert response.status_code == 403  # stream:orders was not granted


async def test_websocket_origin_is_checked(guarded_server: RunningServer) -> None:
    url = ws_url(guarded_server, "default")
    for origin, allowed in (("https://app.example", True), ("https://evil.example", False)):
        headers = {**AUTH_HEADERS, "Origin": origin}
        if allowed:
            async with connect(url, additional_headers=headers) as websocket:
                await websocket.send(json.dumps({"op": "ping"}))
                assert json.loads(await websocket.recv())["op"] == "pong"
        else:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403


async def test_sse_needs_credentials(running_server: RunningServer, api: Api) -> None:
    api.ok("POST", "/streams", 201, json={"name": "feed"})
    url = f"{running_server.base_url}{api.prefix}/streams/feed/events"
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_probes_and_the_openapi_document_are_public(running_server: RunningServer) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        expect(httpx.get(running_server.base_url + path), 200)
    response = httpx.get(running_server.base_url + "/metrics")
    assert response.status_code == 401
    document = httpx.get(running_server.base_url + "/openapi.json").json()
    assert "bearer" in document["components"]["securitySchemes"]


def raw_socket(server: RunningServer) -> socket.socket:
    """A plain TCP connection to the server."""
    address = urlsplit(server.base_url)
    assert address.hostname is not None and address.port is not None
    return socket.create_connection((address.hostname, address.port), timeout=10)


def test_a_slow_request_head_is_cut_off(guarded_server: RunningServer) -> None:
    with raw_socket(guarded_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server, no answer
        assert time.monotonic() - started < 5
    with raw_socket(guarded_server) as sock:  # a silent connection too
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert time.monotonic() - started < 5


def test_an_oversize_request_head_is_431(guarded_server: RunningServer) -> None:
    with raw_socket(guarded_server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192 + b"\r\n\r\n")
        answer = sock.recv(1024)
    assert answer.startswith(b"HTTP/1.1 431")
    expect(httpx.get(guarded_server.base_url + "/healthz"), 200)


def post_head(path: str, declared_bytes: int) -> bytes:
    """An admin's JSON ``POST`` head for ``path`` under the default namespace."""
    token = AUTH_HEADERS["Authorization"].encode()
    return (
        b"POST /v1/namespaces/default/" + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: " + token + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % declared_bytes
    )


def slow_post(body: bytes, declared_bytes: int) -> bytes:
    """A request creating a stream: its head declaring ``declared_bytes``, then ``body``."""
    return post_head("streams", declared_bytes) + body


def long_poll(server: RunningServer, wait_ms: int) -> tuple[bytes, bytes]:
    """The head and body of a fetch from a new, empty queue, waiting ``wait_ms``."""
    queue = f"idle-{time.monotonic_ns()}"
    with httpx.Client(base_url=server.base_url, headers=AUTH_HEADERS) as admin:
        expect(admin.post("/v1/namespaces/default/queues", json={"name": queue}), 201)
    body = b'{"wait_ms": %d}' % wait_ms
    return post_head(f"queues/{queue}/fetch", len(body)), body


def two_statuses(sock: socket.socket) -> list[bytes]:
    """The status codes of the next two answers on ``sock`` (fewer if it closes)."""
    answers = b""
    while answers.count(b"HTTP/1.1 ") < 2 and (chunk := sock.recv(4096)):
        answers += chunk
    return re.findall(rb"HTTP/1\.1 (\d{3})", answers)


def test_a_slow_request_body_is_408_and_cut_off(guarded_server: RunningServer) -> None:
    with raw_socket(guarded_server) as sock:
        sock.sendall(slow_post(b'{"na', 40))  # the head, then a trickle that stops
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):  # until the server closes the connection
            answer += chunk
        assert time.monotonic() - started < 5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout"
    assert error["details"]["limit"] == "body_timeout_seconds"


def test_a_body_that_arrived_leaves_no_deadline_on_its_connection(
    guarded_server: RunningServer,
) -> None:
    body = json.dumps({"name": f"paced-{time.monotonic_ns()}"}).encode()
    with raw_socket(guarded_server) as sock:
        sock.sendall(slow_post(body, len(body)))
        assert sock.recv(4096).startswith(b"HTTP/1.1 201")
        time.sleep(1.5)  # past the body timeout, within the keep-alive timeout
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")


def test_a_body_waiting_behind_a_pipelined_request_is_not_timed_out(
    guarded_server: RunningServer,
) -> None:
    poll_head, poll_body = long_poll(guarded_server, 2_500)
    body = json.dumps({"name": f"behind-{time.monotonic_ns()}"}).encode()
    with raw_socket(guarded_server) as sock:
        # The second request's head comes at once, its body later than the 1 s body
        # timeout, but while the server still answers the first and reads nothing.
        sock.sendall(poll_head + poll_body + slow_post(body[:3], len(body)))
        time.sleep(1.5)
        sock.sendall(body[3:])
        assert two_statuses(sock) == [b"200", b"201"]


def test_a_pipelined_request_whose_body_comes_late_is_not_cut_off_as_a_head(
    guarded_server: RunningServer,
) -> None:
    first_head, first_body = long_poll(guarded_server, 1_200)
    second_head, second_body = long_poll(guarded_server, 2_000)
    with raw_socket(guarded_server) as sock:
        # The second request's body comes after the first was answered; the second then
        # runs longer than the 1 s head timeout, which must not apply to it.
        sock.sendall(first_head + first_body + second_head)
        time.sleep(1.4)
        sock.sendall(second_body)
        assert two_statuses(sock) == [b"200", b"200"]


async def test_a_websocket_outlives_the_http_deadlines(guarded_server: RunningServer) -> None:
    url = ws_url(guarded_server, "default")
    async with connect(url, additional_headers=AUTH_HEADERS) as websocket:
        await asyncio.sleep(1.5)  # past the head and body timeouts (1 s each)
        async with asyncio.timeout(5):
            await (await websocket.ping())


async def test_keep_alive_requests_still_work(guarded_server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=guarded_server.base_url, headers=AUTH_HEADERS) as client:
        for _ in range(3):
            expect(await client.get("/v1/namespaces"), 200)
            await asyncio.sleep(0.6)  # pauses shorter than the keep-alive timeout
        expect(await client.get("/v1/namespaces"), 200)


def test_a_consumer_cannot_aim_dead_letters_at_a_stream_it_may_not_manage(
    api: Api, http: httpx.Client
) -> None:
    """Dead letters are written into their stream without the publish checks, so a
    ``consume`` grant alone must not name one when subscribing to a topic."""
    api.ok("POST", "/topics", 201, json={"name": "alerts"})
    api.ok("POST", "/streams", 201, json={"name": "payments", "subjects": ["payments"]})
    headers = namespace_key(http, api.namespace, "consume", ["*"])
    aimed = {"name": "sneaky", "dead_letter_stream": "payments", "max_deliveries": 1}
    response = api.post("/topics/alerts/subscriptions", json=aimed, headers=headers)
    assert response.status_code == 403
    plain = {"name": "honest"}
    expect(api.post("/topics/alerts/subscriptions", json=plain, headers=headers), 201)


async def test_browsers_may_pass_the_token_in_the_url_of_sse_and_websocket_only(
    running_server: RunningServer, api: Api
) -> None:
    """EventSource and the browser WebSocket cannot set headers; only those two
    endpoints take ``?access_token=``, and a wrong one is still refused."""
    api.ok("POST", "/streams", 201, json={"name": "browser-feed", "subjects": ["browser"]})
    token = AUTH_HEADERS["Authorization"].removeprefix("Bearer ")
    events = f"{running_server.base_url}{api.prefix}/streams/browser-feed/events"
    async with httpx.AsyncClient() as client:
        async with client.stream("GET", events, params={"access_token": token}) as response:
            assert response.status_code == 200
        refused = await client.get(events, params={"access_token": "rmq_wrong"})
        assert refused.status_code == 401
        ordinary = f"{running_server.base_url}{api.prefix}/streams"
        assert (await client.get(ordinary, params={"access_token": token})).status_code == 401
    async with connect(f"{ws_url(running_server, api.namespace)}?access_token={token}") as socket_:
        await socket_.send(json.dumps({"op": "ping", "seq": 1}))
        assert json.loads(await socket_.recv())["op"] == "pong"


def test_the_access_log_never_shows_a_url_token() -> None:
    import logging

    from relaymq.logging import RedactQueryTokens

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/x/events?from=0&access_token=rmq_secret&a=1", "1.1", 200),
        None,
    )
    RedactQueryTokens().filter(record)
    assert "rmq_secret" not in record.getMessage()
    assert "access_token=***&a=1" in record.getMessage()
