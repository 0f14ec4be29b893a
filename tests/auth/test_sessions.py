"""Credential sessions: ended by the credential's principal id, or on their own when
the credential expires; a closed session is never ended."""

from __future__ import annotations

import asyncio

from relaymq.auth.principal import Principal, PrincipalKind
from relaymq.auth.sessions import EXPIRED, CredentialSessions


class Clock:
    """Milliseconds since the epoch, fixed by the test."""

    now_ms = 1_000_000

    def __call__(self) -> int:
        return self.now_ms


def principal(principal_id: str, expires_at_ms: int | None = None) -> Principal:
    """An API-key principal."""
    return Principal(principal_id, PrincipalKind.API_KEY, (), expires_at_ms)


async def test_ending_a_principal_ends_its_sessions_only() -> None:
    sessions = CredentialSessions(Clock())
    ended: list[tuple[str, str]] = []
    for name in ("a", "a", "b"):

        def end(reason: str, name: str = name) -> None:
            ended.append((name, reason))

        sessions.open(principal(f"key:{name}"), end)
    assert sessions.end("key:a", "revoked") == 2
    assert ended == [("a", "revoked"), ("a", "revoked")]
    assert sessions.count("key:a") == 0
    assert sessions.count("key:b") == 1
    assert sessions.end("key:a", "revoked") == 0


async def test_a_closed_session_is_not_ended() -> None:
    sessions = CredentialSessions(Clock())
    ended: list[str] = []
    session = sessions.open(principal("key:a"), ended.append)
    session.close()
    assert sessions.end("key:a", "revoked") == 0
    assert ended == []


async def test_a_session_ends_when_its_credential_expires() -> None:
    clock = Clock()
    sessions = CredentialSessions(clock)
    ended: list[str] = []
    sessions.open(principal("jwt:a", expires_at_ms=clock.now_ms + 50), ended.append)
    sessions.open(principal("jwt:b", expires_at_ms=clock.now_ms - 1), ended.append)  # already
    forever = sessions.open(principal("key:c"), ended.append)
    await asyncio.sleep(0.1)
    assert ended == [EXPIRED, EXPIRED]
    assert sessions.count("jwt:a") == sessions.count("jwt:b") == 0
    forever.close()


async def test_an_ended_or_closed_session_does_not_expire_later() -> None:
    clock = Clock()
    sessions = CredentialSessions(clock)
    ended: list[str] = []
    sessions.open(principal("key:a", expires_at_ms=clock.now_ms + 30), ended.append)
    sessions.end("key:a", "revoked")
    closed = sessions.open(principal("key:b", expires_at_ms=clock.now_ms + 30), ended.append)
    closed.close()
    await asyncio.sleep(0.08)
    assert ended == ["revoked"]
