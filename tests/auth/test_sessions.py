"""Credential sessions: ended by the credential's principal id, or on their own when
the credential expires; a closed session is never ended."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relaymq.auth.keys import REVOKED
from relaymq.auth.principal import Principal, PrincipalKind
from relaymq.auth.security import Security
from relaymq.auth.sessions import EXPIRED, MAX_TIMER_MS, CredentialSessions
from relaymq.auth.store import AuthStore
from relaymq.config import Settings


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
    clock.now_ms += 50  # the wall clock when jwt:a's timer fires
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
    clock.now_ms += 30  # both would have expired by now
    await asyncio.sleep(0.08)
    assert ended == ["revoked"]


async def test_a_far_expiry_is_looked_at_again_and_a_huge_one_is_bounded() -> None:
    clock = Clock()
    sessions = CredentialSessions(clock)
    ended: list[str] = []
    # exp may be anything a token claims; the timer never goes past MAX_TIMER_MS.
    huge = sessions.open(principal("jwt:huge", expires_at_ms=10**400), ended.append)
    assert huge.timer is not None
    assert huge.timer.when() - asyncio.get_running_loop().time() <= MAX_TIMER_MS / 1000
    huge.close()
    # A timer that fires before the (wall-clock) expiry sets itself again.
    sessions.open(principal("key:a", expires_at_ms=clock.now_ms + 10), ended.append)
    clock.now_ms -= 1_000  # the wall clock stepped back: not expired yet when it fires
    await asyncio.sleep(0.05)
    assert ended == []
    clock.now_ms += 1_010  # expired when the second timer (1 s + 10 ms) fires
    await asyncio.sleep(1.1)
    assert ended == [EXPIRED]


async def test_finishing_a_session_ends_it_once_and_a_failing_end_spares_the_others() -> None:
    sessions = CredentialSessions(Clock())
    ended: list[str] = []
    session = sessions.open(principal("key:a"), ended.append)
    session.finish("revoked")
    session.finish("revoked")
    assert ended == ["revoked"]

    def broken(reason: str) -> None:
        raise RuntimeError(reason)

    sessions.open(principal("key:b"), broken)
    sessions.open(principal("key:b"), ended.append)
    assert sessions.end("key:b", "revoked") == 2
    assert ended == ["revoked", "revoked"]


async def test_a_key_changed_before_its_connection_registered_ends_it_at_once(
    tmp_path: Path,
) -> None:
    security = Security(Settings(data_dir=tmp_path), AuthStore(tmp_path / "auth.db"))
    try:
        key, token = await security.keys.create("acme", "ci", [], "test")
        _, other_token = await security.keys.create("acme", "other", [], "test")
        authenticated = await security.authenticate(token)
        await security.keys.revoke("acme", key.key_id)  # before the connection registers
        ended: list[str] = []
        security.open_session(authenticated, ended.append)
        security.open_session(await security.authenticate(other_token), ended.append)
        await asyncio.sleep(0)
        assert ended == [REVOKED]
        assert security.sessions.count(authenticated.id) == 0
    finally:
        security.close()
