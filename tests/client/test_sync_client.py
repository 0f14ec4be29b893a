"""The blocking ``relaymq.Client``: the same surface without ``await``."""

from __future__ import annotations

import threading

import pytest

import relaymq
from relaymq import errors
from tests.client.conftest import TOKEN


def test_sync_client_basics(server_url: str, namespace: str) -> None:
    with relaymq.Client(server_url, namespace=namespace, token=TOKEN) as client:
        client.queues.create("tasks")
        result = client.publish("tasks", b"one", key="k")
        assert result.stream == "tasks" and result.offset == 0
        with client.publisher(linger_ms=1) as publisher:
            futures = [publisher.publish("tasks", str(index)) for index in range(50)]
        assert [future.result().offset for future in futures] == list(range(1, 51))
        with client.subscribe("tasks", prefetch=5) as subscription:
            message = next(iter(subscription))
            assert message.payload == b"one"
            message.ack()
        handled: list[bytes] = []
        done = threading.Event()

        def handle(message: relaymq.client.sync.SyncMessage) -> None:
            handled.append(message.payload)
            if len(handled) == 50:
                done.set()

        worker = client.worker("tasks", handle, concurrency=4)
        thread = threading.Thread(target=worker.run)
        thread.start()
        assert done.wait(20)
        worker.stop()
        thread.join(20)
        assert sorted(handled, key=int) == [str(index).encode() for index in range(50)]
        assert worker.processed == 50
        client.streams.create("history", subjects=["history.>"])
        client.publish("history.a", b"1")
        client.publish("history.b", b"2")
        assert [message.payload for message in client.replay("history")] == [b"1", b"2"]
        with pytest.raises(errors.NotFound):
            client.queues.get("nope")
