"""The store interface: the only way the broker reaches durable state.

Two roles, kept apart so a backend can play either or both:

* :class:`LogStore` opens :class:`PartitionLog` objects: append-only logs of
  messages, one per stream partition, addressed by offset.
* :class:`MetadataStore` keeps small JSON documents (stream and subscription
  definitions) and cursor checkpoints (opaque bytes).

:class:`AppendListeners` is the one implementation of
:meth:`PartitionLog.watch_appends` every log shares, and :func:`wait_for_append`
the one :meth:`PartitionLog.append` (``start_append``, awaited).

Every implementation passes the conformance suite in ``tests/store``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from relaymq.core.message import Message

logger = logging.getLogger("relaymq.store")

# What an append hears once it is done: ``None`` when durable, else the error to raise.
AppendDone = Callable[[BaseException | None], None]


class FsyncPolicy(enum.StrEnum):
    """When appended records are forced to stable storage before an append returns.

    * ``always``: every append call is fsynced on its own before it returns.
    * ``batch``: appends that arrive together share one fsync (group commit);
      every append still returns only after its records are fsynced.
    * ``never``: the OS decides; an append returns once written to the page cache.
    """

    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class RetentionLimits:
    """How much of a partition to keep. ``None`` means no limit of that kind."""

    max_age_ms: int | None = None
    max_bytes: int | None = None
    max_messages: int | None = None


@dataclass(frozen=True, slots=True)
class PartitionStats:
    """What a partition holds right now."""

    first_offset: int
    next_offset: int
    messages: int
    bytes: int
    first_timestamp_ms: int | None
    last_timestamp_ms: int | None


class PartitionLog(Protocol):
    """An append-only log of one stream partition. Offsets start at 0 and never repeat."""

    @property
    def first_offset(self) -> int:
        """The lowest offset still retained (equals ``next_offset`` when empty)."""
        ...

    @property
    def next_offset(self) -> int:
        """One past the last readable message. Messages of an append still in progress
        (not yet as durable as the policy promises) are not counted."""
        ...

    async def append(self, messages: Sequence[Message]) -> int:
        """Append ``messages`` in order and return the offset of the first one.

        Sets ``partition`` and ``offset`` on each message. Returns only once the
        records are as durable as the store's fsync policy promises; on return
        the messages are readable. Raises :class:`relaymq.errors.StorageFull`
        when the disk is full; nothing of a failed call becomes visible.
        """
        ...

    def start_append(self, messages: Sequence[Message], done: AppendDone) -> int:
        """:meth:`append` without the wait: writes now and returns the first offset;
        ``done`` is called on the event loop (perhaps before this returns) with
        ``None`` once the messages are durable and readable, or with the error that
        failed them. An append that cannot start raises, and ``done`` is never
        called. The write goes on to its end whatever becomes of the caller."""
        ...

    async def flush(self) -> None:
        """Wait until everything written so far is as durable as the policy promises
        and readable (the appends in flight are done); raise if that failed."""
        ...

    def watch_appends(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the event loop) whenever appended messages became
        readable, before the appends that wrote them return: a reader woken by it
        is one event-loop step ahead of one woken by ``append``'s caller. Returns
        the function that stops the calls."""
        ...

    async def read(self, from_offset: int, max_messages: int, max_bytes: int) -> list[Message]:
        """Messages from ``from_offset`` (clamped up to ``first_offset``) in offset order.

        Returns at least one message if any exists at or after ``from_offset``,
        even if it is larger than ``max_bytes``; an empty list at the end.
        """
        ...

    async def offset_for_timestamp(self, timestamp_ms: int) -> int:
        """The first offset whose message has ``timestamp_ms`` >= the given time
        (``next_offset`` if none)."""
        ...

    async def trim(self, before_offset: int) -> int:
        """Drop messages below ``before_offset`` (a store may keep a few more, whole
        segments at a time); return the new ``first_offset``."""
        ...

    async def enforce_retention(self, limits: RetentionLimits, now_ms: int) -> int:
        """Drop the oldest messages that break ``limits``; return the new ``first_offset``."""
        ...

    def stats(self) -> PartitionStats:
        """Counts and bounds of what the partition holds."""
        ...

    async def close(self) -> None:
        """Flush and release the partition's resources."""
        ...


class LogStore(Protocol):
    """Opens and deletes partition logs."""

    async def open_partition(self, namespace: str, stream: str, partition: int) -> PartitionLog:
        """Open (creating if missing, recovering if damaged) one partition's log."""
        ...

    async def delete_stream(self, namespace: str, stream: str) -> None:
        """Delete the logs of every partition of a stream (they must be closed first)."""
        ...

    async def close(self) -> None:
        """Close every open partition log."""
        ...


class MetadataStore(Protocol):
    """Small documents and cursor checkpoints, written atomically and durably."""

    async def put_document(self, kind: str, key: str, document: dict[str, Any]) -> None:
        """Create or replace the document ``(kind, key)``."""
        ...

    async def delete_document(self, kind: str, key: str) -> None:
        """Delete a document; deleting a missing one is not an error."""
        ...

    async def list_documents(self, kind: str) -> list[dict[str, Any]]:
        """Every document of ``kind``, in key order."""
        ...

    async def save_checkpoints(self, checkpoints: Sequence[tuple[str, bytes]]) -> None:
        """Durably store many ``(key, state)`` cursor checkpoints in one transaction."""
        ...

    async def load_checkpoint(self, key: str) -> bytes | None:
        """The last saved checkpoint of ``key``, or ``None``."""
        ...

    async def delete_checkpoints(self, key_prefix: str) -> None:
        """Delete every checkpoint whose key starts with ``key_prefix``."""
        ...

    async def close(self) -> None:
        """Flush and close."""
        ...


async def wait_for_append(log: PartitionLog, messages: Sequence[Message]) -> int:
    """``log.start_append(messages)`` awaited: the first offset once durable. A
    cancelled caller stops waiting; the append goes on."""
    waiter: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    first_offset = log.start_append(messages, partial(settle_waiter, waiter))
    error = await waiter
    if error is not None:
        raise error
    return first_offset


def settle_waiter(
    waiter: asyncio.Future[BaseException | None], error: BaseException | None
) -> None:
    """Tell a waiting append its outcome (unless it stopped waiting)."""
    if not waiter.done():
        waiter.set_result(error)


class AppendListeners:
    """The listeners of one log's :meth:`PartitionLog.watch_appends`."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def add(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Start calling ``listener``; returns the function that stops it."""
        self._listeners.append(listener)
        return lambda: self._remove(listener)

    def _remove(self, listener: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def tell(self) -> None:
        """Call every listener: appended messages became readable."""
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:  # a listener's bug must not fail the appends
                logger.exception("an append listener failed")
