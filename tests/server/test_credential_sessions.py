"""Long-lived connections end with their credential: a WebSocket, an SSE stream
or a waiting long-poll of an API key ends when the key is revoked, gets new
grants or expires (JWTs: ``test_auth_jwt.py``), while everyone else's stay open."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.server.conftest import AUTH_HEADERS, Api, RunningServer
from tests.server.test_auth_adapters import ws_url

CLOSE_CREDENTIAL_ENDED = 4401
WAIT_SECONDS = 5


def new_key(api: Api, **extra: object) -> tuple[str, dict[str, str]]:
    """A fresh key of the namespace that may publish, consume and read: its id and header."""
    grants = [{"role": "publish"}, {"role": "consume"}, {"role": "read"}]
    body = {"name": "worker", "grants": grants, **extra}
    created = api.ok("POST", "/keys", 201, json=body)
    return created["id"], {"Authorization": f"Bearer {created['token']}"}


async def closed_by_server(websocket: ClientConnection) -> tuple[int | None, str | None]:
    """Wait (bounded) until the server closes ``websocket``: its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(WAIT_SECONDS):
            await websocket.recv()
    received = closed.value.rcvd
    return (received.code, received.reason) if received else (None, None)


def open_sessions(server: RunningServer, key_id: str) -> int:
    """How many connections the server holds open for the key."""
    return server.server.app.state.security.sessions.count(f"key:{key_id}")


async def still_open(websocket: ClientConnection) -> bool:
    """Whether ``websocket`` still answers a ping."""
    async with asyncio.timeout(WAIT_SECONDS):
        await (await websocket.ping())
    return True


async def test_revoking_a_key_closes_its_websockets_and_no_one_elses(
    running_server: RunningServer, api: Api
) -> None:
    key_id, headers = new_key(api)
    url = ws_url(running_server, api.namespace)
    async with (
        connect(url, additional_headers=headers) as first,
        connect(url, additional_headers=headers) as second,
        connect(url, additional_headers=AUTH_HEADERS) as admin,
    ):
        assert await still_open(first)
        assert open_sessions(running_server, key_id) == 2
        api.ok("DELETE", f"/keys/{key_id}")
        for websocket in (first, second):
            assert await closed_by_server(websocket) == (
                CLOSE_CREDENTIAL_ENDED,
                "the API key was revoked",
            )
        assert await still_open(admin)
    assert open_sessions(running_server, key_id) == 0


async def test_a_closed_connection_leaves_no_session_behind(
    running_server: RunningServer, api: Api
) -> None:
    key_id, headers = new_key(api)
    async with connect(ws_url(running_server, api.namespace), additional_headers=headers) as ws:
        assert await still_open(ws)
        assert open_sessions(running_server, key_id) == 1
    async with asyncio.timeout(WAIT_SECONDS):
        while open_sessions(running_server, key_id):
            await asyncio.sleep(0.01)


async def test_new_grants_close_a_keys_websocket_and_it_reconnects_with_them(
    running_server: RunningServer, api: Api
) -> None:
    key_id, headers = new_key(api)
    url = ws_url(running_server, api.namespace)
    async with connect(url, additional_headers=headers) as websocket:
        assert await still_open(websocket)
        api.ok("PUT", f"/keys/{key_id}/grants", json={"grants": [{"role": "read"}]})
        assert await closed_by_server(websocket) == (
            CLOSE_CREDENTIAL_ENDED,
            "the API key's grants changed",
        )
    async with connect(url, additional_headers=headers) as again:  # the key still holds
        assert await still_open(again)


async def test_a_websocket_closes_when_its_key_expires(
    running_server: RunningServer, api: Api
) -> None:
    _, headers = new_key(api, expires_in_seconds=2)
    async with connect(ws_url(running_server, api.namespace), additional_headers=headers) as ws:
        assert await closed_by_server(ws) == (CLOSE_CREDENTIAL_ENDED, "the credential expired")


async def test_revoking_a_key_ends_its_sse_stream_with_an_error_event(
    running_server: RunningServer, api: Api
) -> None:
    api.ok("POST", "/streams", 201, json={"name": "tail"})
    key_id, headers = new_key(api)
    url = f"{running_server.base_url}{api.prefix}/streams/tail/events"
    async with (
        httpx.AsyncClient(timeout=WAIT_SECONDS) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert (await anext(lines)).startswith("retry:")
        api.ok("DELETE", f"/keys/{key_id}")
        rest = [line async for line in lines]  # the stream ends
    assert "event: error" in rest
    data = json.loads(next(line for line in rest if line.startswith("data: "))[6:])
    assert data["code"] == "unauthenticated"
    assert data["message"] == "the API key was revoked"


async def answers_around_a_change(
    server: RunningServer, api: Api, change: Callable[[str], object]
) -> tuple[httpx.Response, httpx.Response]:
    """Start a long-poll with a fresh key and ``change(key_id)`` while it waits: the
    long-poll's answer, and the answer to the key's next poll."""
    queue = f"idle-{time.monotonic_ns()}"
    api.ok("POST", "/queues", 201, json={"name": queue})
    key_id, headers = new_key(api)
    url = f"{server.base_url}{api.prefix}/queues/{queue}/fetch"
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        waiting = asyncio.create_task(client.post(url, json={"wait_ms": 10_000}))
        async with asyncio.timeout(WAIT_SECONDS):
            while not open_sessions(server, key_id):  # the long-poll is waiting
                await asyncio.sleep(0.01)
        change(key_id)
        async with asyncio.timeout(WAIT_SECONDS):
            response = await waiting
        next_poll = await client.post(url, json={"wait_ms": 0})
    assert open_sessions(server, key_id) == 0
    return response, next_poll


async def test_revoking_a_key_ends_its_waiting_long_poll(
    running_server: RunningServer, api: Api
) -> None:
    response, next_poll = await answers_around_a_change(
        running_server, api, lambda key_id: api.ok("DELETE", f"/keys/{key_id}")
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response.json()["error"]["message"] == "the API key was revoked"
    assert next_poll.status_code == 401


async def test_new_grants_release_a_waiting_long_poll_empty(
    running_server: RunningServer, api: Api
) -> None:
    grants = {"grants": [{"role": "consume"}, {"role": "read"}]}
    response, next_poll = await answers_around_a_change(
        running_server, api, lambda key_id: api.ok("PUT", f"/keys/{key_id}/grants", json=grants)
    )
    assert response.status_code == 200
    assert response.json() == {"messages": []}
    # the next poll runs with the new grants: the key still works
    assert next_poll.status_code == 200
