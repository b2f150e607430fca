"""Is the published token still accepted? The daemon's early-revocation probe.

Keycloak can invalidate a token before its ``expires_at`` (sessions logged out, a
not-before push, a disabled client, disabled keys). A probe asks, at an interval,
whether the published token still works:

* ``verify_url``: a ``GET`` with the token; 2xx is active, 401/403 revoked;
* ``introspection``: RFC 7662, the realm's ``token/introspect`` endpoint, asked with
  the client's own credentials (the same client authentication as its token
  requests); ``"active": false`` is revoked.

Anything else (a timeout, 5xx, a redirect, an unreadable answer) is ``error``: it
changes nothing but a metric. Every exchange has the credential's overall deadline.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rotator.deadline import Deadline
from rotator.errors import RotatorError
from rotator.oauth import FORM_CONTENT_TYPE, encode_form, safe_url
from rotator.token import jwt_claims

if TYPE_CHECKING:
    import requests

    from rotator.oauth import TokenClient
    from rotator.token import Token

ACTIVE = "active"
REVOKED = "revoked"
ERROR = "error"
MAX_BODY_BYTES = 64 * 1024  # an introspection answer is a few hundred bytes


@dataclass(frozen=True)
class ProbeResult:
    """What a probe concluded (``outcome``: active, revoked or error) and, for the log,
    why (never the token)."""

    outcome: str
    detail: str = ""

    @property
    def is_revoked(self) -> bool:
        return self.outcome == REVOKED


Probe = Callable[["Token"], ProbeResult]


@dataclass(frozen=True)
class HttpOptions:
    """How a probe talks HTTP: the credential's timeouts, TLS trust, proxies, deadline."""

    timeout: tuple[float, float] = (5.0, 10.0)
    verify: str | bool = True
    proxies: dict[str, str] | None = None
    deadline: float = 30.0


def verify_probe(session: requests.Session, url: str, options: HttpOptions) -> Probe:
    """GET `url` with the token: 2xx active, 401/403 revoked, anything else error."""
    where = f"verify_url {safe_url(url)}"

    def probe(token: Token) -> ProbeResult:
        headers = {"Authorization": f"Bearer {token.access_token}"}
        answer = _exchange(session, "GET", url, options, where, headers=headers)
        if isinstance(answer, ProbeResult):
            return answer
        status, _body = answer
        if 200 <= status < 300:
            return ProbeResult(ACTIVE)
        if status in (401, 403):
            return ProbeResult(REVOKED, f"{where} answered HTTP {status}")
        return ProbeResult(ERROR, f"{where} answered HTTP {status}")

    return probe


def introspection_probe(
    session: requests.Session, url: str, client: TokenClient, options: HttpOptions
) -> Probe:
    """RFC 7662: POST the token to `url` authenticated as the client; active or not."""
    where = f"introspection endpoint {safe_url(url)}"

    def probe(token: Token) -> ProbeResult:
        try:
            data, auth = client.authenticate(
                {"token": token.access_token, "token_type_hint": "access_token"}
            )
        except RotatorError as exc:  # the client secret or key could not be read
            return ProbeResult(ERROR, f"{where}: {exc}")
        # encoded as the token request is, the same bytes requests would send
        headers = {"Accept": "application/json", "Content-Type": FORM_CONTENT_TYPE}
        answer = _exchange(
            session, "POST", url, options, where, data=encode_form(data), auth=auth, headers=headers
        )
        if isinstance(answer, ProbeResult):
            return answer
        status, body = answer
        if status != 200:
            # 401/403 here refuse *our client*, not the token: that is for the token
            # requests to find out, not a reason to replace a token.
            return ProbeResult(ERROR, f"{where} answered HTTP {status}")
        try:
            active = json.loads(body).get("active")
        except (ValueError, AttributeError, RecursionError):
            return ProbeResult(ERROR, f"{where} answered with no JSON object")
        if active is True:
            return ProbeResult(ACTIVE)
        if active is False:
            return ProbeResult(
                REVOKED,
                f"{where} says the token is not active{_audience_hint(token, client.client_id)}",
            )
        return ProbeResult(ERROR, f"{where} answered without a boolean 'active'")

    return probe


def _audience_hint(token: Token, client_id: str) -> str:
    """Why a token may be "not active" without being revoked: Keycloak (26.x) answers
    ``active: false`` to an introspecting client that is not in the token's ``aud``,
    even the client the token was issued to. Said only when the JWT shows it."""
    claims = jwt_claims(token.access_token)
    if claims is None or "aud" not in claims:
        return ""
    aud = claims["aud"]
    audience = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id in audience:
        return ""
    return (
        f" (client {client_id!r} is not in the token's audience `aud`, and Keycloak answers"
        " 'not active' to such a client: add an audience mapper for it, see the README)"
    )


def _exchange(
    session: requests.Session,
    method: str,
    url: str,
    options: HttpOptions,
    where: str,
    **kw: Any,
) -> tuple[int, bytes] | ProbeResult:
    """One HTTP exchange within the deadline: (status, body), or the ERROR result."""
    import requests

    late = ProbeResult(ERROR, f"{where}: no answer within the {options.deadline:g} s deadline")
    send = session.post if method == "POST" else session.get
    with Deadline(options.deadline) as limit:
        try:
            response = send(
                url,
                timeout=options.timeout,
                verify=options.verify,
                proxies=options.proxies or {},
                allow_redirects=False,
                stream=True,
                **kw,
            )
        except (requests.RequestException, OSError) as exc:
            if limit.expired():
                return late
            return ProbeResult(ERROR, f"{where} is unreachable ({type(exc).__name__})")
        body = b""
        try:
            if method == "POST":  # a GET's status is all we need
                for chunk in response.iter_content(chunk_size=4096):
                    body += chunk
                    if len(body) > MAX_BODY_BYTES or limit.expired():
                        return ProbeResult(ERROR, f"{where}: answer too large or too slow")
        except requests.RequestException as exc:
            return late if limit.expired() else ProbeResult(ERROR, f"{where}: {type(exc).__name__}")
        finally:
            response.close()
    if limit.fired:  # the socket was cut: what was read may be a truncated answer
        return late
    return response.status_code, body
