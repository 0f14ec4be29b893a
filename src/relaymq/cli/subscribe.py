"""``relaymq sub SUBSCRIPTION``: consume from the shell, print or pipe.

Owns the ``sub`` command. Each message is printed on one line: its payload as
text, or with ``--json`` one JSON object per line (all fields, payload as
text or base64). ``--ack`` says what happens to a printed message:

* ``auto`` (default): acked once printed and flushed, so a message is gone
  once your pipe has it;
* ``none``: never acked: the server delivers it again after its lease, or at
  once when this command exits (peek);
* ``manual``: after each message, read one word from the terminal: ``a``
  (or empty) acks, ``n`` nacks (redelivered after the backoff), ``t``
  terminates (dead letter), ``q`` quits without acking.

``--max N`` stops after N messages; ``--timeout S`` after S seconds without one.
"""

from __future__ import annotations

import json

import click

from relaymq.cli.output import Output, run
from relaymq.cli.profiles import Target, client_options

ACK_MODES = ("auto", "none", "manual")


def line_of(message: object, output: Output) -> str:
    """The printed line of a message."""
    if output.as_json:
        return json.dumps(message.to_dict(), separators=(",", ":"))  # type: ignore[attr-defined]
    return message.text  # type: ignore[attr-defined]


async def settle_by_prompt(message: object) -> bool:
    """Ask what to do with a message (``--ack manual``); False to quit."""
    answer = (
        click.prompt("ack? [a]ck/[n]ack/[t]erm/[q]uit", default="a", show_default=False, err=True)
        .strip()
        .lower()
    )
    if answer.startswith("q"):
        return False
    if answer.startswith("n"):
        await message.nack(confirm=True)  # type: ignore[attr-defined]
    elif answer.startswith("t"):
        await message.term("terminated from the command line", confirm=True)  # type: ignore[attr-defined]
    else:
        await message.ack(confirm=True)  # type: ignore[attr-defined]
    return True


@click.command(name="sub")
@click.argument("subscription")
@click.option(
    "--ack",
    "ack_mode",
    type=click.Choice(ACK_MODES),
    default="auto",
    show_default=True,
    help="What to do with printed messages (see above).",
)
@click.option("--max", "max_messages", type=int, help="Stop after this many messages.")
@click.option(
    "--timeout", "timeout_seconds", type=float, help="Stop after this long without a message."
)
@click.option(
    "--prefetch", type=int, default=100, show_default=True, help="Messages held unacked at most."
)
@client_options
def subscribe(
    target: Target,
    output: Output,
    subscription: str,
    ack_mode: str,
    max_messages: int | None,
    timeout_seconds: float | None,
    prefetch: int,
) -> None:
    """Print the messages of SUBSCRIPTION (a queue's name works too), one per line."""
    if ack_mode == "manual":
        prefetch = 1

    async def main() -> None:
        received = 0
        client = target.client()
        async with client, client.subscribe(subscription, prefetch=prefetch) as messages:
            while max_messages is None or received < max_messages:
                message = await messages.receive(timeout_seconds)
                if message is None:
                    break
                click.echo(line_of(message, output))
                received += 1
                if ack_mode == "auto":
                    await message.ack()
                elif ack_mode == "manual" and not await settle_by_prompt(message):
                    break

    run(main(), output)
