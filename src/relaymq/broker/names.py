"""Validation of resource names (namespaces, streams, subscriptions).

Names appear in file paths, URLs, metric labels and subjects, so they are kept
to a conservative alphabet: letters, digits, ``_`` and ``-``, starting with a
letter or digit, at most 64 characters.
"""

from __future__ import annotations

import re

from relaymq.errors import InvalidName

MAX_NAME_LENGTH = 64
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def validate_name(kind: str, name: object) -> str:
    """Return ``name`` if it is a valid resource name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise InvalidName(
            f"invalid {kind} name {name!r}: use 1-{MAX_NAME_LENGTH} letters, digits, '_' or '-',"
            " starting with a letter or digit",
            kind=kind,
            name=str(name)[:100],
        )
    return name
