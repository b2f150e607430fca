"""The immutable Token value and the published document format.

The document is the contract with consumers: a JSON object with
``access_token``, ``token_type``, ``expires_at``, ``issued_at`` (RFC 3339 UTC
with ``Z``) and ``scope`` when granted. ``format = "raw"`` publishes the bare
access token instead.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from rotator.clock import format_instant, parse_instant, utc

Format = Literal["json", "raw"]
FORMATS: tuple[str, ...] = ("json", "raw")


@dataclass(frozen=True)
class Token:
    """An access token with the instants that bound its life. Its repr hides the token."""

    access_token: str = field(repr=False)
    token_type: str
    issued_at: datetime
    expires_at: datetime
    scope: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "issued_at", utc(self.issued_at))
        object.__setattr__(self, "expires_at", utc(self.expires_at))

    def __str__(self) -> str:
        return f"Token({self.token_type}, expires_at={format_instant(self.expires_at)})"

    @property
    def lifetime(self) -> timedelta:
        return self.expires_at - self.issued_at

    def remaining(self, now: datetime) -> timedelta:
        return self.expires_at - now

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def to_document(self) -> dict[str, str]:
        doc = {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": format_instant(self.expires_at),
            "issued_at": format_instant(self.issued_at),
        }
        if self.scope:
            doc["scope"] = self.scope
        return doc


def encode(token: Token, fmt: str) -> str:
    """The string a target stores for `token` in format `fmt`."""
    if fmt == "raw":
        return token.access_token
    return json.dumps(token.to_document(), separators=(",", ":"), sort_keys=False)


def decode(value: str, fmt: str) -> Token | None:
    """Parse a stored value back into a Token.

    Returns None when the value cannot say when it expires (an opaque raw
    token). Raises ValueError (never echoing the value) when it is malformed.
    """
    if fmt == "raw":
        return _decode_raw(value)
    return decode_document(value)


def decode_document(value: str) -> Token:
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise ValueError("stored value is not JSON") from exc
    if not isinstance(doc, dict):
        raise ValueError("stored value is not a JSON object")
    access_token = doc.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise ValueError("stored document has no access_token string")
    token_type = doc.get("token_type", "Bearer")
    scope = doc.get("scope")
    try:
        expires_at = parse_instant(str(doc["expires_at"]))
        issued_at = parse_instant(str(doc.get("issued_at", doc["expires_at"])))
    except (KeyError, ValueError, OverflowError) as exc:  # Overflow: e.g. year 9999 at -01:00
        raise ValueError("stored document has no valid expires_at/issued_at") from exc
    return Token(
        access_token=access_token,
        token_type=str(token_type),
        issued_at=issued_at,
        expires_at=expires_at,
        scope=scope if isinstance(scope, str) and scope else None,
    )


def _decode_raw(value: str) -> Token | None:
    value = value.strip()
    if not value:
        raise ValueError("stored value is empty")
    claims = jwt_claims(value)
    if claims is None:
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    iat = claims.get("iat")
    try:
        expires_at = datetime.fromtimestamp(exp, UTC)
        issued_at = (
            datetime.fromtimestamp(iat, UTC)
            if isinstance(iat, int | float) and not isinstance(iat, bool)
            else expires_at
        )
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError("stored token's JWT exp/iat claim is out of range") from exc
    scope = claims.get("scope")
    return Token(
        access_token=value,
        token_type="Bearer",
        issued_at=issued_at,
        expires_at=expires_at,
        scope=scope if isinstance(scope, str) and scope else None,
    )


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The unverified claims of a JWS compact token, or None if it is not one.

    Only used to learn `exp` when the server omits `expires_in`, or to read the
    expiry of a raw published token: no trust decision rests on it.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return None
    return claims if isinstance(claims, dict) else None
