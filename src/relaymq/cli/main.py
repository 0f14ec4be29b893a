"""The ``relaymq`` command: a click group whose subcommands live one per module.

To add a subcommand, write ``relaymq/cli/<name>.py`` exposing a click command
and append it to :data:`COMMANDS`.
"""

from __future__ import annotations

import click

from relaymq import __version__
from relaymq.cli.bench import bench
from relaymq.cli.deadletters import deadletters
from relaymq.cli.profiles import profiles
from relaymq.cli.publish import publish
from relaymq.cli.resources import queues, streams, subscriptions, topics
from relaymq.cli.security import SECURITY_COMMANDS
from relaymq.cli.serve import serve
from relaymq.cli.subscribe import subscribe

COMMANDS: tuple[click.Command, ...] = (
    serve,
    publish,
    subscribe,
    streams,
    subscriptions,
    queues,
    topics,
    deadletters,
    profiles,
    *SECURITY_COMMANDS,
    bench,
)
"""Every subcommand of ``relaymq``."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="relaymq")
def relaymq() -> None:
    """RelayMQ: durable queues, pub/sub topics and replayable event streams."""


for command in COMMANDS:
    relaymq.add_command(command)


def main() -> None:
    """Console-script entry point (``relaymq``)."""
    relaymq()
