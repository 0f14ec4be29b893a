"""The long-poll wake-up: notifications wake every waiter, cancellation always wins."""

from __future__ import annotations

import asyncio

import pytest

from relaymq.broker.signals import ChangeSignal


async def test_notify_wakes_every_waiter_before_the_timeout() -> None:
    signal = ChangeSignal()
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiters = [asyncio.create_task(signal.wait(10)) for _ in range(3)]
    await asyncio.sleep(0.01)
    signal.notify()
    await asyncio.gather(*waiters)
    assert loop.time() - started < 1


async def test_wait_returns_after_the_timeout_without_a_notify() -> None:
    signal = ChangeSignal()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await signal.wait(0.05)
    assert loop.time() - started >= 0.04


async def test_a_cancel_racing_a_notify_still_cancels() -> None:
    signal = ChangeSignal()
    waiter = asyncio.create_task(signal.wait(10))
    await asyncio.sleep(0.01)
    signal.notify()  # the waiter's future is resolved ...
    waiter.cancel()  # ... and the cancel arrives before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_a_notify_before_the_wait_is_kept_for_a_reader_that_took_the_version() -> None:
    signal = ChangeSignal()
    loop = asyncio.get_running_loop()
    version = signal.version
    signal.notify()  # lands while the reader is busy elsewhere, not yet waiting
    started = loop.time()
    await signal.wait(10, since=version)
    assert loop.time() - started < 1
    started = loop.time()
    await signal.wait(0.05, since=signal.version)  # nothing new: waits out the timeout
    assert loop.time() - started >= 0.04


async def test_each_waiter_times_out_at_its_own_deadline() -> None:
    # The waiters share one timer: a later deadline must not be cut short by an
    # earlier one, nor an earlier one held back by a later one set first.
    signal = ChangeSignal()
    loop = asyncio.get_running_loop()
    started = loop.time()
    woken: dict[str, float] = {}

    async def wait(name: str, timeout_seconds: float) -> None:
        await signal.wait(timeout_seconds)
        woken[name] = loop.time() - started

    waiters = [asyncio.create_task(wait("long", 0.2))]
    await asyncio.sleep(0.01)
    waiters.append(asyncio.create_task(wait("short", 0.05)))
    await asyncio.gather(*waiters)
    assert 0.05 <= woken["short"] < 0.15
    assert woken["long"] >= 0.19
    started = loop.time()
    await signal.wait(0.05)  # the timer is set again after the last one fired
    assert loop.time() - started >= 0.04


async def test_a_notified_waiter_leaves_the_timer_to_the_next_one() -> None:
    signal = ChangeSignal()
    loop = asyncio.get_running_loop()
    first = asyncio.create_task(signal.wait(0.05))
    await asyncio.sleep(0.01)
    signal.notify()
    await first
    started = loop.time()
    await signal.wait(0.1)  # the first wait's timer fires meanwhile, waking nobody early
    assert loop.time() - started >= 0.09
