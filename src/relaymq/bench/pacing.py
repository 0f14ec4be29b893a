"""When a paced producer sends: its schedule, and the timer that wakes it.

Owns :class:`Pacer` (message ``n`` is due ``n / rate`` seconds after the start),
the two ways of waiting for a due time (:data:`PACINGS`) and the sub-millisecond
timer behind the even one:

* ``even`` sleeps on a Linux ``timerfd`` watched by the event loop, so each
  message leaves at its own time: at 2,000 msg/s one message every 0.5 ms, each
  in its own frame, as OpenMessaging Benchmark's rate limiter sends them;
* ``coarse`` sleeps on the event loop's own timers, which are whole
  milliseconds: a producer sends what is due when it wakes, 3-4 messages a frame
  at 2,000 msg/s, which is easier on the broker (``docs/performance.md``,
  finding 27).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import time
from types import TracebackType

from relaymq.bench.histogram import LatencyRecorder

PACINGS = ("even", "coarse")
TIMER_GRANULARITY_SECONDS = 0.001  # uvloop's timer and asyncio's epoll timeout unit


def default_pacing() -> str:
    """``even`` where a sub-millisecond timer exists (Linux), else ``coarse``."""
    return "even" if sys.platform == "linux" else "coarse"


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _TimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


class SubMillisecondTimer:
    """A one-shot timer with nanosecond resolution on the running event loop.

    A ``timerfd`` (through ``ctypes``: ``os.timerfd_create`` is Python 3.13+)
    registered once with the loop as a reader; :meth:`sleep_ns` arms it and waits
    for it to become readable. Costs two system calls per sleep and never spins.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        if sys.platform != "linux":
            raise ValueError("--pacing even needs Linux (timerfd); use --pacing coarse")
        self._libc = ctypes.CDLL(None, use_errno=True)
        # CLOCK_MONOTONIC is time.perf_counter's clock; TFD_* flags equal the O_* ones.
        flags = os.O_NONBLOCK | os.O_CLOEXEC
        descriptor = self._libc.timerfd_create(time.CLOCK_MONOTONIC, flags)
        if descriptor < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._descriptor: int = descriptor
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        loop.add_reader(descriptor, self._expired)

    async def sleep_ns(self, delay_ns: int) -> None:
        """Sleep ``delay_ns`` nanoseconds (at least 1)."""
        seconds, nanoseconds = divmod(max(delay_ns, 1), 1_000_000_000)
        spec = _TimerSpec(_TimeSpec(0, 0), _TimeSpec(seconds, nanoseconds))
        if self._libc.timerfd_settime(self._descriptor, 0, ctypes.byref(spec), None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _expired(self) -> None:
        try:
            os.read(self._descriptor, 8)  # the expiration count; reading re-arms readiness
        except BlockingIOError:
            return
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        """Stop watching the timer and close it."""
        self._loop.remove_reader(self._descriptor)
        os.close(self._descriptor)


class Pacer:
    """The schedule of one producer, and the send time stamped into each payload.

    Without a rate every message is due at once. With one, message ``sequence`` is
    due ``sequence / rate`` seconds after the producer started. A payload carries
    the time it was handed to the client, not the time it was due; how late that
    is goes apart as *schedule lag*, so a stalled publisher still shows. Use it as
    a context manager inside the running loop (the even timer holds a descriptor).
    """

    def __init__(
        self, rate_per_second: float | None, schedule_lag: LatencyRecorder, pacing: str
    ) -> None:
        if pacing not in PACINGS:
            raise ValueError(f"unknown pacing {pacing!r}; expected one of {', '.join(PACINGS)}")
        self.rate_per_second = rate_per_second
        self.schedule_lag = schedule_lag
        self.started_ns = time.perf_counter_ns()
        self._timer: SubMillisecondTimer | None = None
        if rate_per_second is not None and pacing == "even":
            self._timer = SubMillisecondTimer(asyncio.get_running_loop())

    def __enter__(self) -> Pacer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def due_ns(self, sequence: int) -> int | None:
        """When message ``sequence`` is due (``time.perf_counter_ns``); ``None`` unpaced."""
        if self.rate_per_second is None:
            return None
        return self.started_ns + int(sequence * 1e9 / self.rate_per_second)

    def is_due(self, sequence: int) -> bool:
        """Whether message ``sequence`` may be sent now."""
        due = self.due_ns(sequence)
        return due is None or due <= time.perf_counter_ns()

    async def wait(self, sequence: int) -> None:
        """Sleep until message ``sequence`` is due."""
        due = self.due_ns(sequence)
        if due is None:
            return
        # Never before it is due (its schedule lag would be negative), and never by
        # spinning: uvloop rounds a timer under 0.5 ms down to 0 ms, and a pacer that
        # retried at once would keep a CPU busy that the broker under test needs.
        while (delay_ns := due - time.perf_counter_ns()) > 0:
            if self._timer is not None:
                await self._timer.sleep_ns(delay_ns)
            else:
                await asyncio.sleep(max(delay_ns / 1e9, TIMER_GRANULARITY_SECONDS))

    def stamp(self, sequence: int) -> int:
        """The ``sent_ns`` of message ``sequence``: now, as it is handed to the client.
        Records how far behind its schedule that is, in microseconds (paced only)."""
        sent_ns = time.perf_counter_ns()
        due = self.due_ns(sequence)
        if due is not None:
            self.schedule_lag.record((sent_ns - due) // 1000)
        return sent_ns
