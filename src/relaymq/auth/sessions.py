"""Long-lived connections by the credential that opened them.

Owns :class:`CredentialSessions`. A WebSocket or an SSE stream is authenticated
once, when it opens, and may stay open for days; without this it would outlive
its credential. Each such connection opens a session here with a callback that
ends it; the session ends when the API key is revoked or its grants change (the
client reconnects and is authenticated again, with the new grants or not at
all), and when the key or the JWT expires (JWTs at ``exp`` plus the verifier's
leeway, as they are accepted until then).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass

from relaymq.auth.principal import Principal

EXPIRED = "the credential expired"


@dataclass(eq=False)
class CredentialSession:
    """One open connection's hold on its credential; :meth:`close` when the
    connection ends."""

    sessions: CredentialSessions
    principal_id: str
    number: int
    end: Callable[[str], None]
    expiry: asyncio.TimerHandle | None = None

    def close(self) -> None:
        """Forget the connection (it ended on its own)."""
        if self.expiry is not None:
            self.expiry.cancel()
        self.sessions.forget(self)


class CredentialSessions:
    """The open sessions of each principal (by :attr:`Principal.id`)."""

    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self._clock_ms = clock_ms
        self._by_principal: dict[str, dict[int, CredentialSession]] = {}
        self._numbers = itertools.count()

    def open(self, principal: Principal, end: Callable[[str], None]) -> CredentialSession:
        """Register a connection of ``principal`` (on the running loop); ``end(reason)``
        is called at most once, when the credential no longer holds."""
        session = CredentialSession(self, principal.id, next(self._numbers), end)
        self._by_principal.setdefault(principal.id, {})[session.number] = session
        if principal.expires_at_ms is not None:
            delay_seconds = max(principal.expires_at_ms - self._clock_ms(), 0) / 1000
            loop = asyncio.get_running_loop()
            session.expiry = loop.call_later(delay_seconds, self._expire, session)
        return session

    def forget(self, session: CredentialSession) -> None:
        """Drop ``session`` without ending it."""
        sessions = self._by_principal.get(session.principal_id)
        if sessions is not None:
            sessions.pop(session.number, None)
            if not sessions:
                del self._by_principal[session.principal_id]

    def end(self, principal_id: str, reason: str) -> int:
        """End every open session of ``principal_id``; how many there were."""
        sessions = self._by_principal.pop(principal_id, {})
        for session in sessions.values():
            if session.expiry is not None:
                session.expiry.cancel()
            session.end(reason)
        return len(sessions)

    def count(self, principal_id: str) -> int:
        """How many sessions ``principal_id`` has open."""
        return len(self._by_principal.get(principal_id, ()))

    def _expire(self, session: CredentialSession) -> None:
        self.forget(session)
        session.end(EXPIRED)
