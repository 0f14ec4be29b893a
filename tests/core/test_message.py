"""The message struct: what the garbage collector sees of it."""

from __future__ import annotations

import gc

import msgspec

from relaymq.core.message import Message
from relaymq.protocol import frames


def test_messages_are_not_tracked_by_the_garbage_collector() -> None:
    message = Message(subject="orders.created", payload=b"x", headers={"trace": "1"})
    assert not gc.is_tracked(message)


def test_messages_decoded_from_a_binary_publish_are_not_tracked_either() -> None:
    data = msgspec.msgpack.encode(
        {"op": "publish", "seq": 1, "messages": [{"subject": "a", "payload": b"x"}]}
    )
    frame = frames.decode_binary(data)
    assert isinstance(frame, frames.BinaryPublish)
    assert not any(gc.is_tracked(message) for message in frame.broker_messages())
