"""API keys: minting, hashing, verifying, listing, revoking.

A key is shown to its creator once, as ``rmq_<key id>_<secret>``: 16 hex
characters that find the record, then 43 characters of a 256-bit random
secret. The server keeps only a per-key random salt and
``HMAC-SHA256(salt, secret)`` (a slow KDF buys nothing for a secret with 256
bits of entropy) and compares digests in constant time. A key belongs to a
namespace (``*``: a server-wide key), may expire, and once revoked never
authenticates again. Every change is written through :class:`AuthStore`
before it takes effect in memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relaymq.auth.principal import Grant, Principal, PrincipalKind
from relaymq.errors import InvalidArgument, KeyNotFound, TooManyResources, Unauthenticated

if TYPE_CHECKING:
    from relaymq.auth.store import AuthStore

KEY_PREFIX = "rmq_"
KEY_ID_BYTES = 8
SECRET_BYTES = 32
SALT_BYTES = 16
MAX_KEYS = 100_000
TOKEN_PATTERN = re.compile(r"rmq_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_DUMMY_SALT = secrets.token_bytes(SALT_BYTES)
REVOKED = "the API key was revoked"
GRANTS_CHANGED = "the API key's grants changed"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: everything but its secret."""

    key_id: str
    namespace: str  # "*" for a server-wide key
    name: str
    salt: bytes
    digest: bytes
    grants: tuple[Grant, ...]
    created_ms: int
    created_by: str
    expires_at_ms: int | None = None
    revoked_at_ms: int | None = None

    def is_active(self, now_ms: int) -> bool:
        """Neither revoked nor expired."""
        if self.revoked_at_ms is not None:
            return False
        return self.expires_at_ms is None or now_ms < self.expires_at_ms

    def principal(self) -> Principal:
        """The identity this key authenticates as."""
        return Principal(
            f"key:{self.key_id}", PrincipalKind.API_KEY, self.grants, self.expires_at_ms
        )

    def to_public_dict(self) -> dict[str, Any]:
        """The key as the API shows it (never the salt or digest)."""
        return {
            "id": self.key_id,
            "namespace": self.namespace,
            "name": self.name,
            "grants": [grant.to_dict() for grant in self.grants],
            "created_ms": self.created_ms,
            "created_by": self.created_by,
            "expires_at_ms": self.expires_at_ms,
            "revoked_at_ms": self.revoked_at_ms,
        }


def secret_digest(salt: bytes, secret: str) -> bytes:
    """``HMAC-SHA256(salt, secret)``."""
    return hmac.new(salt, secret.encode("ascii"), hashlib.sha256).digest()


def mint_token() -> tuple[str, str, str]:
    """A fresh ``(token, key_id, secret)``."""
    key_id = secrets.token_hex(KEY_ID_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return f"{KEY_PREFIX}{key_id}_{secret}", key_id, secret


def parse_token(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else ``None``."""
    match = TOKEN_PATTERN.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


def looks_like_key(token: str) -> bool:
    """Whether a bearer token is meant as an API key (rather than a JWT)."""
    return token.startswith(KEY_PREFIX)


class ApiKeys:
    """Every API key, indexed by id in memory and persisted in the auth store."""

    def __init__(
        self,
        store: AuthStore,
        clock_ms: Callable[[], int],
        changed: Callable[[str, str], None] = lambda principal_id, reason: None,
    ) -> None:
        self.store = store
        self.clock_ms = clock_ms
        self.changed = changed  # told (principal id, reason) after a revoke or new grants
        # One change of a key at a time: a revoke racing a grant change must not be
        # overwritten by the other's save.
        self._changing = asyncio.Lock()
        self.by_id: dict[str, ApiKey] = {key.key_id: key for key in store.load_keys()}

    # -- authentication --------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal:
        """The principal of a valid, active key; :class:`Unauthenticated` otherwise
        (one message for every reason, so a caller learns nothing from it)."""
        parsed = parse_token(token)
        key = self.by_id.get(parsed[0]) if parsed else None
        salt = key.salt if key else _DUMMY_SALT
        expected = key.digest if key else b"\0" * 32
        presented = secret_digest(salt, parsed[1] if parsed else "")
        if not hmac.compare_digest(presented, expected) or key is None:
            raise invalid_credentials()
        if not key.is_active(self.clock_ms()):
            raise invalid_credentials()
        return key.principal()

    # -- administration --------------------------------------------------------------------

    async def create(
        self,
        namespace: str,
        name: str,
        grants: Sequence[Grant],
        created_by: str,
        expires_at_ms: int | None = None,
        token: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Mint (or, given ``token``, install) a key; returns it and its token,
        which is never available again."""
        if len(self.by_id) >= MAX_KEYS:
            raise TooManyResources(f"at most {MAX_KEYS} API keys", limit="max_keys")
        key_id, secret = self.split(token) if token else mint_token()[1:]
        token = token or f"{KEY_PREFIX}{key_id}_{secret}"
        salt = secrets.token_bytes(SALT_BYTES)
        key = ApiKey(
            key_id=key_id,
            namespace=namespace,
            name=name,
            salt=salt,
            digest=secret_digest(salt, secret),
            grants=tuple(grants),
            created_ms=self.clock_ms(),
            created_by=created_by,
            expires_at_ms=expires_at_ms,
        )
        await self.save(key)
        return key, token

    @staticmethod
    def split(token: str) -> tuple[str, str]:
        """``(key_id, secret)`` of a token given to install; :class:`InvalidArgument`
        unless it is well formed."""
        parsed = parse_token(token)
        if parsed is None:
            raise InvalidArgument("an API key looks like rmq_<16 hex>_<43 base64url characters>")
        return parsed

    def find(self, namespace: str, key_id: str) -> ApiKey:
        """The key ``key_id`` of ``namespace``; :class:`KeyNotFound` if there is none
        (keys of other namespaces are not found either)."""
        key = self.by_id.get(key_id)
        if key is None or key.namespace != namespace:
            raise KeyNotFound(f"API key {key_id!r} not found", key_id=key_id)
        return key

    def list(self, namespace: str) -> list[ApiKey]:
        """The keys of a namespace (``*``: the server-wide keys), by id."""
        return sorted(
            (key for key in self.by_id.values() if key.namespace == namespace),
            key=lambda key: key.key_id,
        )

    def has_active_admin(self) -> bool:
        """Whether some active server-wide key exists (bootstrap needs one)."""
        now_ms = self.clock_ms()
        return any(key.namespace == "*" and key.is_active(now_ms) for key in self.by_id.values())

    async def revoke(self, namespace: str, key_id: str) -> ApiKey:
        """Revoke a key for good (revoking twice keeps the first time)."""
        async with self._changing:
            key = self.find(namespace, key_id)
            if key.revoked_at_ms is None:
                key = dataclasses.replace(key, revoked_at_ms=self.clock_ms())
                await self.save(key)
                self.changed(key.principal().id, REVOKED)
            return key

    async def set_grants(self, namespace: str, key_id: str, grants: Sequence[Grant]) -> ApiKey:
        """Replace a key's grants (the same grants again change nothing)."""
        async with self._changing:
            key = self.find(namespace, key_id)
            if key.grants == tuple(grants):
                return key
            key = dataclasses.replace(key, grants=tuple(grants))
            await self.save(key)
            self.changed(key.principal().id, GRANTS_CHANGED)
            return key

    def outdated(self, principal: Principal) -> str | None:
        """Why ``principal`` (of an API key) no longer stands for its key, if it does
        not: revoked, or other grants now. ``None`` for other principals."""
        if principal.kind is not PrincipalKind.API_KEY:
            return None
        key = self.by_id.get(principal.id.removeprefix("key:"))
        if key is None or key.revoked_at_ms is not None:
            return REVOKED
        return GRANTS_CHANGED if key.grants != principal.grants else None

    async def save(self, key: ApiKey) -> None:
        """Persist, then index."""
        await asyncio.to_thread(self.store.save_key, key)
        self.by_id[key.key_id] = key


def invalid_credentials() -> Unauthenticated:
    """The one error for a wrong, unknown, expired or revoked credential."""
    return Unauthenticated("invalid or expired credentials")
