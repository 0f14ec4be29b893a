"""JSON Web Token verification (PyJWT with ``cryptography``) and the JWKS it uses.

The algorithm is never the token's choice alone: only ``HS256``, ``RS256`` and
``ES256`` are accepted (never ``none``), ``HS256`` only with the configured
shared secret, and ``RS256``/``ES256`` only with a key from the JWKS (file or
URL) found by the token's ``kid`` whose key type and curve fit the algorithm,
so an RSA public key can never be used as an HMAC secret (algorithm
confusion). ``exp`` is required; ``nbf`` is checked when present; ``iss`` and
``aud`` are required when configured. Every failure is the same
:class:`Unauthenticated`; the reason goes to the debug log, never the token.

The token's grants are in one claim (``jwt_grants_claim``, default
``relaymq``): either a list of grants ``[{"namespace", "role", "resources"?}]``
or a map ``{"namespace": ["role", ...]}``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import jwt

from relaymq.auth.principal import Grant, Principal, PrincipalKind, grants_from_json
from relaymq.errors import InvalidArgument, InvalidConfig, Unauthenticated

logger = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = ("HS256", "RS256", "ES256")
KEY_TYPES = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}
MIN_HS256_SECRET_BYTES = 32
MIN_REFETCH_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 1024 * 1024
MAX_TOKEN_CHARS = 16 * 1024


@dataclass(frozen=True, slots=True)
class JwtSettings:
    """How JWTs are verified (from the server settings)."""

    hs256_secret: bytes | None = None
    jwks_file: Path | None = None
    jwks_url: str | None = None
    jwks_cache_seconds: float = 300.0
    issuer: str | None = None
    audience: str | None = None
    grants_claim: str = "relaymq"
    leeway_seconds: float = 5.0

    @property
    def enabled(self) -> bool:
        """Whether any JWT key is configured."""
        return bool(self.hs256_secret or self.jwks_file or self.jwks_url)


class Rejected(Exception):
    """Why a token was refused (for the debug log only)."""


class Jwks:
    """A JSON Web Key Set from a file (reread when it changes) or a URL (cached
    ``jwks_cache_seconds``; refetched early for an unknown ``kid``, at most every
    :data:`MIN_REFETCH_SECONDS`)."""

    def __init__(self, settings: JwtSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.keys: dict[str, dict[str, Any]] = {}
        self.loaded_at = -float("inf")
        self.file_stamp: tuple[float, int] | None = None

    async def key(self, kid: str) -> dict[str, Any]:
        """The JWK with id ``kid``; :class:`Rejected` if there is none."""
        await self.refresh(kid)
        found = self.keys.get(kid)
        if found is None:
            raise Rejected(f"unknown key id {kid[:64]!r}")
        return found

    async def refresh(self, kid: str) -> None:
        """Reload the set if stale, or if ``kid`` is unknown and a refetch is allowed."""
        if self.settings.jwks_file is not None:
            self.reload_file(self.settings.jwks_file)
            return
        if self.settings.jwks_url is None:
            return
        age_seconds = self.clock() - self.loaded_at
        stale = age_seconds >= self.settings.jwks_cache_seconds
        if stale or (kid not in self.keys and age_seconds >= MIN_REFETCH_SECONDS):
            await self.fetch(self.settings.jwks_url)

    def reload_file(self, path: Path) -> None:
        """Reread the JWKS file when its size or modification time changed."""
        try:
            stat = path.stat()
        except OSError as error:
            raise Rejected(f"cannot read the JWKS file: {error.strerror}") from error
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self.file_stamp:
            self.keys = parse_jwks(path.read_bytes())
            self.file_stamp = stamp

    async def fetch(self, url: str) -> None:
        """Fetch the JWKS (a failed fetch keeps the previous keys)."""
        self.loaded_at = self.clock()
        try:
            async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as client:
                response = await client.get(url)
            response.raise_for_status()
            self.keys = parse_jwks(response.content[:MAX_JWKS_BYTES])
        except (httpx.HTTPError, Rejected) as error:
            logger.warning("cannot fetch the JWKS: %s", error)


def parse_jwks(data: bytes) -> dict[str, dict[str, Any]]:
    """The keys of a JWKS document by ``kid`` (keys without one are skipped)."""
    try:
        document = json.loads(data)
        keys = document["keys"]
        return {str(key["kid"]): key for key in keys if isinstance(key, dict) and "kid" in key}
    except (ValueError, KeyError, TypeError) as error:
        raise Rejected("the JWKS is not a JSON object with a keys list") from error


class JwtVerifier:
    """Turns a JWT into a :class:`Principal`, or refuses it."""

    def __init__(self, settings: JwtSettings) -> None:
        secret = settings.hs256_secret
        if secret is not None and len(secret) < MIN_HS256_SECRET_BYTES:
            raise InvalidConfig(f"jwt_hs256_secret must be at least {MIN_HS256_SECRET_BYTES} bytes")
        self.settings = settings
        self.jwks = Jwks(settings)

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; :class:`Unauthenticated` otherwise."""
        try:
            claims = await self.claims(token)
            principal = principal_from_claims(claims, self.settings.grants_claim)
        except (Rejected, jwt.PyJWTError, InvalidArgument) as error:
            logger.debug("JWT refused: %s", error)
            raise Unauthenticated("invalid or expired credentials") from None
        # Accepted until exp plus the leeway, so a connection it opens lasts as long.
        # PyJWT checks exp as int(exp): an int, a float or a numeric string.
        expires_at_ms = int(claims["exp"]) * 1000 + int(self.settings.leeway_seconds * 1000)
        return replace(principal, expires_at_ms=expires_at_ms)

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``."""
        if not self.settings.enabled:
            raise Rejected("no JWT keys are configured")
        if len(token) > MAX_TOKEN_CHARS:
            raise Rejected("token too long")
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise Rejected(f"algorithm {str(algorithm)[:16]!r} is not allowed")
        key = await self.verification_key(algorithm, header.get("kid"))
        required = ["exp", "sub"]
        required += ["iss"] if self.settings.issuer else []
        required += ["aud"] if self.settings.audience else []
        return jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=self.settings.audience,
            issuer=self.settings.issuer,
            leeway=self.settings.leeway_seconds,
            options={"require": required, "verify_aud": self.settings.audience is not None},
        )

    async def verification_key(self, algorithm: str, kid: object) -> Any:
        """The key that must have signed a token of ``algorithm``."""
        if algorithm == "HS256":
            if self.settings.hs256_secret is None:
                raise Rejected("HS256 is not configured")
            return self.settings.hs256_secret
        if not isinstance(kid, str) or not kid:
            raise Rejected(f"{algorithm} tokens need a kid")
        jwk = await self.jwks.key(kid)
        check_key_fits(jwk, algorithm)
        return jwt.PyJWK(jwk, algorithm=algorithm).key


def check_key_fits(jwk: dict[str, Any], algorithm: str) -> None:
    """Refuse a JWK whose type, curve or declared algorithm does not fit ``algorithm``."""
    key_type, curve = KEY_TYPES[algorithm]
    if jwk.get("kty") != key_type or (curve is not None and jwk.get("crv") != curve):
        raise Rejected(f"key type does not fit {algorithm}")
    if jwk.get("alg", algorithm) != algorithm:
        raise Rejected(f"key is for {jwk.get('alg')}, not {algorithm}")
    if jwk.get("use", "sig") != "sig":
        raise Rejected("key is not a signing key")


def principal_from_claims(claims: dict[str, Any], grants_claim: str) -> Principal:
    """The principal a verified token describes."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Rejected("sub must be a non-empty string")
    return Principal(f"jwt:{subject[:256]}", PrincipalKind.JWT, grants_of(claims.get(grants_claim)))


def grants_of(claim: Any) -> tuple[Grant, ...]:
    """Grants from the grants claim (a list of grants, or namespace -> roles)."""
    if claim is None:
        return ()
    if isinstance(claim, dict):
        claim = [
            {"namespace": namespace, "role": role}
            for namespace, roles in claim.items()
            for role in (roles if isinstance(roles, list) else [roles])
        ]
    if not isinstance(claim, list) or not all(isinstance(item, dict) for item in claim):
        raise Rejected("the grants claim must be a list of grants or a map of roles")
    try:
        return grants_from_json(claim)
    except (KeyError, TypeError) as error:
        raise Rejected("malformed grant in the grants claim") from error
