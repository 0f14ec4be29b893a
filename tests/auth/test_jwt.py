"""JWT verification pieces that do not need a server (the attacks run against
a real one in ``tests/server/test_auth_jwt.py``)."""

from __future__ import annotations

import time

import jwt
import pytest

from relaymq.auth.jwt import JwtSettings, JwtVerifier, Rejected, check_key_fits, grants_of
from relaymq.auth.principal import Role
from relaymq.errors import InvalidConfig, Unauthenticated

SECRET = b"k" * 32


def test_grants_claim_forms() -> None:
    listed = grants_of([{"namespace": "acme", "role": "publish", "resources": ["subject:a.>"]}])
    assert listed[0].role is Role.PUBLISH and listed[0].resources[0].text == "subject:a.>"
    mapped = grants_of({"acme": ["read", "consume"], "beta": "admin"})
    assert [(grant.namespace, grant.role.value) for grant in mapped] == [
        ("acme", "read"),
        ("acme", "consume"),
        ("beta", "admin"),
    ]
    assert grants_of(None) == ()
    with pytest.raises(Rejected):
        grants_of("admin")


def test_key_must_fit_the_algorithm() -> None:
    check_key_fits({"kty": "EC", "crv": "P-256"}, "ES256")
    for jwk, algorithm in (
        ({"kty": "EC", "crv": "P-384"}, "ES256"),
        ({"kty": "RSA"}, "ES256"),
        ({"kty": "EC", "crv": "P-256"}, "RS256"),
        ({"kty": "RSA", "alg": "RS512"}, "RS256"),
        ({"kty": "RSA", "use": "enc"}, "RS256"),
    ):
        with pytest.raises(Rejected):
            check_key_fits(jwk, algorithm)


def test_short_hs256_secrets_are_a_config_error() -> None:
    with pytest.raises(InvalidConfig):
        JwtVerifier(JwtSettings(hs256_secret=b"short"))


async def test_no_configured_keys_refuses_every_token() -> None:
    token = jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated):
        await JwtVerifier(JwtSettings()).verify(token)
    principal = await JwtVerifier(JwtSettings(hs256_secret=SECRET)).verify(token)
    assert principal.id == "jwt:a" and principal.grants == ()
