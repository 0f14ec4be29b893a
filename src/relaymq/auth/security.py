"""The security services of one server, built from its settings: who is calling
(API keys, JWTs, anonymous mode), the long-lived connections each credential holds
open, quotas, the audit log, and the first admin key.

:class:`Security` is created by the server next to the broker and handed to
the adapters (``app.state.security``); authorization itself is
:mod:`relaymq.auth.policy`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from relaymq.auth.audit import AuditLog
from relaymq.auth.jwt import JwtSettings, JwtVerifier
from relaymq.auth.keys import ApiKeys, looks_like_key
from relaymq.auth.principal import ALL_NAMESPACES, ANONYMOUS, Grant, Principal, Role
from relaymq.auth.quotas import Quota, Quotas
from relaymq.auth.sessions import CredentialSession, CredentialSessions
from relaymq.auth.store import AuthStore
from relaymq.errors import Unauthenticated

if TYPE_CHECKING:
    from relaymq.config import Settings

BOOTSTRAP_KEY_NAME = "admin"
SERVER_ACTOR = "server"


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def jwt_settings(settings: Settings) -> JwtSettings:
    """The JWT part of the server settings."""
    secret = settings.jwt_hs256_secret
    return JwtSettings(
        hs256_secret=secret.get_secret_value().encode() if secret else None,
        jwks_file=settings.jwt_jwks_file,
        jwks_url=settings.jwt_jwks_url,
        jwks_cache_seconds=settings.jwt_jwks_cache_seconds,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        grants_claim=settings.jwt_grants_claim,
        leeway_seconds=settings.jwt_leeway_seconds,
    )


def default_quota(settings: Settings) -> Quota:
    """The quota of a namespace without overrides."""
    return Quota(
        max_streams=settings.quota_max_streams,
        max_stored_bytes=settings.quota_max_stored_bytes,
        publish_messages_per_second=settings.quota_publish_messages_per_second,
        publish_bytes_per_second=settings.quota_publish_bytes_per_second,
        max_connections=settings.quota_max_connections,
    )


class Security:
    """Authentication, keys, quotas and the audit log of one server."""

    def __init__(
        self, settings: Settings, store: AuthStore, clock_ms: Callable[[], int] = wall_clock_ms
    ) -> None:
        self.settings = settings
        self.store = store
        self.anonymous_allowed = settings.auth_mode == "anonymous"
        # Open WebSockets and SSE streams end with their credential (revoked, new
        # grants, expired): they were authenticated only when they opened.
        self.sessions = CredentialSessions(clock_ms)
        self.keys = ApiKeys(store, clock_ms, self.sessions.end)
        self.jwt = JwtVerifier(jwt_settings(settings))
        self.quotas = Quotas(default_quota(settings), store)
        self.audit = AuditLog.in_data_dir(settings.data_dir)

    @classmethod
    def open(cls, settings: Settings) -> Security:
        """The security services over the data directory's auth store."""
        return cls(settings, AuthStore.in_data_dir(settings.data_dir))

    def close(self) -> None:
        """Close the store and the audit log."""
        self.audit.close()
        self.store.close()

    async def authenticate(self, token: str | None) -> Principal:
        """The principal a bearer token (or its absence) stands for."""
        if token is None:
            if self.anonymous_allowed:
                return ANONYMOUS
            raise Unauthenticated("credentials required: send Authorization: Bearer <token>")
        if looks_like_key(token):
            return self.keys.authenticate(token)
        return await self.jwt.verify(token)

    def open_session(self, principal: Principal, end: Callable[[str], None]) -> CredentialSession:
        """Register a long-lived connection of ``principal`` (see
        :mod:`relaymq.auth.sessions`). A key revoked or regranted between the
        connection's authentication and this call ends it at once."""
        session = self.sessions.open(principal, end)
        outdated = self.keys.outdated(principal)
        if outdated is not None:
            asyncio.get_running_loop().call_soon(session.finish, outdated)
        return session

    async def bootstrap(self) -> str | None:
        """Install ``admin_key`` if configured and new; else, on first start (no
        keys at all), mint an admin key. Returns a minted token, to be shown once."""
        configured = self.settings.admin_key
        grants = [Grant(ALL_NAMESPACES, Role.ADMIN)]
        if configured is not None:
            token = configured.get_secret_value()
            key_id, _ = self.keys.split(token)
            if key_id not in self.keys.by_id:
                await self.keys.create(
                    ALL_NAMESPACES, BOOTSTRAP_KEY_NAME, grants, SERVER_ACTOR, token=token
                )
                self.audit.record(SERVER_ACTOR, "install_admin_key", "ok", target=key_id)
            return None
        if self.keys.by_id:
            return None
        key, token = await self.keys.create(
            ALL_NAMESPACES, BOOTSTRAP_KEY_NAME, grants, SERVER_ACTOR
        )
        self.audit.record(SERVER_ACTOR, "bootstrap_admin_key", "ok", target=key.key_id)
        return token
