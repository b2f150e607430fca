"""The token endpoint's HTTP client (``TokenClient``) and ``verify_token``, over a fake
session (the answers' parsing: ``test_oauth.py``)."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any
from urllib.parse import unquote_plus

import pytest
import requests

from rotator.errors import (
    ConfigError,
    CredentialsRejected,
    InvalidTokenResponse,
    TokenEndpointUnavailable,
    VerificationFailed,
    VerificationUnavailable,
)
from rotator.oauth import (
    Grant,
    TokenClient,
    verify_token,
)
from rotator.secret import Secret
from tests.fakes import FakeClock, FakeResponse, FakeSession, make_token
from tests.unit.oauth_cases import ACCESS, CLIENT_SECRET, KEYCLOAK_BODY, REFRESH, URL

# ---------------------------------------------------------------- the HTTP client


def ok(body: dict[str, Any] | None = None, **extra: Any) -> FakeResponse:
    return FakeResponse.json({**(body or KEYCLOAK_BODY), **extra})


def client(session: FakeSession, clock: FakeClock, **kw: Any) -> TokenClient:
    kw.setdefault("token_url", URL)
    secret = kw.pop("secret", CLIENT_SECRET)
    return TokenClient(
        session,  # type: ignore[arg-type]
        client_id=kw.pop("client_id", "oms client"),
        client_secret=lambda: Secret(secret),
        clock=clock,
        **kw,
    )


def test_client_credentials_post(clock: FakeClock) -> None:
    session = FakeSession(ok())
    grant = client(session, clock, scope="oms.read", timeout=(2.0, 3.0)).client_credentials()
    assert grant.token.access_token == ACCESS
    (sent,) = session.sent
    assert sent.method == "POST"
    assert sent.url == URL
    assert sent.form == {
        "grant_type": "client_credentials",
        "scope": "oms.read",
        "client_id": "oms client",
        "client_secret": CLIENT_SECRET,
    }
    assert sent.kwargs["auth"] is None
    assert sent.kwargs["timeout"] == (2.0, 3.0)
    assert sent.kwargs["verify"] is True
    assert sent.kwargs["allow_redirects"] is False
    assert session.responses[0].closed


def test_client_secret_basic(clock: FakeClock) -> None:
    session = FakeSession(ok())
    secret = "client-secret-MARKER:+/ &%"  # every character form-encoding changes
    client(
        session, clock, client_id="oms client", auth_method="client_secret_basic", secret=secret
    ).fetch()
    (sent,) = session.sent
    assert "client_secret" not in sent.form and "client_id" not in sent.form
    user, password = sent.kwargs["auth"]
    # RFC 6749 2.3.1: form-urlencoded before the Basic encoding
    assert user == "oms+client"
    assert unquote_plus(user) == "oms client"
    assert unquote_plus(password) == secret
    # the header requests sends for that auth pair, decoded
    header = requests.Request("POST", URL, auth=(user, password)).prepare().headers
    scheme, _, encoded = header["Authorization"].partition(" ")
    assert scheme == "Basic"
    decoded = base64.b64decode(encoded).decode()
    assert decoded == "oms+client:client-secret-MARKER%3A%2B%2F+%26%25"
    assert decoded.split(":", 1)[1] != secret  # the raw secret never goes out unencoded


def test_slow_response_does_not_lengthen_the_token(clock: FakeClock) -> None:
    session = FakeSession(ok())
    session.on_send = lambda _request: clock.advance(25)
    sent_at = clock.now()
    token = client(session, clock).fetch().token
    assert token.issued_at == sent_at
    assert token.expires_at == sent_at + timedelta(seconds=300)
    assert token.remaining(clock.now()) == timedelta(seconds=275)


def test_refresh_path_then_invalid_grant_falls_back_once(clock: FakeClock) -> None:
    invalid = FakeResponse.json(
        {"error": "invalid_grant", "error_description": "Token is not active"}, 400
    )
    session = FakeSession(invalid, ok())
    outcomes: list[tuple[str, str]] = []
    tc = client(session, clock, on_request=lambda g, o: outcomes.append((g, o)))
    previous = Grant(
        token=make_token(clock.now()),
        refresh_token=Secret(REFRESH),
        refresh_expires_at=clock.now() + timedelta(minutes=30),
    )
    grant = tc.fetch(previous)
    assert grant.token.access_token == ACCESS
    assert [r.form["grant_type"] for r in session.sent] == ["refresh_token", "client_credentials"]
    assert session.sent[0].form["refresh_token"] == REFRESH
    assert outcomes == [("refresh_token", "invalid_grant"), ("client_credentials", "ok")]


def test_refresh_path_used_when_still_valid(clock: FakeClock) -> None:
    renewed = ok(refresh_token="refresh-token-MARKER-2", refresh_expires_in=1800)
    session = FakeSession(renewed)
    previous = Grant(
        token=make_token(clock.now()),
        refresh_token=Secret(REFRESH),
        refresh_expires_at=clock.now() + timedelta(minutes=30),
    )
    grant = client(session, clock).fetch(previous)
    assert [r.form["grant_type"] for r in session.sent] == ["refresh_token"]
    assert grant.refresh_token == Secret("refresh-token-MARKER-2")


def test_expired_refresh_token_goes_straight_to_client_credentials(clock: FakeClock) -> None:
    session = FakeSession(ok())
    previous = Grant(
        token=make_token(clock.now()),
        refresh_token=Secret(REFRESH),
        refresh_expires_at=clock.now() - timedelta(seconds=1),
    )
    client(session, clock).fetch(previous)
    assert [r.form["grant_type"] for r in session.sent] == ["client_credentials"]


def test_refresh_rejected_for_other_reasons_is_not_papered_over(clock: FakeClock) -> None:
    rejected = FakeResponse.json({"error": "unauthorized_client"}, 401)
    session = FakeSession(rejected)
    previous = Grant(
        token=make_token(clock.now()),
        refresh_token=Secret(REFRESH),
        refresh_expires_at=clock.now() + timedelta(minutes=30),
    )
    with pytest.raises(CredentialsRejected):
        client(session, clock).fetch(previous)
    assert len(session.sent) == 1


@pytest.mark.parametrize(
    ("exc", "outcome", "text"),
    [
        (requests.ConnectTimeout("boom"), "timeout", "timed out"),
        (requests.ReadTimeout("boom"), "timeout", "timed out"),
        (requests.exceptions.SSLError("boom"), "tls_error", "TLS verification failed"),
        (requests.ConnectionError(f"refused {CLIENT_SECRET}"), "connection_error", "unreachable"),
    ],
)
def test_transport_errors_are_transient(
    clock: FakeClock, exc: Exception, outcome: str, text: str
) -> None:
    outcomes: list[str] = []
    tc = client(FakeSession(exc), clock, on_request=lambda g, o: outcomes.append(o))
    with pytest.raises(TokenEndpointUnavailable) as info:
        tc.client_credentials()
    assert info.value.is_transient
    assert text in str(info.value)
    assert CLIENT_SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert outcomes == [outcome]


def test_body_is_size_capped(clock: FakeClock) -> None:
    huge = FakeResponse(status_code=200, body=b"x" * 5000)
    session = FakeSession(huge)
    with pytest.raises(InvalidTokenResponse, match="larger than 1000 bytes"):
        client(session, clock, max_body_bytes=1000).client_credentials()
    assert huge.closed


def test_truncated_body_is_transient(clock: FakeClock) -> None:
    cut = FakeResponse(
        status_code=200,
        body=b'{"access_token": "',
        chunk_error=requests.exceptions.ChunkedEncodingError("cut"),
    )
    with pytest.raises(TokenEndpointUnavailable, match="cut off"):
        client(FakeSession(cut), clock).client_credentials()
    assert cut.closed


def test_error_status_reaches_the_observer(clock: FakeClock) -> None:
    outcomes: list[str] = []
    session = FakeSession(FakeResponse(status_code=503, body=b"<html/>"))
    with pytest.raises(TokenEndpointUnavailable):
        client(session, clock, on_request=lambda g, o: outcomes.append(o)).client_credentials()
    assert outcomes == ["http_503"]


@pytest.mark.parametrize("url", ["http://sso.example.com/token", "ftp://sso.example.com/token"])
def test_client_refuses_plain_http_except_loopback(clock: FakeClock, url: str) -> None:
    with pytest.raises(ConfigError, match="plain http"):
        client(FakeSession(), clock, token_url=url)
    client(FakeSession(), clock, token_url="http://127.0.0.1:8080/token")


def test_client_repr_hides_the_secret(clock: FakeClock) -> None:
    tc = client(FakeSession(), clock, token_url=URL + "?x=1")
    assert CLIENT_SECRET not in repr(tc)
    assert tc.url == URL


# ---------------------------------------------------------------- verify_url


def test_verify_sends_the_token_and_accepts_2xx() -> None:
    session = FakeSession(FakeResponse(status_code=204))
    verify_token(session, "https://oms.example.com/oms-api/", make_token(access_token=ACCESS))  # type: ignore[arg-type]
    (sent,) = session.sent
    assert sent.method == "GET"
    assert sent.kwargs["headers"]["Authorization"] == f"Bearer {ACCESS}"
    assert session.responses[0].closed


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, VerificationFailed),
        (403, VerificationFailed),
        (302, VerificationFailed),
        (503, VerificationUnavailable),
        (429, VerificationUnavailable),
    ],
)
def test_verify_refusals(status: int, error: type[Exception]) -> None:
    session = FakeSession(FakeResponse(status_code=status))
    with pytest.raises(error) as info:
        verify_token(
            session, "https://oms.example.com/oms-api/?k=v", make_token(access_token=ACCESS)
        )  # type: ignore[arg-type]
    assert type(info.value) is error
    assert ACCESS not in str(info.value)
    assert "k=v" not in str(info.value)
    assert f"HTTP {status}" in str(info.value)


def test_verify_unreachable_is_transient() -> None:
    session = FakeSession(requests.ConnectionError("down"))
    with pytest.raises(VerificationUnavailable) as info:
        verify_token(session, "https://oms.example.com/", make_token(access_token=ACCESS))  # type: ignore[arg-type]
    assert info.value.is_transient
