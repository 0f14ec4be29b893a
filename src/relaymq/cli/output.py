"""How client commands print: rich tables and progress bars for people, JSON for scripts.

Owns :class:`Output` (``--json`` or not) and :func:`run`, which runs a
command's coroutine and turns the tree's errors into a one-line message (or
a JSON error object on stderr) and exit status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Coroutine, Iterator
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from relaymq.errors import RelayError


def to_jsonable(value: Any) -> Any:
    """SDK values (msgspec structs, messages) as plain JSON values."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "__struct_fields__"):
        import msgspec

        return msgspec.to_builtins(value)
    return value


class Output:
    """Prints records, tables, lines and progress, as text or as JSON."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(soft_wrap=True)
        self.terminal = sys.stdout.isatty()

    def json(self, value: Any) -> None:
        """One JSON document on one line."""
        click.echo(json.dumps(to_jsonable(value), separators=(",", ":"), default=str))

    def record(self, value: Any, title: str = "") -> None:
        """One object: JSON, or ``field: value`` lines."""
        value = to_jsonable(value)
        if self.as_json:
            self.json(value)
            return
        if title:
            self.console.print(f"[bold]{title}[/bold]")
        for key, item in value.items():
            text = json.dumps(item, default=str) if isinstance(item, dict | list) else item
            self.console.print(f"{key}: {text}", highlight=False, markup=False)

    def table(self, rows: list[dict[str, Any]], columns: list[str], title: str = "") -> None:
        """Rows: a JSON array, or a table with the given columns."""
        if self.as_json:
            self.json(rows)
            return
        table = Table(title=title or None, show_edge=self.terminal)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(format_cell(row.get(column)) for column in columns))
        self.console.print(table)

    def done(self, message: str, **facts: Any) -> None:
        """A confirmation: JSON ``facts``, or ``message``."""
        if self.as_json:
            self.json({"ok": True, **facts})
        else:
            click.echo(message)

    @contextlib.contextmanager
    def progress(self, total: int | None, description: str) -> Iterator[Any]:
        """A progress bar in a terminal; ``advance(n)`` is a no-op otherwise."""
        if self.as_json or not self.terminal:
            yield lambda count=1: None
            return
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda count=1: bar.advance(task, count)

    def error(self, error: RelayError) -> None:
        """An error on stderr (JSON ``{"error": {...}}`` with ``--json``)."""
        if self.as_json:
            click.echo(json.dumps({"error": error.to_dict()}, default=str), err=True)
        else:
            click.echo(f"error: {error.code}: {error.message}", err=True)


def format_cell(value: Any) -> str:
    """A table cell."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def run(coroutine: Coroutine[Any, Any, Any], output: Output) -> Any:
    """Run a command's coroutine; the tree's errors exit with status 1."""
    try:
        return asyncio.run(coroutine)
    except RelayError as error:
        output.error(error)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
