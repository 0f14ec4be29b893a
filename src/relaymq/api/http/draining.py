"""Long-polls: released as soon as the server starts shutting down, and ended
when the credential that made them no longer holds.

A long-poll may wait up to ``max_wait_ms``; without this, a shutdown would sit
out every open long-poll (or cancel it into an error), and a revoked key would
keep waiting (and leasing) until it ran out. The server calls
:func:`begin_draining` when shutdown begins, and every long-poll runs through
:func:`unless_draining`, which then returns an empty result at once. It raises
:class:`~relaymq.errors.Unauthenticated` when the caller's credential is revoked
or expires meanwhile, and returns an empty result when the caller's key gets
new grants, so the next poll runs with them (:mod:`relaymq.auth.sessions`).
Other long-lived responses (SSE) can wait on ``app.state.draining`` the same way.

Cancelling a broker ``fetch`` or ``read_stream`` is safe: they lease or read
nothing across an ``await`` they can be cancelled at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import FastAPI, Request

from relaymq.api.http.auth import principal_of, security_of
from relaymq.auth.keys import GRANTS_CHANGED
from relaymq.errors import Unauthenticated

ItemT = TypeVar("ItemT")


def install_draining(app: FastAPI) -> None:
    """Give the app its draining event (``app.state.draining``), not yet set."""
    app.state.draining = asyncio.Event()


def begin_draining(app: FastAPI) -> None:
    """Shutdown has begun: release every long-poll now."""
    app.state.draining.set()


async def unless_draining(
    request: Request, wait_ms: int, long_poll: Coroutine[Any, Any, list[ItemT]]
) -> list[ItemT]:
    """Run a long-poll; if the server starts draining first, cancel it and return ``[]``.
    If the caller's credential ends first, cancel it too: a revoked or expired one
    raises ``Unauthenticated``; new grants return ``[]``, so the caller's next poll is
    authorized with them (a 401 would tell a client its credential is gone)."""
    draining: asyncio.Event = request.app.state.draining
    if wait_ms <= 0:
        return await long_poll
    if draining.is_set():
        long_poll.close()
        return []
    ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def end(reason: str) -> None:
        if not ended.done():
            ended.set_result(reason)

    try:
        session = security_of(request).open_session(principal_of(request), end)
    except BaseException:
        long_poll.close()
        raise
    poll = asyncio.ensure_future(long_poll)
    drained = asyncio.ensure_future(draining.wait())
    try:
        await asyncio.wait((poll, drained, ended), return_when=asyncio.FIRST_COMPLETED)
    finally:
        session.close()
        drained.cancel()
        finished = poll.done()
        if not finished:
            poll.cancel()
    if finished:
        return poll.result()
    if ended.done() and ended.result() != GRANTS_CHANGED:
        raise Unauthenticated(ended.result())
    return []
