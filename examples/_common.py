"""Shared command-line options of the examples: ``--url``, ``--token``, ``--namespace``."""

from __future__ import annotations

import argparse


def arguments(description: str, **extra: str) -> argparse.Namespace:
    """Parse ``--url``, ``--token``, ``--namespace`` and ``extra`` positional arguments."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", default="http://127.0.0.1:8765", help="server URL")
    parser.add_argument("--token", default=None, help="API token (the server's admin key)")
    parser.add_argument("--namespace", default="default", help="namespace to use")
    for name, help_text in extra.items():
        parser.add_argument(name, help=help_text)
    return parser.parse_args()
