"""Wake-ups for long-polling readers.

A :class:`ChangeSignal` is notified whenever something a waiting reader could
want may have appeared (an append, a nack, a released lease). Readers re-check
their condition after every wake-up, so spurious wake-ups are harmless and a
notification never needs to say what changed.
"""

from __future__ import annotations

import asyncio


class ChangeSignal:
    """A broadcast wake-up: :meth:`notify` wakes every task currently in :meth:`wait`.

    :attr:`version` counts the notifications. A reader that looks for work across
    suspension points (a file read, a lock) takes the version before it looks and
    passes it to :meth:`wait`, which then returns at once if a notification came
    in between: one that landed while the reader was not yet waiting is not lost.
    """

    __slots__ = ("_waiters", "version")

    def __init__(self) -> None:
        self._waiters: dict[asyncio.Future[None], None] = {}
        self.version = 0

    async def wait(self, timeout_seconds: float, since: int | None = None) -> None:
        """Return at the next :meth:`notify`, or after ``timeout_seconds``; at once
        if ``since`` is given and a notification came after that :attr:`version`.

        A cancellation of the waiting task always propagates, even when it races
        with a notification.
        """
        if timeout_seconds <= 0 or (since is not None and since != self.version):
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters[waiter] = None
        # A plain timer that resolves the waiter: cheaper than ``asyncio.timeout`` on a
        # path every caught-up consumer takes once per message.
        timer = loop.call_later(timeout_seconds, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if not waiter.done():
                waiter.cancel()
            self._waiters.pop(waiter, None)

    def notify(self) -> None:
        """Wake every waiting task."""
        self.version += 1
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _wake(waiter: asyncio.Future[None]) -> None:
    """The timeout of a wait: the same as a notification."""
    if not waiter.done():
        waiter.set_result(None)
