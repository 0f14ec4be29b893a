"""The event loop the bench's clients run on.

uvloop where it is installed, as ``relaymq serve`` and the SDK's blocking client run;
``--event-loop asyncio`` measures what an application on asyncio's own loop sees. The
report says which one ran (``docs/performance.md``, finding 24, compares them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

EVENT_LOOPS = ("uvloop", "asyncio")


def default_event_loop() -> str:
    """``uvloop`` when it can be imported, else ``asyncio``."""
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvloop is not built for Windows
        return "asyncio"
    return "uvloop"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A factory of new event loops of kind ``name`` (one of :data:`EVENT_LOOPS`)."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ValueError("uvloop is not installed; use --event-loop asyncio") from None
        return uvloop.new_event_loop
    if name == "asyncio":
        return asyncio.new_event_loop
    raise ValueError(f"unknown event loop {name!r}; expected one of {', '.join(EVENT_LOOPS)}")
