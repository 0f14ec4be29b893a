"""JSON Web Tokens against a real server: valid ones work, every attack is a 401.

The server trusts an HS256 secret and a JWKS file holding an RSA and an EC
(P-256) key, with issuer and audience configured. The keys are generated
here. The attacks: ``alg: none``, algorithm confusion (HS256 signed with the
RSA public key), a token whose header claims RS256 but is signed with an
unknown key, expired, ``nbf`` in the future, wrong audience, wrong issuer, no
``exp``, unknown ``kid``, tampered payload, tampered signature, a key removed
from the JWKS (revoked), and a revoked API key. A WebSocket opened with a token
closes when the token expires.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.server.conftest import AUTH_HEADERS, RunningServer, expect, expect_error, start_server

HS256_SECRET = "s" * 40
ISSUER = "https://issuer.test"
AUDIENCE = "relaymq"
NAMESPACE = "jwt-tenant"


class Keys:
    """The signing keys of the test issuer."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self, *, with_rsa: bool = True) -> dict[str, Any]:
        """The public JWKS (optionally without the RSA key: revoked)."""
        keys = [jwk(ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True), "ec-1", "ES256")]
        if with_rsa:
            keys.append(
                jwk(RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True), "rsa-1", "RS256")
            )
        return {"keys": keys}

    def rsa_public_pem(self) -> bytes:
        """The RSA public key as PEM (what an algorithm-confusion attacker uses)."""
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def jwk(key: dict[str, Any], kid: str, algorithm: str) -> dict[str, Any]:
    """A JWK with its id and algorithm."""
    return {**key, "kid": kid, "alg": algorithm, "use": "sig"}


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims granting ``publish`` and ``read`` in the test namespace."""
    now = int(time.time())
    base = {
        "sub": "service-a",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "relaymq": {NAMESPACE: ["publish", "read"]},
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


@pytest.fixture(scope="module")
def keys() -> Keys:
    """Fresh keys for the module."""
    return Keys()


@pytest.fixture(scope="module")
def jwks_file(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    """The JWKS file the server reads."""
    path = Path(tmp_path_factory.mktemp("jwks")) / "jwks.json"
    path.write_text(json.dumps(keys.jwks()))
    return path


@pytest.fixture(scope="module")
def jwt_server(
    tmp_path_factory: pytest.TempPathFactory, jwks_file: Path
) -> Iterator[RunningServer]:
    """A server trusting the test issuer, with a namespace to publish to."""
    running = start_server(
        Path(tmp_path_factory.mktemp("jwt")),
        jwt_hs256_secret=HS256_SECRET,
        jwt_jwks_file=jwks_file,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_leeway_seconds=0,
    )
    with httpx.Client(base_url=running.base_url, headers=AUTH_HEADERS) as admin:
        expect(admin.post("/v1/namespaces", json={"name": NAMESPACE}), 201)
        stream = {"name": "events", "subjects": ["events.>"]}
        expect(admin.post(f"/v1/namespaces/{NAMESPACE}/streams", json=stream), 201)
    yield running
    running.stop()


def get_stream(server: RunningServer, token: str) -> httpx.Response:
    """A read of the namespace's stream with ``token``."""
    url = f"{server.base_url}/v1/namespaces/{NAMESPACE}/streams/events"
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"})


def unsigned(payload: dict[str, Any], header: dict[str, Any]) -> str:
    """A token with ``alg: none`` and an empty signature."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part(header)}.{part(payload)}."


def test_valid_tokens_of_every_algorithm_work(jwt_server: RunningServer, keys: Keys) -> None:
    tokens = [
        jwt.encode(claims(), HS256_SECRET, algorithm="HS256"),
        jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"}),
        jwt.encode(claims(), keys.ec, algorithm="ES256", headers={"kid": "ec-1"}),
    ]
    for token in tokens:
        expect(get_stream(jwt_server, token), 200)
    whoami = httpx.get(
        f"{jwt_server.base_url}/v1/auth/whoami",
        headers={"Authorization": f"Bearer {tokens[1]}"},
    )
    assert expect(whoami, 200)["id"] == "jwt:service-a"


def test_token_grants_are_enforced(jwt_server: RunningServer, keys: Keys) -> None:
    token = jwt.encode(claims(), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})
    headers = {"Authorization": f"Bearer {token}"}
    root = f"{jwt_server.base_url}/v1/namespaces/{NAMESPACE}"
    body = {"subject": "events.a", "payload": "x"}
    expect(httpx.post(root + "/publish", json=body, headers=headers), 200)
    expect_error(httpx.delete(root + "/streams/events", headers=headers), 403, "permission_denied")
    other = f"{jwt_server.base_url}/v1/namespaces/default/streams"
    expect_error(httpx.get(other, headers=headers), 404, "namespace_not_found")


def attack_tokens(keys: Keys) -> dict[str, str]:
    """Every token that must be refused, by the attack it stands for."""
    now = int(time.time())
    rsa_header = {"kid": "rsa-1"}
    valid_rsa = jwt.encode(claims(), keys.rsa, algorithm="RS256", headers=rsa_header)
    header, payload, signature = valid_rsa.split(".")
    forged_payload = (
        base64.urlsafe_b64encode(json.dumps(claims(sub="root", relaymq={"*": ["admin"]})).encode())
        .decode()
        .rstrip("=")
    )
    flipped = "A" if signature[10] != "A" else "B"
    return {
        "alg none": unsigned(claims(), {"alg": "none", "typ": "JWT"}),
        "alg None, kid given": unsigned(claims(), {"alg": "None", "kid": "rsa-1"}),
        "algorithm confusion (HS256 keyed with the RSA public key)": hs256_with(
            keys.rsa_public_pem(), claims()
        ),
        "RS256 signed by an unknown key": jwt.encode(
            claims(), keys.stranger, algorithm="RS256", headers=rsa_header
        ),
        "HS256 with the wrong secret": jwt.encode(claims(), "x" * 40, algorithm="HS256"),
        "expired": jwt.encode(claims(exp=now - 60), HS256_SECRET, algorithm="HS256"),
        "nbf in the future": jwt.encode(claims(nbf=now + 600), HS256_SECRET, algorithm="HS256"),
        "wrong audience": jwt.encode(claims(aud="someone-else"), HS256_SECRET, algorithm="HS256"),
        "wrong issuer": jwt.encode(
            claims(iss="https://evil.test"), HS256_SECRET, algorithm="HS256"
        ),
        "no exp": jwt.encode(claims(exp=None), HS256_SECRET, algorithm="HS256"),
        "no audience": jwt.encode(claims(aud=None), HS256_SECRET, algorithm="HS256"),
        "unknown kid": jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "nope"}),
        "RS256 without kid": jwt.encode(claims(), keys.rsa, algorithm="RS256"),
        "EC key used for RS256 (kid of the EC key)": jwt.encode(
            claims(), keys.rsa, algorithm="RS256", headers={"kid": "ec-1"}
        ),
        "HS512 (not allowed)": jwt.encode(claims(), HS256_SECRET * 2, algorithm="HS512"),
        "tampered payload": f"{header}.{forged_payload}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:10]}{flipped}{signature[11:]}",
        "garbage": "not-a-token",
        "malformed API key": "rmq_zzzz",
    }


def hs256_with(secret: bytes, payload: dict[str, Any]) -> str:
    """An HS256 token keyed with arbitrary bytes (PyJWT refuses PEM keys as HMAC
    secrets, as it should, so the attacker signs by hand)."""
    import hashlib
    import hmac

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).decode().rstrip("=")

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = part(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{part(signature)}"


def test_every_attack_is_a_401(jwt_server: RunningServer, keys: Keys) -> None:
    refused = {}
    for attack, token in attack_tokens(keys).items():
        response = get_stream(jwt_server, token)
        refused[attack] = (response.status_code, response.json()["error"]["code"])
    assert refused == dict.fromkeys(refused, (401, "unauthenticated")), refused
    print(f"\nJWT attacks refused with 401: {len(refused)}")
    for attack in refused:
        print(f"  {attack}")


def test_a_key_removed_from_the_jwks_is_refused(
    jwt_server: RunningServer, keys: Keys, jwks_file: Path
) -> None:
    token = jwt.encode(claims(), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    expect(get_stream(jwt_server, token), 200)
    jwks_file.write_text(json.dumps(keys.jwks(with_rsa=False)) + " ")
    try:
        expect_error(get_stream(jwt_server, token), 401, "unauthenticated")
    finally:
        jwks_file.write_text(json.dumps(keys.jwks()))
    expect(get_stream(jwt_server, token), 200)


def test_a_revoked_api_key_is_refused(jwt_server: RunningServer) -> None:
    with httpx.Client(base_url=jwt_server.base_url, headers=AUTH_HEADERS) as admin:
        body = {"name": "temporary", "grants": [{"role": "read"}]}
        created = expect(admin.post(f"/v1/namespaces/{NAMESPACE}/keys", json=body), 201)
        expect(get_stream(jwt_server, created["token"]), 200)
        revoked = admin.delete(f"/v1/namespaces/{NAMESPACE}/keys/{created['id']}")
        assert expect(revoked, 200)["active"] is False
    expect_error(get_stream(jwt_server, created["token"]), 401, "unauthenticated")


def test_an_expired_api_key_is_refused(jwt_server: RunningServer) -> None:
    with httpx.Client(base_url=jwt_server.base_url, headers=AUTH_HEADERS) as admin:
        body = {"name": "short", "grants": [{"role": "read"}], "expires_in_seconds": 1}
        created = expect(admin.post(f"/v1/namespaces/{NAMESPACE}/keys", json=body), 201)
    expect(get_stream(jwt_server, created["token"]), 200)
    time.sleep(1.1)
    expect_error(get_stream(jwt_server, created["token"]), 401, "unauthenticated")


async def test_a_websocket_opened_with_a_token_closes_when_the_token_expires(
    jwt_server: RunningServer,
) -> None:
    token = jwt.encode(claims(exp=int(time.time()) + 3), HS256_SECRET, algorithm="HS256")
    url = jwt_server.base_url.replace("http://", "ws://") + f"/v1/namespaces/{NAMESPACE}/ws"
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url, additional_headers=headers) as websocket:
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(8):
                await websocket.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "the credential expired")
