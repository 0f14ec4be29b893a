"""Micro-benchmark of the pure core: one partition cursor (or its dispatcher) alone.

Offers N messages, then takes batches of 100 and acks each batch; prints microseconds per
message for each phase and the combined rate. This is the ceiling of the consume
path before the broker, the store and any protocol add their share.

Run: ``.venv/bin/python bench/core_cursor.py [--messages N] [--mode shared|key_ordered|ordered]``
"""

from __future__ import annotations

import argparse
import random
import time

from relaymq.core.cursor import CursorPolicy, DeliveryMode, PartitionCursor
from relaymq.core.dispatch import SubscriptionDispatcher
from relaymq.core.message import Message


def measure(
    messages: list[Message], mode: DeliveryMode, through_dispatcher: bool
) -> dict[str, float]:
    policy = CursorPolicy(mode=mode, window_messages=len(messages) + 1)
    cursor = PartitionCursor(0, policy, 0, 12345, random.Random(1))
    dispatcher = SubscriptionDispatcher(policy, {0: cursor})
    dispatcher.register("consumer", 0, None)
    take = dispatcher.take if through_dispatcher else cursor.take
    ack = dispatcher.ack if through_dispatcher else cursor.ack
    started = time.perf_counter()
    cursor.offer(messages)
    offered = time.perf_counter()
    # Take a batch, then ack it: key_ordered hands out one message per key until acked.
    take_seconds = ack_seconds = 0.0
    while True:
        before_take = time.perf_counter()
        batch = take("consumer", 100, 1_000)
        after_take = time.perf_counter()
        take_seconds += after_take - before_take
        if not batch:
            break
        receipts = [delivery.receipt for delivery in batch]
        if mode is DeliveryMode.ORDERED:
            receipts = receipts[-1:]  # cumulative: one ack per batch
        for receipt in receipts:
            ack(receipt, 1_000)
        ack_seconds += time.perf_counter() - after_take
    acked = time.perf_counter()
    count = len(messages)
    return {
        "offer_us": (offered - started) / count * 1e6,
        "take_us": take_seconds / count * 1e6,
        "ack_us": ack_seconds / count * 1e6,
        "messages_per_second": count / (acked - started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="core cursor micro-benchmark")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--mode", choices=[mode.value for mode in DeliveryMode], default="shared")
    arguments = parser.parse_args()
    mode = DeliveryMode(arguments.mode)
    keys = [f"key-{i % 1000}" for i in range(arguments.messages)]
    messages = [
        Message(subject="jobs", payload=b"x", offset=i, partition=0, key=keys[i])
        for i in range(arguments.messages)
    ]
    for label, through_dispatcher in (("cursor", False), ("dispatcher", True)):
        figures = measure(messages, mode, through_dispatcher)
        print(
            f"{label:10} {mode.value:11} offer {figures['offer_us']:.2f} us  take"
            f" {figures['take_us']:.2f} us  ack {figures['ack_us']:.2f} us"
            f"  -> {figures['messages_per_second']:,.0f} msg/s"
        )


if __name__ == "__main__":
    main()
