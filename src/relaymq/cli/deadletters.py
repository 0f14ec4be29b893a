"""``relaymq dlq ls|redrive SUBSCRIPTION``: browse and redrive dead letters.

Owns the ``dlq`` group. A queue's name works as SUBSCRIPTION (a queue's
subscription has its name).
"""

from __future__ import annotations

import click

from relaymq.cli.output import Output, run
from relaymq.cli.profiles import Target, client_options

COLUMNS = ["offset", "id", "subject", "reason", "deliveries", "last_error", "payload"]


@click.group(name="dlq")
def deadletters() -> None:
    """Dead letters of a subscription or queue."""


@deadletters.command(name="ls")
@click.argument("subscription")
@click.option("--from-offset", type=int, help="First offset to list.")
@click.option("--limit", type=int, default=100, show_default=True, help="Most to list.")
@client_options
def list_dead_letters(
    target: Target, output: Output, subscription: str, from_offset: int | None, limit: int
) -> None:
    """List dead letters, oldest first, with why they died."""

    async def main() -> None:
        async with target.client() as client:
            messages = await client.subscriptions.dead_letters(
                subscription, from_offset=from_offset, limit=limit
            )
        if output.as_json:
            output.json([message.to_dict() for message in messages])
            return
        rows = [
            {
                "offset": message.offset,
                "id": message.id,
                "subject": message.subject,
                "reason": message.headers.get("relaymq-dead-letter-reason", ""),
                "deliveries": message.headers.get("relaymq-delivery-count", ""),
                "last_error": message.headers.get("relaymq-last-error", "")[:60],
                "payload": message.text[:40],
            }
            for message in messages
        ]
        output.table(rows, COLUMNS, title=f"Dead letters of {subscription}")

    run(main(), output)


@deadletters.command(name="redrive")
@click.argument("subscription")
@click.option("--max", "max_messages", type=int, help="Redrive at most this many.")
@client_options
def redrive(target: Target, output: Output, subscription: str, max_messages: int | None) -> None:
    """Publish dead letters back to the subscription's stream for another try."""

    async def main() -> None:
        async with target.client() as client:
            count = await client.subscriptions.redrive(subscription, max_messages=max_messages)
        output.done(f"redrove {count} message(s)", redriven=count)

    run(main(), output)
