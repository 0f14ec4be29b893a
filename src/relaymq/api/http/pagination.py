"""Cursor pagination of list endpoints.

Lists are ordered by name; the cursor is an opaque token (URL-safe base64 of
the last name returned), so a page is stable even when items are added or
removed between requests. A cursor that does not decode is an
``invalid_argument`` error.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

from fastapi import Query

from relaymq.api.http.schemas import MAX_PAGE_ITEMS
from relaymq.errors import InvalidArgument

ItemT = TypeVar("ItemT")

LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE_ITEMS, description="Most items on one page.")]
CursorQuery = Annotated[
    str | None,
    Query(max_length=512, description="`next_cursor` of the previous page."),
]


def encode_cursor(name: str) -> str:
    """The opaque cursor that continues after ``name``."""
    return base64.urlsafe_b64encode(name.encode()).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The name a cursor continues after; :class:`InvalidArgument` if it is not ours."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as error:
        raise InvalidArgument("invalid pagination cursor", cursor=cursor[:100]) from error


def paginate(
    items: Sequence[ItemT], name_of: Callable[[ItemT], str], limit: int, cursor: str | None
) -> tuple[list[ItemT], str | None]:
    """The page of ``items`` (sorted by name) after ``cursor``, and the next cursor."""
    ordered = sorted(items, key=name_of)
    if cursor is not None:
        after = decode_cursor(cursor)
        ordered = [item for item in ordered if name_of(item) > after]
    page = ordered[:limit]
    has_more = len(ordered) > limit
    next_cursor = encode_cursor(name_of(page[-1])) if has_more else None
    return page, next_cursor
