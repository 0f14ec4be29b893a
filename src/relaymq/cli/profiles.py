"""Where the client commands connect: ``--url`` / ``--token`` / ``--namespace``,
their environment variables, and named profiles in a TOML file.

Owns the profile file (``~/.config/relaymq/profiles.toml``, or the path in
``--profiles-file`` / ``RELAYMQ_PROFILES``), the ``relaymq profiles`` command
(``ls``, ``set``, ``rm``), and :func:`client_options`, the decorator every
client command uses. Precedence: flag or environment variable, then the
profile, then the defaults. The environment is read only through click's
``envvar=``.

The file holds one table per profile::

    [default]
    url = "http://127.0.0.1:8765"
    token = "..."
    namespace = "default"
"""

from __future__ import annotations

import functools
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from relaymq.cli.output import Output

DEFAULT_PROFILES_PATH = Path("~/.config/relaymq/profiles.toml")
DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_NAMESPACE = "default"
PROFILE_FIELDS = ("url", "token", "namespace")


@dataclass(frozen=True)
class Target:
    """A server, credentials and namespace to talk to."""

    url: str
    token: str | None
    namespace: str

    def client(self) -> Any:
        """An :class:`relaymq.AsyncClient` for this target (imported lazily)."""
        from relaymq.client import AsyncClient, RetryPolicy

        return AsyncClient(
            self.url,
            token=self.token,
            namespace=self.namespace,
            retry=RetryPolicy(timeout_seconds=10),
        )


def read_profiles(path: Path) -> dict[str, dict[str, str]]:
    """Every profile of the file (none when it does not exist)."""
    path = path.expanduser()
    if not path.exists():
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise click.ClickException(f"cannot read profiles file {path}: {error}") from error
    return {
        name: {key: str(value) for key, value in table.items() if key in PROFILE_FIELDS}
        for name, table in document.items()
        if isinstance(table, dict)
    }


def write_profiles(path: Path, profiles: dict[str, dict[str, str]]) -> None:
    """Write the profiles file (owner-readable only: it may hold tokens)."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, fields in sorted(profiles.items()):
        lines.append(f"[{json.dumps(name)}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in fields.items())
        lines.append("")
    path.touch(mode=0o600, exist_ok=True)
    path.write_text("\n".join(lines))


def resolve_target(
    url: str | None, token: str | None, namespace: str | None, profile: str, path: Path
) -> Target:
    """The target from flags (or their environment variables), else the profile."""
    fields = read_profiles(path).get(profile, {})
    return Target(
        url=url or fields.get("url") or DEFAULT_URL,
        token=token or fields.get("token") or None,
        namespace=namespace or fields.get("namespace") or DEFAULT_NAMESPACE,
    )


def profile_file_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--profiles-file`` (env ``RELAYMQ_PROFILES``)."""
    return click.option(
        "--profiles-file",
        envvar="RELAYMQ_PROFILES",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_PROFILES_PATH,
        show_default=True,
        help="TOML file of profiles (env: RELAYMQ_PROFILES).",
    )(command)


def client_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--url``, ``--token``, ``--namespace``, ``--profile``, ``--profiles-file``
    and ``--json``; the command receives ``target`` and ``output`` instead."""

    @functools.wraps(command)
    def wrapper(
        url: str | None,
        token: str | None,
        namespace: str | None,
        profile: str,
        profiles_file: Path,
        as_json: bool,
        **arguments: Any,
    ) -> Any:
        target = resolve_target(url, token, namespace, profile, profiles_file)
        return command(target=target, output=Output(as_json), **arguments)

    decorators = [
        click.option("--url", envvar="RELAYMQ_URL", help="Server URL (env: RELAYMQ_URL)."),
        click.option("--token", envvar="RELAYMQ_TOKEN", help="API token (env: RELAYMQ_TOKEN)."),
        click.option(
            "--namespace", "-n", envvar="RELAYMQ_NAMESPACE", help="Namespace (default: default)."
        ),
        click.option(
            "--profile",
            envvar="RELAYMQ_PROFILE",
            default="default",
            show_default=True,
            help="Profile of the profiles file (env: RELAYMQ_PROFILE).",
        ),
        profile_file_option,
        click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output."),
    ]
    for decorator in reversed(decorators):
        wrapper = decorator(wrapper)
    return wrapper


@click.group(name="profiles")
def profiles() -> None:
    """Named connection profiles (url, token, namespace)."""


@profiles.command(name="ls")
@profile_file_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
def list_profiles(profiles_file: Path, as_json: bool) -> None:
    """List profiles (tokens masked)."""
    rows = [
        {
            "profile": name,
            "url": fields.get("url", ""),
            "namespace": fields.get("namespace", ""),
            "token": "***" if fields.get("token") else "",
        }
        for name, fields in sorted(read_profiles(profiles_file).items())
    ]
    Output(as_json).table(rows, ["profile", "url", "namespace", "token"], title="Profiles")


@profiles.command(name="set")
@click.argument("name")
@click.option("--url", help="Server URL.")
@click.option("--token", help="API token.")
@click.option("--namespace", "-n", help="Namespace.")
@profile_file_option
def set_profile(
    name: str, url: str | None, token: str | None, namespace: str | None, profiles_file: Path
) -> None:
    """Create or change a profile."""
    document = read_profiles(profiles_file)
    fields = document.setdefault(name, {})
    for key, value in (("url", url), ("token", token), ("namespace", namespace)):
        if value is not None:
            fields[key] = value
    write_profiles(profiles_file, document)
    click.echo(f"profile {name} saved to {profiles_file}")


@profiles.command(name="rm")
@click.argument("name")
@profile_file_option
def remove_profile(name: str, profiles_file: Path) -> None:
    """Delete a profile."""
    document = read_profiles(profiles_file)
    if document.pop(name, None) is None:
        raise click.ClickException(f"no profile {name!r}")
    write_profiles(profiles_file, document)
    click.echo(f"profile {name} removed")
