"""The realm's JWT-authenticated clients work as issue 12 (``jwt``) expects them to:
``oms-secret-jwt`` (clientAuthenticatorType ``client-secret-jwt``: an HS256 assertion keyed
with the client secret) and ``oms-private-key-jwt`` (``client-jwt``: an RS256 assertion whose
public key the test registers through the admin API as ``jwks.string``).

These prove the fixtures, by hand-made assertions; rotator's own client authentication by
JWT is tested by issue 12 against the same clients.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fixtures.keycloak import KeycloakServer
from tests.fixtures.keycloak_admin import KeycloakAdmin

pytestmark = pytest.mark.timeout(120)

SECRET_JWT_CLIENT = "oms-secret-jwt"
SECRET_JWT_SECRET = "oms-secret-jwt-test-secret-0123456789abcdef0123456789"
PRIVATE_KEY_CLIENT = "oms-private-key-jwt"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signing_input(header: dict[str, Any], client_id: str, audience: str) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 60,
    }
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _request(real_kc: KeycloakServer, client_id: str, assertion: str) -> requests.Response:
    return requests.post(
        real_kc.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
        timeout=30,
    )


def test_client_secret_jwt_client(real_kc: KeycloakServer) -> None:
    signing_input = _signing_input(
        {"alg": "HS256", "typ": "JWT"}, SECRET_JWT_CLIENT, real_kc.issuer
    )
    signature = hmac.new(SECRET_JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256)
    ok = _request(real_kc, SECRET_JWT_CLIENT, f"{signing_input}.{_b64(signature.digest())}")
    assert ok.status_code == 200, ok.text
    assert ok.json()["token_type"] == "Bearer"

    wrong = hmac.new(b"x" * 48, signing_input.encode(), hashlib.sha256)
    bad = _request(real_kc, SECRET_JWT_CLIENT, f"{signing_input}.{_b64(wrong.digest())}")
    assert bad.status_code == 400, bad.text  # 400, not 401 as for a wrong client secret
    assert bad.json() == {
        "error": "unauthorized_client",
        "error_description": "Client authentication with client secret signed JWT failed: "
        "Signature on JWT token by client secret  failed validation",  # sic, two spaces
    }


def test_private_key_jwt_client_with_jwks_set_by_the_admin(real_kc: KeycloakServer) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    kid = "test-key-1"
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "kid": kid,
                "use": "sig",
                "alg": "RS256",
                "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                "e": _b64(numbers.e.to_bytes(3, "big")),
            }
        ]
    }
    KeycloakAdmin(real_kc).update_client_attributes(
        PRIVATE_KEY_CLIENT, {"use.jwks.string": "true", "jwks.string": json.dumps(jwks)}
    )
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signing_input = _signing_input(header, PRIVATE_KEY_CLIENT, real_kc.issuer)
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    ok = _request(real_kc, PRIVATE_KEY_CLIENT, f"{signing_input}.{_b64(signature)}")
    assert ok.status_code == 200, ok.text

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = other.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    bad = _request(real_kc, PRIVATE_KEY_CLIENT, f"{signing_input}.{_b64(forged)}")
    assert bad.status_code == 400, bad.text
    assert bad.json() == {
        "error": "invalid_client",
        "error_description": "Client authentication with signed JWT failed: "
        "Signature on JWT token failed validation",
    }
