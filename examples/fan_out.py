"""Fan-out: one topic, two services (billing and shipping) each get every order.

Run a server (``relaymq serve``), then::

    python examples/fan_out.py --token ADMIN_KEY
"""

from __future__ import annotations

import asyncio

from _common import arguments

import relaymq

ORDERS = 20


async def service(client: relaymq.AsyncClient, name: str) -> int:
    """Consume the service's own subscription until it has every order."""
    seen = 0
    async for message in client.subscribe(f"orders-{name}"):
        seen += 1
        await message.ack()
        if seen == ORDERS:
            break
    print(f"{name}: received {seen} orders")
    return seen


async def main() -> None:
    options = arguments(__doc__.splitlines()[0])
    async with relaymq.AsyncClient(
        options.url, token=options.token, namespace=options.namespace
    ) as client:
        await client.topics.create("orders", exist_ok=True)
        for name in ("billing", "shipping"):
            await client.topics.subscribe("orders", f"orders-{name}", start="latest", exist_ok=True)
        await client.subscriptions.purge("orders-billing")
        await client.subscriptions.purge("orders-shipping")
        services = [asyncio.create_task(service(client, name)) for name in ("billing", "shipping")]
        for number in range(ORDERS):
            await client.publish("orders.created", f"order #{number}", key=f"customer-{number % 3}")
        counts = await asyncio.wait_for(asyncio.gather(*services), 30)
        assert counts == [ORDERS, ORDERS]


if __name__ == "__main__":
    asyncio.run(main())
