"""When a paced producer sends: its schedule, and the timer that wakes it.

Owns :class:`Pacer` (message ``n`` is due ``n / rate`` seconds after the start),
the two ways of waiting for a due time (:data:`PACINGS`) and the sub-millisecond
ticker behind the even one:

* ``even`` sleeps on a periodic Linux ``timerfd`` watched by the event loop, armed
  once for the producer's schedule, so each message leaves at its own time: at
  2,000 msg/s one message every 0.5 ms, each in its own frame, as OpenMessaging
  Benchmark's rate limiter sends them;
* ``coarse`` sleeps on the event loop's own timers, which are whole
  milliseconds: a producer sends what is due when it wakes, 3-4 messages a frame
  at 2,000 msg/s, which is easier on the broker (``docs/performance.md``,
  findings 27 and 28).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import sys
import time
from types import TracebackType

from relaymq.bench.histogram import LatencyRecorder

PACINGS = ("even", "coarse")
TIMER_GRANULARITY_SECONDS = 0.001  # uvloop's timer and asyncio's epoll timeout unit
_TFD_TIMER_ABSTIME = 1


def default_pacing() -> str:
    """``even`` where a sub-millisecond timer exists (Linux), else ``coarse``."""
    return "even" if sys.platform == "linux" else "coarse"


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _TimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library's ``timerfd_*`` calls (``os.timerfd_create`` is Python 3.13+)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.timerfd_create.restype = ctypes.c_int
    libc.timerfd_settime.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(_TimerSpec),
        ctypes.POINTER(_TimerSpec),
    ]
    libc.timerfd_settime.restype = ctypes.c_int
    return libc


class SubMillisecondTicker:
    """A periodic timer with nanosecond resolution on the running event loop.

    A ``timerfd`` on ``CLOCK_MONOTONIC`` (the clock of ``time.perf_counter_ns``)
    registered once with the loop as a reader. :meth:`tick_at` waits for a time on
    the schedule (a multiple of ``interval_ns`` from any tick); the first call arms
    the timer there, periodic, so a sleeper that keeps up costs one ``read`` per
    tick. A tick nobody waits for disarms the timer: a producer held up elsewhere
    (backpressure) is not woken at its rate for nothing, and the next
    :meth:`tick_at` arms it again. It never spins. One sleeper at a time.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_ns: int) -> None:
        if sys.platform != "linux":
            raise ValueError("a sub-millisecond timer needs Linux's timerfd")
        # TFD_NONBLOCK and TFD_CLOEXEC are defined as O_NONBLOCK and O_CLOEXEC.
        descriptor = _libc().timerfd_create(time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if descriptor < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        try:
            loop.add_reader(descriptor, self._expired)
        except BaseException:
            os.close(descriptor)
            raise
        self._descriptor = descriptor
        self._loop = loop
        self._interval_ns = max(interval_ns, 1)
        self._waiter: asyncio.Future[None] | None = None
        self.armed = False  # whether the kernel timer runs

    async def tick_at(self, due_ns: int) -> None:
        """Sleep until the tick at ``due_ns`` (``time.perf_counter_ns``), or an
        earlier one of the schedule the timer already runs on."""
        if self._waiter is not None:
            raise RuntimeError("the timer already has a sleeper")
        if not self.armed:
            self._arm(_timespec(self._interval_ns), _timespec(max(due_ns, 1)))
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _arm(self, interval: _TimeSpec, first: _TimeSpec) -> None:
        """Set the kernel timer (a zero ``first`` disarms it)."""
        spec = _TimerSpec(interval, first)
        if _libc().timerfd_settime(self._descriptor, _TFD_TIMER_ABSTIME, spec, None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self.armed = bool(first.tv_sec or first.tv_nsec)

    def _expired(self) -> None:
        try:
            os.read(self._descriptor, 8)  # the expiration count; reading clears readiness
        except BlockingIOError:
            return
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        elif self.armed:
            self._arm(_TimeSpec(0, 0), _TimeSpec(0, 0))

    def close(self) -> None:
        """Stop watching the timer and close it (again: nothing)."""
        if self._descriptor < 0:
            return
        self._loop.remove_reader(self._descriptor)
        os.close(self._descriptor)
        self._descriptor = -1


def _timespec(nanoseconds: int) -> _TimeSpec:
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    return _TimeSpec(seconds, rest)


class Pacer:
    """The schedule of one producer, and the send time stamped into each payload.

    Without a rate every message is due at once. With one, message ``sequence`` is
    due ``sequence / rate`` seconds after the producer started. A payload carries
    the time it was handed to the client, not the time it was due; how late that
    is goes apart as *schedule lag*, so a stalled publisher still shows. Used as a
    context manager inside the running loop: the even pacer's timer lives in it.
    """

    def __init__(
        self, rate_per_second: float | None, schedule_lag: LatencyRecorder, pacing: str | None
    ) -> None:
        if rate_per_second is not None and pacing not in PACINGS:
            raise ValueError(f"unknown pacing {pacing!r}; expected one of {', '.join(PACINGS)}")
        self.rate_per_second = rate_per_second
        self.schedule_lag = schedule_lag
        self.pacing = pacing
        self.started_ns = time.perf_counter_ns()
        # Whole nanoseconds, so the even pacer's ticks fall exactly on the due times (the
        # rate is then 1e9 / round(1e9 / rate): 0.01% off at 300,000 msg/s).
        self.interval_ns = round(1e9 / rate_per_second) if rate_per_second else 0
        self._timer: SubMillisecondTicker | None = None

    def __enter__(self) -> Pacer:
        if self.rate_per_second is not None and self.pacing == "even":
            self._timer = SubMillisecondTicker(asyncio.get_running_loop(), self.interval_ns)
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
        return self.started_ns + sequence * self.interval_ns

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
                await self._timer.tick_at(due)
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
