"""The SSE adapter over a real socket: a real server and a streaming ``httpx`` client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import AUTH_HEADERS, Api, RunningServer, expect_error, start_server

EVENT_TIMEOUT_SECONDS = 10


@dataclass
class Event:
    """One server-sent event."""

    id: str | None = None
    event: str = "message"
    data: list[str] = field(default_factory=list)

    def json(self) -> Any:
        """The event's data as JSON."""
        return json.loads("\n".join(self.data))


class EventReader:
    """Parses an ``text/event-stream`` response into events (comments are skipped).

    A task pumps lines into a queue, so a timed-out wait never cancels the
    response's line iterator (which would end the stream)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.pump = asyncio.create_task(self.pump_lines())

    async def pump_lines(self) -> None:
        """Queue every line of the response, then ``None``."""
        try:
            async for line in self.response.aiter_lines():
                await self.lines.put(line)
        finally:
            await self.lines.put(None)

    async def next(self, timeout_seconds: float = EVENT_TIMEOUT_SECONDS) -> Event:
        """The next event."""
        event = Event()
        async with asyncio.timeout(timeout_seconds):
            while (line := await self.lines.get()) is not None:
                if line == "" and (event.data or event.id is not None):
                    return event
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "id":
                    event.id = value
                elif name == "event":
                    event.event = value
                elif name == "data":
                    event.data.append(value)
        raise AssertionError("the event stream ended")

    async def take(self, count: int) -> list[Event]:
        """The next ``count`` events."""
        return [await self.next() for _ in range(count)]

    async def none_within(self, seconds: float) -> None:
        """Assert no event arrives within ``seconds``."""
        with pytest.raises(TimeoutError):
            await self.next(seconds)


@asynccontextmanager
async def events(
    server: RunningServer, namespace: str, stream: str, **options: Any
) -> AsyncIterator[EventReader]:
    """An open event stream; ``headers`` and query parameters pass through."""
    headers = options.pop("headers", {})
    url = f"{server.base_url}/v1/namespaces/{namespace}/streams/{stream}/events"
    async with (
        httpx.AsyncClient(timeout=30, headers=AUTH_HEADERS) as client,
        client.stream("GET", url, params=options, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = EventReader(response)
        try:
            yield reader
        finally:
            reader.pump.cancel()


def create_stream(api: Api, name: str, partitions: int = 1) -> None:
    """A stream capturing ``{name}.>``."""
    body = {"name": name, "subjects": [f"{name}.>"], "partitions": partitions}
    api.ok("POST", "/streams", 201, json=body)


def publish(api: Api, subjects: list[str], first: int = 0) -> None:
    """Publish one message per subject with payloads ``m{n}`` counting from ``first``."""
    messages = [
        {"subject": subject, "key": str(first + index), "payload": f"m{first + index}"}
        for index, subject in enumerate(subjects)
    ]
    api.ok("POST", "/publish", json={"messages": messages})


def positions(events: list[Event]) -> list[tuple[int, int]]:
    """The (partition, offset) of each event."""
    return [(event.json()["partition"], event.json()["offset"]) for event in events]


async def test_events_carry_the_messages(running_server: RunningServer, api: Api) -> None:
    create_stream(api, "orders")
    publish(api, ["orders.a", "orders.b"])
    async with events(running_server, api.namespace, "orders") as reader:
        first, second = await reader.take(2)
    assert (first.event, first.id) == ("message", "0:1")
    assert second.id == "0:2"
    data = first.json()
    assert {key: data[key] for key in ("stream", "subject", "payload", "encoding", "offset")} == {
        "stream": "orders",
        "subject": "orders.a",
        "payload": "m0",
        "encoding": "utf-8",
        "offset": 0,
    }


async def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(
    running_server: RunningServer, api: Api
) -> None:
    create_stream(api, "orders", partitions=3)
    publish(api, [f"orders.{index % 5}" for index in range(30)])
    async with events(running_server, api.namespace, "orders") as reader:
        before = await reader.take(10)
    publish(api, [f"orders.{index % 5}" for index in range(20)], first=30)
    headers = {"Last-Event-ID": before[-1].id}
    async with events(running_server, api.namespace, "orders", headers=headers) as reader:
        after = await reader.take(40)
        await reader.none_within(1.0)
    seen = positions(before) + positions(after)
    assert len(set(seen)) == len(seen) == 50, "a duplicate"
    stream = api.ok("GET", "/streams/orders")
    stored = {
        (p["partition"], offset) for p in stream["partitions"] for offset in range(p["messages"])
    }
    assert set(seen) == stored, "a gap"
    for partition in range(3):
        offsets = [offset for p, offset in seen if p == partition]
        assert offsets == sorted(offsets), "out of order within a partition"


async def test_resume_with_the_query_parameter(running_server: RunningServer, api: Api) -> None:
    create_stream(api, "orders")
    publish(api, ["orders.a"] * 5)
    async with events(running_server, api.namespace, "orders", last_event_id="0:3") as reader:
        assert positions(await reader.take(2)) == [(0, 3), (0, 4)]
        await reader.none_within(0.5)


async def test_tail_waits_for_new_messages(running_server: RunningServer, api: Api) -> None:
    create_stream(api, "orders")
    publish(api, ["orders.old"])
    async with events(running_server, api.namespace, "orders", **{"from": "latest"}) as reader:
        await reader.none_within(0.5)
        publish(api, ["orders.new"])
        event = await reader.next()
    assert event.json()["subject"] == "orders.new"


async def test_subject_filter_and_partition(running_server: RunningServer, api: Api) -> None:
    create_stream(api, "orders", partitions=2)
    publish(api, ["orders.eu.created", "orders.us.created", "orders.eu.paid"] * 4)
    options = {"subject": "orders.eu.*"}
    async with events(running_server, api.namespace, "orders", **options) as reader:
        matched = await reader.take(8)
        await reader.none_within(0.5)
    assert {event.json()["subject"] for event in matched} == {"orders.eu.created", "orders.eu.paid"}
    async with events(running_server, api.namespace, "orders", partition=1) as reader:
        event = await reader.next()
    assert event.json()["partition"] == 1
    assert event.id is not None
    assert event.id.startswith("1:")


async def test_start_from_a_time(running_server: RunningServer, api: Api) -> None:
    create_stream(api, "orders")
    publish(api, ["orders.old"])
    await asyncio.sleep(0.05)
    since_ms = api.ok("GET", "/streams/orders")["partitions"][0]["last_timestamp_ms"] + 1
    await asyncio.sleep(0.05)
    publish(api, ["orders.new"])
    async with events(running_server, api.namespace, "orders", **{"from": str(since_ms)}) as reader:
        assert (await reader.next()).json()["subject"] == "orders.new"


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/streams/missing/events", {}, 404, "stream_not_found"),
        ("/streams/orders/events", {"partition": 7}, 404, "partition_not_found"),
        ("/streams/orders/events", {"last_event_id": "zero"}, 400, "invalid_argument"),
        ("/streams/orders/events", {"from": "yesterday"}, 400, "invalid_argument"),
        ("/streams/orders/events", {"subject": "orders..x"}, 400, "invalid_subject"),
    ],
)
def test_bad_requests_are_clear_errors(
    api: Api, path: str, params: dict[str, Any], status: int, code: str
) -> None:
    create_stream(api, "orders")
    expect_error(api.get(path, params=params), status, code)


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server allowing one event stream at a time."""
    running = start_server(Path(tmp_path_factory.mktemp("sse")), sse_max_clients=1)
    yield running
    running.stop()


async def test_event_streams_are_limited(small_server: RunningServer) -> None:
    url = "/v1/namespaces/default/streams/limited/events"
    async with httpx.AsyncClient(base_url=small_server.base_url, headers=AUTH_HEADERS) as http:
        await http.post("/v1/namespaces/default/streams", json={"name": "limited"})
        async with events(small_server, "default", "limited"):
            expect_error(await http.get(url), 503, "too_many_connections")
        async with asyncio.timeout(5):
            while True:  # the server notices the first stream ended
                async with http.stream("GET", url) as response:
                    if response.status_code == 200:
                        break
                await asyncio.sleep(0.05)
