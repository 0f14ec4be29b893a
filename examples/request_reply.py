"""Request/reply: a responder answers requests; each requester reads its own replies.

Requests go to the queue ``rpc``; each carries headers ``reply-to`` (a subject
of the ``replies`` stream) and gets back a message with ``correlation-id``.
Run a server (``relaymq serve``), then::

    python examples/request_reply.py --token ADMIN_KEY
"""

from __future__ import annotations

import asyncio
import secrets

from _common import arguments

import relaymq


async def responder(client: relaymq.AsyncClient) -> None:
    """Answer every request with its payload upper-cased."""

    async def handle(request: relaymq.Message) -> None:
        await client.publish(
            request.headers["reply-to"],
            request.payload.upper(),
            headers={"correlation-id": request.id},
        )

    await client.work("rpc", handle, concurrency=4)


async def main() -> None:
    options = arguments(__doc__.splitlines()[0])
    async with relaymq.AsyncClient(
        options.url, token=options.token, namespace=options.namespace
    ) as client:
        await client.queues.create("rpc", exist_ok=True)
        await client.streams.create(
            "replies", subjects=["replies.>"], max_age_ms=60_000, exist_ok=True
        )
        me = secrets.token_hex(4)
        inbox = f"replies-{me}"
        await client.subscriptions.create(
            inbox, "replies", filter_subject=f"replies.{me}", start="latest"
        )
        serving = asyncio.create_task(responder(client))
        replies = client.subscribe(inbox)
        for word in ("hello", "relay", "mq"):
            request_id = secrets.token_hex(8)
            await client.publish("rpc", word, id=request_id, headers={"reply-to": f"replies.{me}"})
            reply = await replies.receive(timeout_seconds=10)
            assert reply is not None and reply.headers["correlation-id"] == request_id
            await reply.ack()
            print(f"{word} -> {reply.text}")
        serving.cancel()
        await replies.close()
        await client.subscriptions.delete(inbox)


if __name__ == "__main__":
    asyncio.run(main())
