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
import logging
from collections.abc import Callable
from dataclasses import dataclass

from relaymq.auth.principal import Principal

logger = logging.getLogger("relaymq.auth")

EXPIRED = "the credential expired"
# The longest a timer is set for; past it the expiry is looked at again. Bounds
# the timer (a token may claim any exp) and follows wall-clock steps.
MAX_TIMER_MS = 3_600_000


@dataclass(eq=False)
class CredentialSession:
    """One open connection's hold on its credential; :meth:`close` when the
    connection ends."""

    sessions: CredentialSessions
    principal_id: str
    number: int
    end: Callable[[str], None]
    expires_at_ms: int | None
    timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        """Forget the connection (it ended on its own)."""
        self.sessions.forget(self)

    def finish(self, reason: str) -> None:
        """End this connection now (its credential changed before it registered)."""
        if self.sessions.forget(self):
            self.sessions.tell(self, reason)


class CredentialSessions:
    """The open sessions of each principal (by :attr:`Principal.id`)."""

    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self._clock_ms = clock_ms
        self._by_principal: dict[str, dict[int, CredentialSession]] = {}
        self._numbers = itertools.count()

    def open(self, principal: Principal, end: Callable[[str], None]) -> CredentialSession:
        """Register a connection of ``principal`` (on the running loop); ``end(reason)``
        is called at most once, when the credential no longer holds."""
        session = CredentialSession(
            self, principal.id, next(self._numbers), end, principal.expires_at_ms
        )
        self._arm(session)
        self._by_principal.setdefault(principal.id, {})[session.number] = session
        return session

    def forget(self, session: CredentialSession) -> bool:
        """Drop ``session`` without ending it; whether it was still open."""
        if session.timer is not None:
            session.timer.cancel()
        sessions = self._by_principal.get(session.principal_id)
        if sessions is None or sessions.pop(session.number, None) is None:
            return False
        if not sessions:
            del self._by_principal[session.principal_id]
        return True

    def end(self, principal_id: str, reason: str) -> int:
        """End every open session of ``principal_id``; how many there were."""
        sessions = self._by_principal.pop(principal_id, {})
        for session in sessions.values():
            if session.timer is not None:
                session.timer.cancel()
            self.tell(session, reason)
        return len(sessions)

    def count(self, principal_id: str) -> int:
        """How many sessions ``principal_id`` has open."""
        return len(self._by_principal.get(principal_id, ()))

    def tell(self, session: CredentialSession, reason: str) -> None:
        """Call the session's ``end``; a failing one is logged, not raised, so the
        others still end."""
        try:
            session.end(reason)
        except Exception:
            logger.exception("ending a connection of %s failed", session.principal_id)

    def _arm(self, session: CredentialSession) -> None:
        if session.expires_at_ms is None:
            return
        delay_ms = min(max(session.expires_at_ms - self._clock_ms(), 0), MAX_TIMER_MS)
        loop = asyncio.get_running_loop()
        session.timer = loop.call_later(delay_ms / 1000, self._expire, session)

    def _expire(self, session: CredentialSession) -> None:
        assert session.expires_at_ms is not None
        if self._clock_ms() < session.expires_at_ms:
            self._arm(session)  # a long lifetime, or the wall clock moved
        elif self.forget(session):
            self.tell(session, EXPIRED)
