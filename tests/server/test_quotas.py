"""Namespace quotas on a real server: a flooding tenant gets 429s, its neighbour none.

Tenant A publishes at ten times its message-rate quota while tenant B, at the
same time, publishes within its own: every refusal goes to A, each with a
``Retry-After`` header, and B is never refused. The count quotas (streams,
stored bytes, WebSocket and SSE connections) answer 429 ``quota_exceeded``
with ``Retry-After`` too, and an admin can read and change a quota.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.server.conftest import AUTH_HEADERS, RunningServer, expect, expect_error, start_server

RATE_PER_SECOND = 10
FLOOD_FACTOR = 10
DURATION_SECONDS = 3.0


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server whose namespaces default to a publish rate of 10 messages/s."""
    running = start_server(
        Path(tmp_path_factory.mktemp("quotas")),
        fsync="never",
        quota_publish_messages_per_second=RATE_PER_SECOND,
    )
    yield running
    assert running.unexpected_errors == 0
    running.stop()


def tenant(server: RunningServer, name: str) -> str:
    """A namespace with a stream capturing ``events.>``; returns its publish URL."""
    with httpx.Client(base_url=server.base_url, headers=AUTH_HEADERS) as admin:
        expect(admin.post("/v1/namespaces", json={"name": name}), 201)
        stream = {"name": "events", "subjects": ["events.>"]}
        expect(admin.post(f"/v1/namespaces/{name}/streams", json=stream), 201)
    return f"{server.base_url}/v1/namespaces/{name}/publish"


def set_quota(server: RunningServer, namespace: str, changes: dict[str, int]) -> None:
    """Change a namespace's quota as the server admin."""
    with httpx.Client(headers=AUTH_HEADERS, base_url=server.base_url) as admin:
        expect(admin.put(f"/v1/namespaces/{namespace}/quota", json=changes), 200)


async def publish_at(url: str, rate_per_second: float, duration_seconds: float) -> Counter[str]:
    """Publish one message per request at a steady rate; count the outcomes."""
    outcomes: Counter[str] = Counter()
    interval_seconds = 1 / rate_per_second
    async with httpx.AsyncClient(headers=AUTH_HEADERS, timeout=30) as client:
        started = time.monotonic()
        sent = 0
        pending = []
        while time.monotonic() - started < duration_seconds:
            body = {"subject": "events.tick", "payload": "x"}
            pending.append(asyncio.create_task(client.post(url, json=body)))
            sent += 1
            await asyncio.sleep(max(0.0, started + sent * interval_seconds - time.monotonic()))
        for response in await asyncio.gather(*pending):
            outcomes[str(response.status_code)] += 1
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
                assert response.json()["error"]["code"] == "rate_limited"
    return outcomes


async def test_a_flooding_tenant_is_limited_and_its_neighbour_is_not(
    quota_server: RunningServer,
) -> None:
    flooder = tenant(quota_server, "tenant-a")
    neighbour = tenant(quota_server, "tenant-b")
    flood, calm = await asyncio.gather(
        publish_at(flooder, RATE_PER_SECOND * FLOOD_FACTOR, DURATION_SECONDS),
        publish_at(neighbour, RATE_PER_SECOND * 0.5, DURATION_SECONDS),
    )
    print(f"\nquota {RATE_PER_SECOND}/s; tenant A at 10x: {dict(flood)}; tenant B: {dict(calm)}")
    assert flood["429"] > 0
    assert sum(flood.values()) >= RATE_PER_SECOND * FLOOD_FACTOR * DURATION_SECONDS * 0.8
    allowed_messages = RATE_PER_SECOND * (DURATION_SECONDS + 1) * 1.2  # rate + 1 s burst
    assert flood["200"] <= allowed_messages
    assert set(calm) == {"200"}


def test_count_quotas_answer_429_with_retry_after(quota_server: RunningServer) -> None:
    tenant(quota_server, "tenant-c")
    with httpx.Client(base_url=quota_server.base_url, headers=AUTH_HEADERS) as admin:
        quota = admin.put("/v1/namespaces/tenant-c/quota", json={"max_streams": 2})
        assert expect(quota, 200)["max_streams"] == 2
        assert expect(admin.get("/v1/namespaces/tenant-c/quota"), 200)["max_streams"] == 2
        root = "/v1/namespaces/tenant-c"
        expect(admin.post(root + "/streams", json={"name": "second"}), 201)
        refused = admin.post(root + "/streams", json={"name": "third"})
        error = expect_error(refused, 429, "quota_exceeded")
        assert error["details"]["quota"] == "max_streams"
        assert int(refused.headers["retry-after"]) >= 1
        expect_error(admin.post(root + "/queues", json={"name": "q"}), 429, "quota_exceeded")


def test_stored_bytes_quota(quota_server: RunningServer) -> None:
    url = tenant(quota_server, "tenant-d")
    with httpx.Client(headers=AUTH_HEADERS, base_url=quota_server.base_url) as admin:
        admin.put("/v1/namespaces/tenant-d/quota", json={"max_stored_bytes": 100})
        expect(admin.post(url, json={"subject": "events.a", "payload": "x" * 200}), 200)
        time.sleep(1.1)  # stored bytes are recounted at most once a second
        refused = admin.post(url, json={"subject": "events.a", "payload": "x"})
    assert expect_error(refused, 429, "quota_exceeded")["details"]["quota"] == "max_stored_bytes"


async def test_connection_quota(quota_server: RunningServer) -> None:
    tenant(quota_server, "tenant-e")
    set_quota(quota_server, "tenant-e", {"max_connections": 1})
    ws_url = quota_server.base_url.replace("http", "ws") + "/v1/namespaces/tenant-e/ws"
    events_url = f"{quota_server.base_url}/v1/namespaces/tenant-e/streams/events/events"
    async with connect(ws_url, additional_headers=AUTH_HEADERS) as first:
        await first.send(json.dumps({"op": "ping"}))
        await first.recv()
        async with connect(ws_url, additional_headers=AUTH_HEADERS) as second:
            frame = json.loads(await second.recv())
            assert frame["code"] == "quota_exceeded"
        async with httpx.AsyncClient(headers=AUTH_HEADERS) as client:
            refused = await client.get(events_url)
            expect_error(refused, 429, "quota_exceeded")
    async with asyncio.timeout(5):
        while not await answers_ping(ws_url):  # the slot comes back once the first closed
            await asyncio.sleep(0.05)


async def answers_ping(url: str) -> bool:
    """Whether a new connection is served (not refused by the quota)."""
    try:
        async with connect(url, additional_headers=AUTH_HEADERS) as websocket:
            await websocket.send(json.dumps({"op": "ping"}))
            return json.loads(await websocket.recv())["op"] == "pong"
    except ConnectionClosed:
        return False
