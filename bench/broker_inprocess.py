"""In-process broker benchmark: the ceiling of the broker and the embedded store, no network.

Measures, with 256-byte payloads in batches of 100 and ``fsync=batch`` (every
confirm durable):

* ``publish``: concurrent publishers appending to one queue (msg/s confirmed);
* ``consume``: fetch + ack of the backlog the publish phase left (msg/s acked);
* ``mixed``: publishers and consumers running together (msg/s end to end).

Run: ``.venv/bin/python bench/broker_inprocess.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import uvloop

from relaymq.broker import Broker, BrokerSettings
from relaymq.core.message import Message
from relaymq.store.base import FsyncPolicy


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--payload-bytes", type=int, default=256)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--publishers", type=int, default=16)
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument(
        "--fsync", choices=[policy.value for policy in FsyncPolicy], default="batch"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args()


async def publish_all(
    broker: Broker, queue: str, total: int, batch: int, publishers: int, payload: bytes
) -> None:
    per_publisher = total // publishers

    async def publisher() -> None:
        for _ in range(per_publisher // batch):
            await broker.publish(
                "default", [Message(subject=queue, payload=payload) for _ in range(batch)]
            )

    await asyncio.gather(*(publisher() for _ in range(publishers)))


async def consume_all(broker: Broker, queue: str, total: int, batch: int, consumers: int) -> int:
    received = 0

    async def consumer(number: int) -> None:
        nonlocal received
        while received < total:
            deliveries = await broker.fetch(
                "default", queue, consumer_id=f"c{number}", max_messages=batch, wait_ms=100
            )
            if deliveries:
                received += len(deliveries)
                await broker.ack("default", queue, [delivery.receipt for delivery in deliveries])

    await asyncio.gather(*(consumer(number) for number in range(consumers)))
    return received


async def timed(coroutine: object) -> tuple[float, float]:
    """Wall seconds and process CPU seconds spent awaiting ``coroutine``."""
    started, started_cpu = time.perf_counter(), time.process_time()
    await coroutine  # type: ignore[misc]
    return time.perf_counter() - started, time.process_time() - started_cpu


async def run(arguments: argparse.Namespace) -> dict[str, float]:
    payload = b"x" * arguments.payload_bytes
    total = arguments.messages - arguments.messages % (arguments.batch * arguments.publishers)
    with tempfile.TemporaryDirectory(prefix="relaymq-bench-") as directory:
        settings = BrokerSettings(data_dir=Path(directory), fsync=FsyncPolicy(arguments.fsync))
        broker = await Broker.open(settings)
        try:
            for queue in ("backlog", "mixed"):
                await broker.create_queue(
                    "default", queue, partitions=arguments.partitions, dead_letter=False
                )
            publish_seconds, publish_cpu = await timed(
                publish_all(
                    broker, "backlog", total, arguments.batch, arguments.publishers, payload
                )
            )
            consume_seconds, consume_cpu = await timed(
                consume_all(broker, "backlog", total, arguments.batch, arguments.consumers)
            )
            mixed_seconds, mixed_cpu = await timed(
                asyncio.gather(
                    publish_all(
                        broker, "mixed", total, arguments.batch, arguments.publishers, payload
                    ),
                    consume_all(broker, "mixed", total, arguments.batch, arguments.consumers),
                )
            )
        finally:
            await broker.close()
    return {
        "messages": total,
        "publish_msgs_per_second": total / publish_seconds,
        "consume_ack_msgs_per_second": total / consume_seconds,
        "mixed_end_to_end_msgs_per_second": total / mixed_seconds,
        "publish_cpu_us_per_msg": publish_cpu / total * 1e6,
        "consume_ack_cpu_us_per_msg": consume_cpu / total * 1e6,
        "mixed_cpu_us_per_msg": mixed_cpu / total * 1e6,
    }


def main() -> None:
    arguments = parse_arguments()
    figures = uvloop.run(run(arguments))
    if arguments.json:
        print(json.dumps(figures))
        return
    print(
        f"messages: {figures['messages']:,} x {arguments.payload_bytes} B,"
        f" batch {arguments.batch},"
        f" fsync={arguments.fsync}, partitions={arguments.partitions}"
    )
    for phase, rate, cpu in (
        ("publish", "publish_msgs_per_second", "publish_cpu_us_per_msg"),
        ("consume+ack", "consume_ack_msgs_per_second", "consume_ack_cpu_us_per_msg"),
        ("mixed end to end", "mixed_end_to_end_msgs_per_second", "mixed_cpu_us_per_msg"),
    ):
        print(f"{phase:18} {figures[rate]:>10,.0f} msg/s   {figures[cpu]:5.2f} us CPU/msg")


if __name__ == "__main__":
    main()
