"""``relaymq serve``: run the server in the foreground until SIGTERM or Ctrl-C.

Flags override ``RELAYMQ_*`` environment variables, which override the TOML
file given by ``--config`` (or ``RELAYMQ_CONFIG``); every other setting is
read from the environment or that file (see the README's configuration
reference).
"""

from __future__ import annotations

from pathlib import Path

import click

from relaymq.config import AuthMode, LogFormat, LogLevel, load_settings
from relaymq.errors import RelayError
from relaymq.store.base import FsyncPolicy


def choices(enum_type: type) -> click.Choice:
    """A case-insensitive click choice of an enum's values."""
    return click.Choice([member.value for member in enum_type], case_sensitive=False)


@click.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file of settings (env: RELAYMQ_CONFIG).",
)
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="TCP port to listen on (default 8765).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the embedded store (default ./relaymq-data).",
)
@click.option("--fsync", type=choices(FsyncPolicy), help="When writes are fsynced.")
@click.option("--log-level", type=choices(LogLevel), help="Lowest log level written.")
@click.option("--log-format", type=choices(LogFormat), help="text or json lines.")
@click.option(
    "--auth-mode", type=choices(AuthMode), help="required (default) or anonymous (dev only)."
)
@click.option(
    "--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="PEM certificate: HTTPS."
)
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="PEM key.")
@click.option(
    "--tls-client-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM CA bundle: require client certificates (mTLS).",
)
def serve(**flags: object) -> None:
    """Run the RelayMQ server in the foreground until SIGTERM or Ctrl-C."""
    try:
        settings = load_settings(**flags)
    except RelayError as error:
        raise click.UsageError(error.message) from error
    # Imported here so that ``relaymq --help`` and other subcommands do not load
    # the web stack.
    from relaymq.runtime import collect_less_often
    from relaymq.server import run

    collect_less_often()
    run(settings)
