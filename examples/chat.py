"""A small chat between terminals: type lines; everyone else sees them.

Run a server (``relaymq serve``), then in two terminals::

    python examples/chat.py --token ADMIN_KEY ada
    python examples/chat.py --token ADMIN_KEY bob

Each participant has their own subscription (``chat-NAME``) on the topic
``chat``, so a participant who comes back sees what was said meanwhile.
"""

from __future__ import annotations

import asyncio
import sys

from _common import arguments

import relaymq


async def show_messages(client: relaymq.AsyncClient, name: str) -> None:
    """Print what the others say."""
    async for message in client.subscribe(f"chat-{name}"):
        if message.subject != f"chat.{name}":
            print(f"{message.subject.removeprefix('chat.')}: {message.text}")
        await message.ack()


async def main() -> None:
    options = arguments(__doc__.splitlines()[0], name="your name in the chat")
    async with relaymq.AsyncClient(
        options.url, token=options.token, namespace=options.namespace
    ) as client:
        await client.topics.create("chat", exist_ok=True)
        await client.topics.subscribe("chat", f"chat-{options.name}", start="latest", exist_ok=True)
        printer = asyncio.create_task(show_messages(client, options.name))
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            await client.publish(f"chat.{options.name}", line.rstrip("\n"))
        printer.cancel()


if __name__ == "__main__":
    asyncio.run(main())
