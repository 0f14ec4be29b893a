"""A slow consumer costs the server nothing: flow control by credit, measured.

``relaymq serve`` runs as a subprocess so its memory is measured alone (psutil
samples its RSS every 50 ms). Two runs publish 100,000 messages of 256 bytes
over a WebSocket while a normal consumer (credit 1,000, acking every batch)
drains its own subscription:

1. the baseline: no other consumer;
2. the loaded run: on another subscription of the same stream, a consumer with
   credit 10 that never acks.

Claims checked:

* the slow consumer receives exactly 10 messages (its credit), no more;
* the server's RSS grows by less than :data:`MAX_RSS_GROWTH_BYTES` (48 MiB)
  during the loaded run. Holding the 100,000 messages the slow consumer is
  owed would exceed it: as ``Message`` objects alone they take 52 MiB
  (measured with this payload), and as encoded frames another 44 MiB. What
  the broker may legitimately hold is its bounded read-ahead window per
  subscription; we measured about 11 MiB of growth;
* the normal consumer keeps its speed: the loaded run takes at most
  :data:`SLOWDOWN_FACTOR` times the baseline (plus :data:`SLOWDOWN_SLACK_SECONDS`)
  -- generous, because on a 2-core CI box the test client and the server share
  the CPUs, and the loaded run also keeps a second subscription's cursor.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.server.conftest import ADMIN_TOKEN, AUTH_HEADERS

pytestmark = pytest.mark.slow

MESSAGES = 100_000
PAYLOAD_BYTES = 256
MESSAGES_PER_FRAME = 100
FAST_CREDIT = 1_000
SLOW_CREDIT = 10
MAX_RSS_GROWTH_BYTES = 48 * 1024 * 1024
SLOWDOWN_FACTOR = 2.5
SLOWDOWN_SLACK_SECONDS = 3.0
RUN_TIMEOUT_SECONDS = 25
START_TIMEOUT_SECONDS = 20
SAMPLE_INTERVAL_SECONDS = 0.05
MEBIBYTE = 1024 * 1024


@dataclass
class ServerProcess:
    """``relaymq serve`` in a subprocess."""

    process: subprocess.Popen[bytes]
    base_url: str

    @property
    def ws_url(self) -> str:
        """The WebSocket URL of the default namespace."""
        return self.base_url.replace("http://", "ws://") + "/v1/namespaces/default/ws"

    def rss_bytes(self) -> int:
        """The server's resident memory now."""
        return psutil.Process(self.process.pid).memory_info().rss


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(base_url: str, process: subprocess.Popen[bytes]) -> None:
    """Poll ``/readyz`` until the server answers."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "relaymq serve exited"
        try:
            if httpx.get(base_url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("relaymq serve did not become ready")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """``relaymq serve`` on a free port with a fresh data directory."""
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("relaymq")),
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        "--log-level",
        "warning",
    ]
    environment = {**os.environ, "RELAYMQ_ADMIN_KEY": ADMIN_TOKEN}
    process = subprocess.Popen(command, env=environment)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url, process)
        yield ServerProcess(process, base_url)
    finally:
        process.terminate()
        process.wait(15)


def create(base_url: str, stream: str, subscriptions: list[str]) -> None:
    """A stream ``{stream}`` capturing ``{stream}.>`` and shared subscriptions on it
    (with leases long enough that nothing expires during the test)."""
    with httpx.Client(base_url=base_url + "/v1/namespaces/default", headers=AUTH_HEADERS) as http:
        body = {"name": stream, "subjects": [f"{stream}.>"]}
        assert http.post("/streams", json=body).status_code == 201
        for name in subscriptions:
            body = {"name": name, "stream": stream, "ack_timeout_ms": 600_000}
            assert http.post("/subscriptions", json=body).status_code == 201


def send(websocket: ClientConnection, frame: dict[str, Any]) -> Any:
    """Send a msgpack frame."""
    return websocket.send(msgspec.msgpack.encode(frame))


async def receive(websocket: ClientConnection) -> dict[str, Any]:
    """The next (msgpack) frame."""
    return msgspec.msgpack.decode(await websocket.recv())


async def produce(url: str, stream: str) -> None:
    """Publish :data:`MESSAGES` messages, pipelined, and wait for every confirm."""
    payload = b"p" * PAYLOAD_BYTES
    frames = MESSAGES // MESSAGES_PER_FRAME
    messages = [{"subject": f"{stream}.event", "payload": payload}] * MESSAGES_PER_FRAME
    async with connect(url, max_size=None, additional_headers=AUTH_HEADERS) as websocket:

        async def confirms() -> None:
            for _ in range(frames):
                frame = await receive(websocket)
                assert frame["op"] == "confirm", frame

        reader = asyncio.create_task(confirms())
        for seq in range(frames):
            await send(websocket, {"op": "publish", "seq": seq, "messages": messages})
        await reader


async def consume_all(url: str, subscription: str) -> None:
    """Receive and ack :data:`MESSAGES` messages of ``subscription``."""
    async with connect(url, max_size=None, additional_headers=AUTH_HEADERS) as websocket:
        subscribe = {"op": "subscribe", "sub": "s", "subscription": subscription}
        await send(websocket, {**subscribe, "credit": FAST_CREDIT})
        received = 0
        while received < MESSAGES:
            frame = await receive(websocket)
            assert frame["op"] == "deliver", frame
            receipts = [message["receipt"] for message in frame["messages"]]
            received += len(receipts)
            await send(websocket, {"op": "ack", "sub": "s", "receipts": receipts})


async def timed_run(url: str, stream: str, subscription: str) -> float:
    """Seconds until the normal consumer has every message of a concurrent publish."""
    started = time.perf_counter()
    async with asyncio.timeout(RUN_TIMEOUT_SECONDS):
        await asyncio.gather(produce(url, stream), consume_all(url, subscription))
    return time.perf_counter() - started


class SlowConsumer:
    """A consumer with credit :data:`SLOW_CREDIT` that reads but never acks."""

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self.received = 0
        self.task = asyncio.create_task(self.count())

    async def count(self) -> None:
        """Count delivered messages until the socket closes."""
        while True:
            frame = await receive(self.websocket)
            assert frame["op"] == "deliver", frame
            self.received += len(frame["messages"])


class PeakMemory:
    """The server's peak RSS, sampled in the background."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.start_bytes = server.rss_bytes()
        self.peak_bytes = self.start_bytes
        self.task = asyncio.create_task(self.sample())

    async def sample(self) -> None:
        """Record the RSS every :data:`SAMPLE_INTERVAL_SECONDS`."""
        while True:
            self.peak_bytes = max(self.peak_bytes, self.server.rss_bytes())
            await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)

    def growth_bytes(self) -> int:
        """Peak minus start."""
        self.task.cancel()
        self.peak_bytes = max(self.peak_bytes, self.server.rss_bytes())
        return self.peak_bytes - self.start_bytes


async def test_slow_consumer_holds_exactly_its_credit_and_costs_nothing(
    server: ServerProcess,
) -> None:
    create(server.base_url, "baseline", ["baseline-fast"])
    create(server.base_url, "load", ["load-fast", "load-slow"])
    baseline_seconds = await timed_run(server.ws_url, "baseline", "baseline-fast")

    async with connect(server.ws_url, additional_headers=AUTH_HEADERS) as websocket:
        subscribe = {"op": "subscribe", "sub": "slow", "subscription": "load-slow"}
        await send(websocket, {**subscribe, "credit": SLOW_CREDIT})
        slow = SlowConsumer(websocket)
        memory = PeakMemory(server)
        loaded_seconds = await timed_run(server.ws_url, "load", "load-fast")
        await asyncio.sleep(0.5)  # time for any delivery beyond the credit to show
        growth_bytes = memory.growth_bytes()
        slow.task.cancel()

    print(
        f"\nbaseline {baseline_seconds:.2f} s, with slow consumer {loaded_seconds:.2f} s; "
        f"server RSS {memory.start_bytes / MEBIBYTE:.1f} MiB at start of the loaded run, "
        f"peak growth {growth_bytes / MEBIBYTE:.1f} MiB"
    )
    assert slow.received == SLOW_CREDIT
    assert growth_bytes < MAX_RSS_GROWTH_BYTES
    assert loaded_seconds <= baseline_seconds * SLOWDOWN_FACTOR + SLOWDOWN_SLACK_SECONDS
