"""Replay a stream: read it again from an offset, or from a point in time.

Run a server (``relaymq serve``), then::

    python examples/replay.py --token ADMIN_KEY
"""

from __future__ import annotations

import asyncio

from _common import arguments

import relaymq


async def main() -> None:
    options = arguments(__doc__.splitlines()[0])
    async with relaymq.AsyncClient(
        options.url, token=options.token, namespace=options.namespace
    ) as client:
        await client.streams.create("audit", subjects=["audit.>"], exist_ok=True)
        first = None
        for number in range(10):
            result = await client.publish("audit.login", f"login {number}")
            first = first if first is not None else result.offset
        print("from offset", first + 5)
        async for message in client.replay("audit", from_offset=first + 5):
            print(f"  {message.offset}: {message.text}")
        one_minute_ago = (await client.streams.get("audit")).partitions[
            0
        ].last_timestamp_ms - 60_000
        count = 0
        async for _ in client.replay("audit", from_timestamp_ms=one_minute_ago):
            count += 1
        print(f"{count} messages in the last minute")


if __name__ == "__main__":
    asyncio.run(main())
