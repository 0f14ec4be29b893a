"""RelayMQ: durable queues, pub/sub topics and replayable event streams behind Message APIs.

``import relaymq`` stays light: the SDK's clients (:class:`relaymq.AsyncClient`,
:class:`relaymq.Client`, :class:`relaymq.RetryPolicy`) are imported on first
use, and nothing of the server is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {"AsyncClient", "Client", "RetryPolicy", "Message", "PublishResult"}

if TYPE_CHECKING:
    from relaymq.client import AsyncClient, Client, Message, PublishResult, RetryPolicy

__all__ = ["AsyncClient", "Client", "Message", "PublishResult", "RetryPolicy", "__version__"]


def __getattr__(name: str) -> Any:
    """Import the SDK's public names on first access."""
    if name in _LAZY:
        from relaymq import client

        return getattr(client, name)
    raise AttributeError(f"module 'relaymq' has no attribute {name!r}")
