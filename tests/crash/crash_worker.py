"""The process the crash test kills: a broker publishing with confirms and consuming with acks.

Run as ``python crash_worker.py DATA_DIR RUN_ID PHASE``. It writes one line per fact
to stdout, flushed, *after* the fact is true:

* ``C <id>...``: these publishes were confirmed (the broker returned, so they are durable);
* ``D <id>...``: these messages were delivered to the consumer;
* ``A <id>...``: these acks were applied.

``PHASE`` is ``run`` (publish and consume until killed) or ``drain`` (consume
until the queue stays empty, ack everything, exit 0).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from relaymq.broker import Broker, BrokerSettings
from relaymq.broker.models import Backoff
from relaymq.core.message import Message

QUEUE = "crash"
BATCH = 20


def say(kind: str, ids: list[str]) -> None:
    if ids:
        sys.stdout.write(f"{kind} {' '.join(ids)}\n")
        sys.stdout.flush()


async def produce(broker: Broker, run_id: str) -> None:
    sequence = 0
    while True:
        ids = [f"{run_id}-{sequence + i}" for i in range(BATCH)]
        sequence += BATCH
        await broker.publish(
            "default",
            [
                Message(subject=QUEUE, id=message_id, payload=message_id.encode())
                for message_id in ids
            ],
        )
        say("C", ids)
        await asyncio.sleep(0.002)


async def consume(broker: Broker, idle_rounds_to_stop: int | None) -> None:
    idle_rounds = 0
    while idle_rounds_to_stop is None or idle_rounds < idle_rounds_to_stop:
        deliveries = await broker.fetch(
            "default", QUEUE, consumer_id="worker", max_messages=50, wait_ms=200
        )
        if not deliveries:
            idle_rounds += 1
            continue
        idle_rounds = 0
        say("D", [d.message.id or "" for d in deliveries])
        outcomes = await broker.ack("default", QUEUE, [d.receipt for d in deliveries])
        say(
            "A",
            [
                d.message.id or ""
                for d, outcome in zip(deliveries, outcomes, strict=True)
                if outcome is None
            ],
        )


async def main(data_dir: Path, run_id: str, phase: str, early_delivery: bool) -> None:
    broker = await Broker.open(BrokerSettings(data_dir=data_dir, checkpoint_interval_ms=50))
    if QUEUE not in {info.config.name for info in broker.list_streams("default")}:
        await broker.create_queue(
            "default",
            QUEUE,
            ack_timeout_ms=2_000,
            max_deliveries=0,
            backoff=Backoff(initial_ms=10, max_ms=10),
            early_delivery=early_delivery,
        )
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    if phase == "drain":
        await consume(broker, idle_rounds_to_stop=5)
        await broker.close()
        return
    await asyncio.gather(produce(broker, run_id), consume(broker, idle_rounds_to_stop=None))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "early"))
