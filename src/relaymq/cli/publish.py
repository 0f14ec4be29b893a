"""``relaymq pub SUBJECT [DATA]``: publish from the shell, confirmed.

Owns the ``pub`` command. DATA is one message; without it every line of
stdin is one message. ``--count N`` sends each message N times (``{n}`` in
DATA becomes the message's number). Messages go through the SDK's batching
publisher, so piping a million lines is fast; the command exits 0 only once
every message is confirmed durable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import click

from relaymq.cli.output import Output, run
from relaymq.cli.profiles import Target, client_options

MAX_RESULTS_SHOWN = 1_000


def parse_headers(pairs: tuple[str, ...]) -> dict[str, str]:
    """``k=v`` pairs as a dict."""
    headers = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--header")
        headers[name] = value
    return headers


def payloads(data: str | None, count: int) -> Iterator[bytes]:
    """The payloads to send: DATA ``count`` times, or each stdin line ``count`` times."""
    lines = [data] if data is not None else (line.rstrip("\n") for line in sys.stdin)
    number = 0
    for line in lines:
        for _ in range(count):
            yield line.replace("{n}", str(number)).encode()
            number += 1


@click.command(name="pub")
@click.argument("subject")
@click.argument("data", required=False)
@click.option("--key", help="Partition key (keeps per-key order).")
@click.option("--header", "headers", multiple=True, help="Header NAME=VALUE (repeat).")
@click.option("--id", "message_id", help="Message id (deduplication); one message only.")
@click.option("--count", type=int, default=1, show_default=True, help="Send each message N times.")
@click.option("--stream", help="Publish into this stream (it must capture SUBJECT).")
@click.option("--linger-ms", type=float, default=5, show_default=True, help="Batching delay.")
@client_options
def publish(
    target: Target,
    output: Output,
    subject: str,
    data: str | None,
    key: str | None,
    headers: tuple[str, ...],
    message_id: str | None,
    count: int,
    stream: str | None,
    linger_ms: float,
) -> None:
    """Publish DATA (or each line of stdin) to SUBJECT and wait for the confirms."""
    header_values = parse_headers(headers)
    total = count if data is not None else None

    async def main() -> None:
        results = []
        async with target.client() as client:
            publisher = client.publisher(linger_ms=linger_ms, stream=stream)
            futures = []
            with output.progress(total, f"publishing to {subject}") as advance:
                for payload in payloads(data, count):
                    future = await publisher.publish(
                        subject, payload, key=key, headers=header_values, id=message_id
                    )
                    future.add_done_callback(lambda _: advance())
                    futures.append(future)
                await publisher.flush()
            for future in futures:
                results.append(future.result())
        report(output, subject, results)

    run(main(), output)


def report(output: Output, subject: str, results: list) -> None:
    """Print what was confirmed."""
    duplicates = sum(1 for result in results if result.duplicate)
    if output.as_json:
        shown = [
            {
                "stream": r.stream,
                "partition": r.partition,
                "offset": r.offset,
                "duplicate": r.duplicate,
            }
            for r in results[:MAX_RESULTS_SHOWN]
        ]
        output.json({"published": len(results), "duplicates": duplicates, "results": shown})
        return
    if len(results) == 1:
        result = results[0]
        note = " (duplicate)" if result.duplicate else ""
        where = f"{result.stream} partition {result.partition} offset {result.offset}"
        click.echo(f"published to {where}{note}")
    else:
        click.echo(f"published {len(results)} message(s) to {subject} ({duplicates} duplicate)")
