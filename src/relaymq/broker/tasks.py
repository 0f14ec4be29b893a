"""Starting a task whose first step should not wait its turn.

Owns :func:`start_task`. ``create_task`` queues a new task's first step behind
every callback already ready on the event loop. From CPython 3.12 on a task can
run its first step at once, inside the call (``eager_start``); on 3.11
:func:`start_task` is a plain ``create_task``. A publish waiting for a duplicate id
in flight starts that way; the write of a publish itself runs in no task at all,
in the step that read its frame (``Broker.start_publish``), and its confirm is
sent from its future's callback (``api/websocket.py``). Only our own tasks start
eagerly: a loop-wide eager task factory also changes the order of third-party
tasks, and anyio's cancel scopes (Starlette's streaming responses) fail under it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

_Result = TypeVar("_Result")

EAGER_TASKS = sys.version_info >= (3, 12)


def start_task(coro: Coroutine[Any, Any, _Result]) -> asyncio.Task[_Result]:
    """A task running ``coro``, started at once (up to its first suspension) where
    Python can: its first step then runs before this call returns."""
    loop = asyncio.get_running_loop()
    if EAGER_TASKS:
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
    return loop.create_task(coro)
