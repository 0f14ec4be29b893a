"""Wake-ups for long-polling readers.

A :class:`ChangeSignal` is notified whenever something a waiting reader could
want may have appeared (an append, a nack, a released lease). Readers re-check
their condition after every wake-up, so spurious wake-ups are harmless and a
notification never needs to say what changed.
"""

from __future__ import annotations

import asyncio

# How much earlier than its deadline the timer may wake a waiter: uvloop's clock and
# timers count whole milliseconds, so a timer can fire just short of a deadline; waking
# such a waiter then beats re-arming for a fraction of a millisecond, again and again.
TIMER_RESOLUTION_SECONDS = 0.001


class ChangeSignal:
    """A broadcast wake-up: :meth:`notify` wakes every task currently in :meth:`wait`.

    :attr:`version` counts the notifications. A reader that looks for work across
    suspension points (a file read, a lock) takes the version before it looks and
    passes it to :meth:`wait`, which then returns at once if a notification came
    in between: one that landed while the reader was not yet waiting is not lost.

    Timeouts share one timer, set for the earliest deadline and re-armed from its
    own callback: a reader woken by a notification long before its timeout (the
    common case) leaves the timer alone, where a timer of its own would be created
    and cancelled on every wait.
    """

    __slots__ = ("_loop", "_timer", "_timer_deadline", "_waiters", "version")

    def __init__(self) -> None:
        self._waiters: dict[asyncio.Future[None], float] = {}  # waiter -> deadline
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = 0.0  # when the timer fires (loop time)
        self.version = 0

    async def wait(self, timeout_seconds: float, since: int | None = None) -> None:
        """Return at the next :meth:`notify`, or after ``timeout_seconds`` (up to
        :data:`TIMER_RESOLUTION_SECONDS` early: callers look again before they act); at
        once if ``since`` is given and a notification came after that :attr:`version`.
        A signal's waiters share one event loop (one broker's).

        A cancellation of the waiting task always propagates, even when it races
        with a notification.
        """
        if timeout_seconds <= 0 or (since is not None and since != self.version):
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        deadline = loop.time() + timeout_seconds
        self._waiters[waiter] = deadline
        if self._timer is None or deadline < self._timer_deadline or loop is not self._loop:
            self._arm(loop, deadline)
        try:
            await waiter
        finally:
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

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Set the timer for ``deadline`` (loop time), replacing the one set."""
        if self._timer is not None:
            self._timer.cancel()
        self._loop = loop
        self._timer = loop.call_at(deadline, self._time_out)
        self._timer_deadline = deadline

    def _time_out(self) -> None:
        """The timer: wake the waiters whose timeout passed (as a notification would),
        and set the timer again for the earliest deadline left."""
        self._timer = None
        loop = self._loop
        assert loop is not None
        due = loop.time() + TIMER_RESOLUTION_SECONDS
        next_deadline: float | None = None
        for waiter, deadline in list(self._waiters.items()):
            if deadline <= due:
                del self._waiters[waiter]
                if not waiter.done():
                    waiter.set_result(None)
            elif next_deadline is None or deadline < next_deadline:
                next_deadline = deadline
        if next_deadline is not None:
            self._arm(loop, next_deadline)
