"""RFC 7523 client authentication: a signed client assertion per token request.

``private_key_jwt`` signs with the credential's private key (RS256, ES256, PS256);
``client_secret_jwt`` signs with the client secret (HS256). Every request gets a
new assertion (a fresh ``jti``, ``iat`` and ``exp``): never reused, not on a retry,
not on the refresh or fallback path. Each assertion is registered for scrubbing.

PyJWT is imported only when an assertion is signed, so the default
client-secret path does not pay for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from rotator.clock import Clock
from rotator.keysource import SigningKey
from rotator.secret import Secret, register

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def assertion_claims(
    client_id: str, audience: str, now: datetime, lifetime: timedelta
) -> dict[str, Any]:
    """iss = sub = the client id, aud = the token endpoint, a unique jti, iat and exp."""
    issued = int(now.timestamp())
    return {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": str(uuid.uuid4()),
        "iat": issued,
        "exp": issued + max(1, int(lifetime.total_seconds())),
    }


def sign(claims: dict[str, Any], key: Any, alg: str, kid: str | None) -> str:
    import jwt

    headers = {"typ": "JWT", **({"kid": kid} if kid else {})}
    token = jwt.encode(claims, key, algorithm=alg, headers=headers)
    register(token)
    return token


class ClientAuth(Protocol):
    """How a TokenClient authenticates: adds its fields to each token-request form."""

    method: str

    def apply(self, form: dict[str, Any]) -> dict[str, Any]:
        """The form with this request's client authentication added."""

    def reload(self) -> bool:
        """Re-read the key or secret after a rejection; True when it changed."""


# -> (key, alg, kid, fingerprint): the fingerprint tells a rotated key or secret apart
Signer = Callable[[], tuple[Any, str, "str | None", object]]


class AssertionAuth:
    """Adds a freshly signed client assertion to every token request."""

    def __init__(
        self,
        method: str,
        *,
        client_id: str,
        audience: str,
        clock: Clock,
        lifetime: timedelta,
        signer: Signer,
        invalidate: Callable[[], None],
    ) -> None:
        self.method = method
        self._client_id = client_id
        self._audience = audience
        self._clock = clock
        self._lifetime = lifetime
        self._signer = signer
        self._invalidate = invalidate
        self._last_used: object = None  # fingerprint of the key behind the last assertion

    def __repr__(self) -> str:
        return f"AssertionAuth({self.method}, client_id={self._client_id!r})"

    def assertion(self) -> str:
        key, alg, kid, self._last_used = self._signer()
        claims = assertion_claims(
            self._client_id, self._audience, self._clock.now(), self._lifetime
        )
        return sign(claims, key, alg, kid)

    def apply(self, form: dict[str, Any]) -> dict[str, Any]:
        return {
            **form,
            "client_id": self._client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(),
        }

    def reload(self) -> bool:
        """Re-read the source (after a rejection); True when its key is not the one
        the last assertion was signed with."""
        self._invalidate()
        return self._signer()[3] != self._last_used


def private_key_jwt(key: Callable[[], SigningKey], **kw: Any) -> AssertionAuth:
    """private_key_jwt: assertions signed with the credential's private key."""

    def signer() -> tuple[Any, str, str | None, object]:
        signing = key()
        return signing.key, signing.alg, signing.kid, signing.thumbprint

    return AssertionAuth(
        "private_key_jwt",
        signer=signer,
        invalidate=getattr(key, "invalidate", lambda: None),
        **kw,
    )


def client_secret_jwt(secret: Callable[[], Secret], **kw: Any) -> AssertionAuth:
    """client_secret_jwt: assertions signed HS256 with the client secret."""

    def signer() -> tuple[Any, str, str | None, object]:
        value = secret()
        return value.reveal().encode(), "HS256", None, value

    return AssertionAuth(
        "client_secret_jwt",
        signer=signer,
        invalidate=getattr(secret, "invalidate", lambda: None),
        **kw,
    )
