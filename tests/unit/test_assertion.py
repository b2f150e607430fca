"""RFC 7523 client assertions: claims, headers, expiry, unique jti, one per request."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from rotator import assertion
from rotator.config import SecretSource
from rotator.keysource import KeyProvider
from rotator.secret import Secret, scrub
from tests.fakes import FakeClock
from tests.jwtkeys import ec_key, pem, rsa_key, write

TOKEN_URL = "https://kc.example/realms/r/protocol/openid-connect/token"
HMAC_SECRET = "a-client-secret-of-at-least-32-bytes!!"


def key_auth(
    tmp_path: Path, clock: FakeClock, alg: str = "RS256", kid: str | None = "kid-1", **kw: Any
) -> tuple[assertion.AssertionAuth, Any]:
    key = ec_key() if alg == "ES256" else rsa_key()
    path = write(tmp_path / "k.pem", pem(key))
    provider = KeyProvider(SecretSource("private_key_file", str(path)), alg=alg, kid=kid, env={})
    auth = assertion.private_key_jwt(
        provider,
        client_id="oms-client",
        audience=TOKEN_URL,
        clock=clock,
        lifetime=kw.get("lifetime", timedelta(seconds=60)),
    )
    return auth, key.public_key()


def decode(token: str, key: Any, alg: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[alg], audience=TOKEN_URL, options={"verify_exp": False}
    )
    return claims


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
def test_claims_and_headers(tmp_path: Path, clock: FakeClock, alg: str) -> None:
    auth, public = key_auth(tmp_path, clock, alg)
    form = auth.apply({"grant_type": "client_credentials", "scope": "a"})
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "a"
    assert form["client_id"] == "oms-client"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in form
    token = form["client_assertion"]
    assert jwt.get_unverified_header(token) == {"alg": alg, "typ": "JWT", "kid": "kid-1"}
    claims = decode(token, public, alg)  # the signature verifies with the public key
    now = int(clock.now().timestamp())
    assert claims["iss"] == claims["sub"] == "oms-client"
    assert claims["aud"] == TOKEN_URL
    assert claims["iat"] == now
    assert claims["exp"] == now + 60
    assert set(claims) == {"iss", "sub", "aud", "jti", "iat", "exp"}


def test_no_kid_header_when_none_configured(tmp_path: Path, clock: FakeClock) -> None:
    auth, _ = key_auth(tmp_path, clock, kid=None)
    assert "kid" not in jwt.get_unverified_header(auth.assertion())


def test_expiry_follows_the_configured_lifetime_and_the_clock(
    tmp_path: Path, clock: FakeClock
) -> None:
    auth, public = key_auth(tmp_path, clock, lifetime=timedelta(seconds=25))
    first = decode(auth.assertion(), public, "RS256")
    clock.advance(100)
    second = decode(auth.assertion(), public, "RS256")
    assert first["exp"] - first["iat"] == 25
    assert second["iat"] == first["iat"] + 100
    assert second["exp"] == second["iat"] + 25


def test_every_assertion_is_new_with_a_unique_jti(tmp_path: Path, clock: FakeClock) -> None:
    auth, public = key_auth(tmp_path, clock)
    tokens = [auth.apply({})["client_assertion"] for _ in range(50)]  # same instant
    assert len(set(tokens)) == 50
    assert len({decode(t, public, "RS256")["jti"] for t in tokens}) == 50


def test_assertions_are_registered_for_scrubbing(tmp_path: Path, clock: FakeClock) -> None:
    auth, _ = key_auth(tmp_path, clock)
    token = auth.assertion()
    assert token not in scrub(f"request body client_assertion={token}")


def test_client_secret_jwt_signs_hs256_with_the_secret(clock: FakeClock) -> None:
    auth = assertion.client_secret_jwt(
        lambda: Secret(HMAC_SECRET),
        client_id="oms-client",
        audience=TOKEN_URL,
        clock=clock,
        lifetime=timedelta(seconds=60),
    )
    token = auth.apply({})["client_assertion"]
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = decode(token, HMAC_SECRET.encode(), "HS256")
    assert claims["iss"] == claims["sub"] == "oms-client"
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, b"another-secret-of-at-least-32-bytes!!", "HS256")


def test_reload_says_whether_the_key_changed(tmp_path: Path, clock: FakeClock) -> None:
    auth, _ = key_auth(tmp_path, clock)
    auth.assertion()
    assert auth.reload() is False  # same file content
    write(tmp_path / "k.pem", pem(rsa_key(2048, 1)))
    assert auth.reload() is True  # not the key the last assertion was signed with
