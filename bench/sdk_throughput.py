"""SDK throughput: publish with confirms, then consume + ack, over the real server.

Spawns ``relaymq serve`` on an ephemeral port with a temporary data directory,
publishes N messages of 256 bytes through the batching publisher awaiting every
confirm, then consumes and acks them all with the subscribe iterator, and
prints messages per second for both. Client and server run on this machine.

    .venv/bin/python bench/sdk_throughput.py --messages 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import relaymq

RELAYMQ = Path(sys.executable).with_name("relaymq")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: str, token: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    environment = {**os.environ, "RELAYMQ_ADMIN_KEY": token}
    command = [str(RELAYMQ), "serve", "--port", str(port), "--data-dir", data_dir]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"], env=environment, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise SystemExit("server did not start")


def report(what: str, messages: int, seconds: float) -> None:
    print(f"{what:<20} {messages / seconds:>10,.0f} msg/s ({seconds:.2f} s)")


async def measure(url: str, token: str, messages: int, payload_bytes: int) -> None:
    payload = os.urandom(payload_bytes)
    async with relaymq.AsyncClient(url, token=token) as client:
        await client.queues.create("bench", dead_letter=False)
        await client.connect()
        started = time.perf_counter()
        async with client.publisher(linger_ms=1, max_unconfirmed_messages=20_000) as publisher:
            for _ in range(messages):
                await publisher.publish("bench", payload)
        publish_seconds = time.perf_counter() - started
        report("publish (confirmed)", messages, publish_seconds)

        started = time.perf_counter()
        received = 0
        async for message in client.subscribe("bench", prefetch=5_000, batch_messages=500):
            await message.ack()
            received += 1
            if received == messages:
                break
        consume_seconds = time.perf_counter() - started
        report("consume + ack", messages, consume_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--payload-bytes", type=int, default=256)
    arguments = parser.parse_args()
    token = "rmq_" + secrets.token_hex(8) + "_" + "B" * 43
    with tempfile.TemporaryDirectory() as data_dir:
        process, url = start_server(data_dir, token)
        try:
            size = f"{arguments.messages:,} messages of {arguments.payload_bytes} bytes"
            print(f"{size}, {os.cpu_count()} CPUs")
            asyncio.run(measure(url, token, arguments.messages, arguments.payload_bytes))
        finally:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()
