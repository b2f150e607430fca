"""HS256 JSON Web Tokens for the Keycloak stub: sign claims, verify a signature."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["b64url", "b64url_decode", "json_bytes", "sign_jwt", "verify_jwt"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def sign_jwt(claims: Mapping[str, object], key: bytes) -> str:
    header = b64url(json_bytes({"alg": "HS256", "typ": "JWT"}))
    signing_input = f"{header}.{b64url(json_bytes(claims))}"
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def verify_jwt(token: str, key: bytes) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
    expected = b64url(hmac.new(key, signing_input, hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode("ascii"), parts[2].encode("ascii", "replace")):
        return None
    try:
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None
