"""``relaymq streams|subs|queues|topics ls|create|info|rm|purge``: admin from the shell.

Owns one click group per resource, built from the SDK's admin calls
(:mod:`relaymq.client.admin`): ``ls`` prints a table (or a JSON array with
``--json``), ``info`` one record, ``create`` the created resource, ``rm`` and
``purge`` a confirmation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from relaymq.cli.output import Output, run, to_jsonable
from relaymq.cli.profiles import Target, client_options

Columns = list[str]


def resource_of(client: Any, kind: str) -> Any:
    """The SDK's admin object of a resource kind."""
    return getattr(client, kind)


def summary_row(kind: str, item: Any) -> dict[str, Any]:
    """The row of a resource in ``ls``."""
    row = to_jsonable(item)
    if kind == "streams":
        row["subjects"] = item.config.get("subjects")
        row["partitions"] = len(item.partitions)
    elif kind == "subscriptions":
        row["stream"] = item.stream
        row["mode"] = item.mode
    elif kind == "topics":
        row["subscriptions"] = [subscription.name for subscription in item.subscriptions]
    return row


COLUMNS: dict[str, Columns] = {
    "streams": [
        "name",
        "subjects",
        "partitions",
        "messages",
        "bytes",
        "subscriptions",
        "lag_messages",
    ],
    "subscriptions": [
        "name",
        "stream",
        "mode",
        "depth",
        "in_flight",
        "acked",
        "dead_lettered",
        "consumers",
    ],
    "queues": [
        "name",
        "mode",
        "partitions",
        "depth",
        "in_flight",
        "acked",
        "dead_lettered",
        "consumers",
    ],
    "topics": ["name", "partitions", "messages", "bytes", "subscriptions"],
}


def add_common_commands(group: click.Group, kind: str, title: str) -> None:
    """``ls``, ``info``, ``rm`` and ``purge`` of a resource kind."""

    @group.command(name="ls")
    @client_options
    def list_command(target: Target, output: Output) -> None:
        """List them."""

        async def main() -> None:
            async with target.client() as client:
                items = await resource_of(client, kind).list()
            output.table([summary_row(kind, item) for item in items], COLUMNS[kind], title)

        run(main(), output)

    @group.command(name="info")
    @click.argument("name")
    @client_options
    def info_command(target: Target, output: Output, name: str) -> None:
        """Show one, with its settings and counters."""

        async def main() -> None:
            async with target.client() as client:
                output.record(await resource_of(client, kind).get(name), title=name)

        run(main(), output)

    @group.command(name="rm")
    @click.argument("name")
    @client_options
    def remove_command(target: Target, output: Output, name: str) -> None:
        """Delete one (and what it owns)."""

        async def main() -> None:
            async with target.client() as client:
                await resource_of(client, kind).delete(name)
            output.done(f"deleted {name}", deleted=name)

        run(main(), output)

    @group.command(name="purge")
    @click.argument("name")
    @client_options
    def purge_command(target: Target, output: Output, name: str) -> None:
        """Drop (or, for a subscription, skip) every message it holds now."""

        async def main() -> None:
            async with target.client() as client:
                admin = client.streams if kind == "topics" else resource_of(client, kind)
                await admin.purge(name)
            output.done(f"purged {name}", purged=name)

        run(main(), output)


def create_runner(kind: str, target: Target, output: Output, create: Callable[[Any], Any]) -> None:
    """Run a ``create`` and print what was created."""

    async def main() -> None:
        async with target.client() as client:
            created = await create(client)
        output.record(created, title="created")

    run(main(), output)


@click.group(name="streams")
def streams() -> None:
    """Streams: append-only logs capturing subjects."""


@streams.command(name="create")
@click.argument("name")
@click.option("--subject", "subjects", multiple=True, help="Subject filter to capture (repeat).")
@click.option("--partitions", type=int, help="Number of partitions.")
@click.option("--retention", type=click.Choice(["limits", "interest", "work_queue"]))
@click.option("--max-age-ms", type=int, help="Drop messages older than this.")
@click.option("--max-bytes", type=int, help="Keep at most this many bytes.")
@click.option("--max-messages", type=int, help="Keep at most this many messages.")
@client_options
def create_stream(
    target: Target, output: Output, name: str, subjects: tuple[str, ...], **settings: Any
) -> None:
    """Create a stream (capturing NAME unless --subject is given)."""
    create_runner(
        "streams",
        target,
        output,
        lambda client: client.streams.create(name, subjects=list(subjects) or None, **settings),
    )


early_delivery_option = click.option(
    "--early-delivery",
    is_flag=True,
    default=None,
    help="Deliver messages once written, before the fsync that confirms them.",
)


@click.group(name="subs")
def subscriptions() -> None:
    """Subscriptions: durable cursors on a stream."""


@subscriptions.command(name="create")
@click.argument("name")
@click.option("--stream", required=True, help="The stream to read.")
@click.option("--mode", type=click.Choice(["shared", "key_ordered", "ordered"]))
@click.option("--filter", "filter_subject", help="Subject filter (default: >).")
@click.option("--start", type=click.Choice(["earliest", "latest"]))
@click.option("--ack-timeout-ms", type=int, help="Lease per delivery.")
@click.option("--max-deliveries", type=int, help="Dead-letter after this many (0: never).")
@click.option("--dead-letter-stream", help="Where dead letters go.")
@early_delivery_option
@client_options
def create_subscription(
    target: Target, output: Output, name: str, stream: str, **settings: Any
) -> None:
    """Create a subscription on a stream."""
    create_runner(
        "subscriptions",
        target,
        output,
        lambda client: client.subscriptions.create(name, stream, **settings),
    )


@click.group(name="queues")
def queues() -> None:
    """Queues: a work-queue stream with one shared subscription."""


@queues.command(name="create")
@click.argument("name")
@click.option("--partitions", type=int, help="Number of partitions.")
@click.option("--mode", type=click.Choice(["shared", "key_ordered"]))
@click.option("--ack-timeout-ms", type=int, help="Lease per delivery.")
@click.option("--max-deliveries", type=int, help="Dead-letter after this many (0: never).")
@click.option("--dead-letter/--no-dead-letter", default=None, help="Keep a NAME-dlq queue.")
@early_delivery_option
@client_options
def create_queue(target: Target, output: Output, name: str, **settings: Any) -> None:
    """Create a queue."""
    create_runner("queues", target, output, lambda client: client.queues.create(name, **settings))


@click.group(name="topics")
def topics() -> None:
    """Topics: fan-out, one subscription per subscriber."""


@topics.command(name="create")
@click.argument("name")
@click.option("--partitions", type=int, help="Number of partitions.")
@click.option("--max-age-ms", type=int, help="Drop messages older than this.")
@client_options
def create_topic(target: Target, output: Output, name: str, **settings: Any) -> None:
    """Create a topic (subjects NAME and NAME.>)."""
    create_runner("topics", target, output, lambda client: client.topics.create(name, **settings))


add_common_commands(streams, "streams", "Streams")
add_common_commands(subscriptions, "subscriptions", "Subscriptions")
add_common_commands(queues, "queues", "Queues")
add_common_commands(topics, "topics", "Topics")
