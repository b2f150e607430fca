"""The token endpoint's answer: an HTTP response turned into a ``Grant`` or a precise error.

``parse_response`` maps the status and body (RFC 6749 section 5.2 error bodies included)
to a ``Grant`` or to ``CredentialsRejected``, ``InvalidGrant``, ``TokenRequestRejected``,
``TokenEndpointUnavailable`` (with Retry-After) or ``InvalidTokenResponse``;
``parse_token`` validates a decoded success body. Pure: no I/O, so it is tested without
sockets; ``rotator.oauth.TokenClient`` sends the request and hands the answer here.
"""

from __future__ import annotations

import email.utils
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard
from urllib.parse import urlsplit, urlunsplit

from rotator.errors import (
    CredentialsRejected,
    InvalidGrant,
    InvalidTokenResponse,
    TokenEndpointError,
    TokenEndpointUnavailable,
    TokenRequestRejected,
)
from rotator.secret import Secret, register, scrub
from rotator.token import Token, jwt_claims

MAX_EXPIRES_IN = 366 * 24 * 3600  # anything longer is not a short-lived token
MAX_RETRY_AFTER = 3600.0
REJECTED_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
# A whole number of seconds as servers send it: ASCII digits only ("²".isdigit()
# is True) and short (int() refuses strings over 4,300 digits).
_DIGITS = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class Grant:
    """A token endpoint answer: the access token, and a refresh token if one came."""

    token: Token
    refresh_token: Secret | None = field(default=None, repr=False)
    refresh_expires_at: datetime | None = None

    def can_refresh(self, now: datetime) -> bool:
        return (
            self.refresh_token is not None
            and self.refresh_expires_at is not None
            and now < self.refresh_expires_at
        )


@functools.lru_cache(maxsize=1024)
def safe_url(url: str) -> str:
    """The URL without query, fragment or user info, for messages (remembered: it is
    asked for on every token request, of a handful of URLs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value):
        return min(float(value), MAX_RETRY_AFTER)
    if value[:1].isdigit() or len(value) > 64:
        return None  # not ASCII delta-seconds ("²", 5,000 digits) and not an HTTP date
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER)


def _one_line(text: object, limit: int = 200) -> str:
    """Server-supplied text, flattened, capped and scrubbed of any known secret
    (a server that echoes the client secret back must not make us log it)."""
    flat = scrub(" ".join(str(text).split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_response(
    *,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    sent_at: datetime,
    url: str,
    grant_type: str,
) -> Grant:
    """Turn one HTTP answer from the token endpoint into a Grant or a precise error."""
    where = f"token endpoint {safe_url(url)}"
    if status >= 500 or status in (408, 425, 429):
        retry_after = parse_retry_after(headers.get("Retry-After"), sent_at)
        hint = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
        raise TokenEndpointUnavailable(
            f"{where} answered HTTP {status}{hint}",
            retry_after=retry_after,
            url=safe_url(url),
            status=status,
        )
    if status >= 400:
        raise _rejection(status, body, where, url, grant_type)
    if not 200 <= status < 300:
        raise InvalidTokenResponse(
            f"{where} answered HTTP {status}, expected 200", url=safe_url(url), status=status
        )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        # No cause: a body that is not UTF-8 fails as a UnicodeDecodeError, whose text
        # quotes a byte of the token response.
        kind = "HTML" if body.lstrip()[:1] == b"<" else "non-JSON"
        raise InvalidTokenResponse(
            f"{where} answered HTTP {status} with a {kind} body, not a token",
            url=safe_url(url),
            status=status,
        ) from None
    return parse_token(data, sent_at=sent_at, where=where, url=url, status=status)


def parse_token(
    data: Any, *, sent_at: datetime, where: str, url: str = "", status: int = 200
) -> Grant:
    """Validate a decoded success body; expiry counts from when the request was sent."""

    def bad(reason: str) -> InvalidTokenResponse:
        return InvalidTokenResponse(f"{where}: {reason}", url=safe_url(url), status=status)

    if not isinstance(data, dict):
        raise bad("response is not a JSON object")
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token.strip():
        raise bad("response has no access_token string")
    register(access_token)
    token_type = data.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise bad(f"token_type must be Bearer, got {_one_line(repr(token_type), 40)}")
    lifetime = _lifetime(data, access_token, sent_at, bad)
    scope = data.get("scope")
    token = Token(
        access_token=access_token,
        token_type="Bearer",
        # Whole seconds, rounded down, as the document publishes them and as servers
        # stamp iat/exp: the schedule must plan from exactly what consumers see.
        issued_at=sent_at.replace(microsecond=0),
        expires_at=(sent_at + lifetime).replace(microsecond=0),
        scope=scope if isinstance(scope, str) and scope.strip() else None,
    )
    refresh_token = data.get("refresh_token")
    raw_refresh_expires_in = data.get("refresh_expires_in")
    refresh_expires_in = (
        # capped: timedelta overflows on absurd values
        min(float(raw_refresh_expires_in), MAX_EXPIRES_IN)
        if _is_number(raw_refresh_expires_in)
        else 0.0
    )
    if isinstance(refresh_token, str) and refresh_token and refresh_expires_in > 0:
        return Grant(
            token=token,
            refresh_token=Secret(refresh_token),
            refresh_expires_at=sent_at + timedelta(seconds=refresh_expires_in),
        )
    return Grant(token=token)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _lifetime(
    data: dict[str, Any],
    access_token: str,
    sent_at: datetime,
    bad: Callable[[str], InvalidTokenResponse],
) -> timedelta:
    if "expires_in" in data:
        expires_in = data["expires_in"]
        if isinstance(expires_in, str) and _DIGITS.fullmatch(expires_in.strip()):
            expires_in = int(expires_in)  # some servers send it quoted
        if not _is_number(expires_in):
            raise bad(f"expires_in must be a number, got {_one_line(repr(expires_in), 40)}")
        if expires_in <= 0:
            raise bad(f"expires_in must be positive, got {expires_in!r}")
        if expires_in > MAX_EXPIRES_IN:
            raise bad(f"expires_in is absurdly large: {expires_in!r} s")
        return timedelta(seconds=float(expires_in))
    claims = jwt_claims(access_token)
    exp = None if claims is None else claims.get("exp")
    if not _is_number(exp):
        raise bad("response has no expires_in and the token carries no JWT exp claim")
    assert exp is not None
    # Bounds first, in plain seconds: datetime.fromtimestamp overflows on absurd values.
    seconds_left = float(exp) - sent_at.timestamp()
    if seconds_left <= 0:
        raise bad("the token's JWT exp claim is already in the past")
    if seconds_left > MAX_EXPIRES_IN:
        raise bad("the token's JWT exp claim is absurdly far away")
    lifetime = datetime.fromtimestamp(float(exp), UTC) - sent_at
    if lifetime <= timedelta(0):
        raise bad("the token's JWT exp claim is already in the past")
    return lifetime


def _rejection(
    status: int, body: bytes, where: str, url: str, grant_type: str
) -> TokenEndpointError:
    error: str | None = None
    description: str | None = None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        if isinstance(data.get("error"), str):
            error = _one_line(data["error"], 60)
        if isinstance(data.get("error_description"), str):
            description = _one_line(data["error_description"])
    detail = error or "no error code"
    if description:
        detail = f"{detail}: {description}"
    kw: dict[str, Any] = {
        "url": safe_url(url),
        "status": status,
        "error": error,
        "description": description,
    }
    if error in REJECTED_CLIENT_ERRORS or (status == 401 and error is None):
        return CredentialsRejected(f"{where} rejected the client credentials ({detail})", **kw)
    if error == "invalid_grant" and grant_type == "refresh_token":
        return InvalidGrant(f"{where} rejected the refresh token ({detail})", **kw)
    return TokenRequestRejected(f"{where} refused the {grant_type} request ({detail})", **kw)
