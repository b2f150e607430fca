"""The token endpoint's answers: response validation and error mapping (the HTTP client:
``test_oauth_client.py``)."""

from __future__ import annotations

import json
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from rotator.errors import (
    EXIT_FAILED,
    EXIT_REJECTED,
    CredentialsRejected,
    InvalidGrant,
    InvalidTokenResponse,
    TokenEndpointError,
    TokenEndpointUnavailable,
    TokenRequestRejected,
)
from rotator.oauth import (
    MAX_EXPIRES_IN,
    MAX_RETRY_AFTER,
    Grant,
    parse_response,
    parse_retry_after,
    parse_token,
    safe_url,
)
from rotator.secret import Secret
from tests.fakes import T0, make_jwt
from tests.unit.oauth_cases import ACCESS, CLIENT_SECRET, KEYCLOAK_BODY, MARKERS, REFRESH, URL


def respond(
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    grant_type: str = "client_credentials",
    sent_at: Any = T0,
    url: str = URL,
) -> Grant:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_response(
        status=status,
        headers=headers or {},
        body=raw,
        sent_at=sent_at,
        url=url,
        grant_type=grant_type,
    )


def failure(body: Any, status: int = 200, **kw: Any) -> TokenEndpointError:
    with pytest.raises(TokenEndpointError) as info:
        respond(body, status, **kw)
    message = str(info.value)
    assert "\n" not in message, message
    for marker in MARKERS:
        assert marker not in message, message
    return info.value


# ---------------------------------------------------------------- success bodies


def test_keycloak_client_credentials_body() -> None:
    grant = respond(KEYCLOAK_BODY)
    token = grant.token
    assert token.access_token == ACCESS
    assert token.token_type == "Bearer"
    assert token.issued_at == T0
    assert token.expires_at == T0 + timedelta(seconds=300)
    assert token.scope == "profile email"
    assert grant.refresh_token is None
    assert not grant.can_refresh(T0)


def test_expiry_counts_from_when_the_request_was_sent() -> None:
    sent = T0 - timedelta(seconds=42)  # the answer took 42 s to arrive
    token = respond(KEYCLOAK_BODY, sent_at=sent).token
    assert token.expires_at == sent + timedelta(seconds=300)
    assert token.expires_at < T0 + timedelta(seconds=300)


def test_refresh_token_captured_only_when_refresh_expires_in_is_positive() -> None:
    with_refresh = {
        **KEYCLOAK_BODY,
        "refresh_token": REFRESH,
        "refresh_expires_in": 1800,
        "session_state": "abc",
    }
    grant = respond(with_refresh)
    assert grant.refresh_token == Secret(REFRESH)
    assert grant.refresh_expires_at == T0 + timedelta(seconds=1800)
    assert grant.can_refresh(T0 + timedelta(seconds=1799))
    assert not grant.can_refresh(T0 + timedelta(seconds=1800))
    assert REFRESH not in repr(grant)

    for expires_in in (0, -5, "1800", None, True):
        body = {**with_refresh, "refresh_expires_in": expires_in}
        assert respond(body).refresh_token is None, expires_in
    assert respond({**KEYCLOAK_BODY, "refresh_expires_in": 1800}).refresh_token is None


def test_absurd_refresh_expires_in_is_not_a_crash() -> None:
    body = {**KEYCLOAK_BODY, "refresh_token": REFRESH, "refresh_expires_in": 1e300}
    grant = respond(body)
    assert grant.token.access_token == ACCESS
    assert grant.refresh_token == Secret(REFRESH)
    assert grant.refresh_expires_at is not None
    assert T0 < grant.refresh_expires_at <= T0 + timedelta(seconds=MAX_EXPIRES_IN)


@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "BEARER"])
def test_token_type_bearer_in_any_case(token_type: str) -> None:
    assert respond({**KEYCLOAK_BODY, "token_type": token_type}).token.token_type == "Bearer"


def test_missing_expires_in_uses_the_jwt_exp() -> None:
    jwt = make_jwt({"exp": int((T0 + timedelta(seconds=600)).timestamp())})
    body = {"access_token": jwt, "token_type": "Bearer"}
    token = respond(body, sent_at=T0 + timedelta(seconds=10)).token
    assert token.expires_at == T0 + timedelta(seconds=600)
    assert token.issued_at == T0 + timedelta(seconds=10)


def test_quoted_integer_expires_in_is_accepted() -> None:
    # some servers send it as a string of digits; anything else is refused below
    token = respond({**KEYCLOAK_BODY, "expires_in": "300"}).token
    assert token.lifetime == timedelta(seconds=300)


def test_blank_scope_is_no_scope() -> None:
    assert respond({**KEYCLOAK_BODY, "scope": "  "}).token.scope is None
    assert respond({k: v for k, v in KEYCLOAK_BODY.items() if k != "scope"}).token.scope is None


# ---------------------------------------------------------------- nonsense bodies


@pytest.mark.parametrize(
    ("expires_in", "reason"),
    [
        (-300, "expires_in must be positive"),
        (0, "expires_in must be positive"),
        ("soon", "expires_in must be a number"),
        ("300.5", "expires_in must be a number"),
        (True, "expires_in must be a number"),
        (None, "expires_in must be a number"),
        ([300], "expires_in must be a number"),
        (10**12, "absurdly large"),
        (1e308, "absurdly large"),
    ],
)
def test_bad_expires_in(expires_in: Any, reason: str) -> None:
    err = failure({**KEYCLOAK_BODY, "expires_in": expires_in})
    assert isinstance(err, InvalidTokenResponse)
    assert reason in str(err)
    assert not err.is_transient


def test_nan_expires_in_is_refused() -> None:
    body = json.dumps(KEYCLOAK_BODY).replace('"expires_in": 300', '"expires_in": NaN')
    assert "expires_in must be a number" in str(failure(body.encode()))


def test_missing_expires_in_without_jwt_is_an_error() -> None:
    err = failure({"access_token": ACCESS, "token_type": "Bearer"})
    assert isinstance(err, InvalidTokenResponse)
    assert "no expires_in" in str(err)


@pytest.mark.parametrize(
    ("exp", "reason"),
    [
        (int((T0 - timedelta(seconds=1)).timestamp()), "already in the past"),
        (int((T0 + timedelta(days=400)).timestamp()), "absurdly far"),
        (1e20, "absurdly far"),
        (-1e20, "in the past"),
        ("tomorrow", "no JWT exp"),
    ],
)
def test_jwt_exp_out_of_bounds(exp: Any, reason: str) -> None:
    err = failure({"access_token": make_jwt({"exp": exp}), "token_type": "Bearer"})
    assert isinstance(err, InvalidTokenResponse)
    assert reason in str(err)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({**KEYCLOAK_BODY, "access_token": ""}, "no access_token string"),
        ({**KEYCLOAK_BODY, "access_token": "   "}, "no access_token string"),
        ({**KEYCLOAK_BODY, "access_token": 12345}, "no access_token string"),
        ({**KEYCLOAK_BODY, "access_token": None}, "no access_token string"),
        ({k: v for k, v in KEYCLOAK_BODY.items() if k != "access_token"}, "no access_token"),
        ({**KEYCLOAK_BODY, "token_type": "mac"}, "token_type must be Bearer, got 'mac'"),
        ({**KEYCLOAK_BODY, "token_type": "DPoP"}, "token_type must be Bearer"),
        ({k: v for k, v in KEYCLOAK_BODY.items() if k != "token_type"}, "got None"),
        ([KEYCLOAK_BODY], "not a JSON object"),
        ("a string", "not a JSON object"),
        (None, "not a JSON object"),
    ],
)
def test_bad_success_bodies(body: Any, reason: str) -> None:
    err = failure(body)
    assert isinstance(err, InvalidTokenResponse)
    assert reason in str(err)
    assert err.status == 200
    assert err.url == URL


def test_html_with_200_is_a_clear_error() -> None:
    body = b"<html><body>\n<h1>Welcome</h1>\n" + ACCESS.encode() + b"\n</body></html>"
    err = failure(body, 200)
    assert isinstance(err, InvalidTokenResponse)
    assert "HTTP 200 with a HTML body, not a token" in str(err)
    assert "not a token" in str(failure(b"access_token=" + ACCESS.encode()))


def test_parse_token_alone_validates_decoded_data() -> None:
    grant = parse_token(KEYCLOAK_BODY, sent_at=T0, where="token endpoint x")
    assert grant.token.expires_at == T0 + timedelta(seconds=300)
    with pytest.raises(InvalidTokenResponse, match="token endpoint x: response is not"):
        parse_token([], sent_at=T0, where="token endpoint x")


def test_unexpected_status_is_invalid() -> None:
    err = failure(KEYCLOAK_BODY, 302)
    assert isinstance(err, InvalidTokenResponse)
    assert "HTTP 302" in str(err)


# ---------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            401,
            {
                "error": "unauthorized_client",
                "error_description": "Invalid client or Invalid client credentials",
            },
        ),
        (401, {"error": "invalid_client", "error_description": "Invalid client secret"}),
        (400, {"error": "invalid_client", "error_description": "Missing client_id"}),
        # Keycloak 26 refusing an RFC 7523 assertion (issue 12): 400, not 401
        (
            400,
            {
                "error": "invalid_client",
                "error_description": "Client authentication with signed JWT failed: "
                "Signature on JWT token failed validation",
            },
        ),
        (
            400,
            {
                "error": "unauthorized_client",
                "error_description": "Client authentication with client secret signed JWT "
                "failed: Signature on JWT token by client secret  failed validation",
            },
        ),
        (400, {"error": "invalid_client", "error_description": "Token reuse detected"}),
        (401, b"Unauthorized"),
    ],
)
def test_rejected_client_credentials(status: int, body: Any) -> None:
    err = failure(body, status)
    assert isinstance(err, CredentialsRejected)
    assert err.exit_code == EXIT_REJECTED
    assert not err.is_transient
    assert err.status == status
    assert "rejected the client credentials" in str(err)


def test_rejection_carries_the_rfc6749_fields() -> None:
    body = {"error": "unauthorized_client", "error_description": "Invalid client credentials"}
    err = failure(body, 401)
    assert (err.error, err.description) == ("unauthorized_client", "Invalid client credentials")
    assert "(unauthorized_client: Invalid client credentials)" in str(err)


@pytest.mark.parametrize(
    "description", ["Token is not active", "Session not active", "Stale token"]
)
def test_invalid_grant_on_refresh(description: str) -> None:
    body = {"error": "invalid_grant", "error_description": description}
    err = failure(body, 400, grant_type="refresh_token")
    assert isinstance(err, InvalidGrant)
    assert description in str(err)
    assert err.exit_code == EXIT_FAILED


@pytest.mark.parametrize(
    ("status", "body", "grant_type"),
    [
        (400, {"error": "invalid_grant"}, "client_credentials"),
        (400, {"error": "invalid_scope", "error_description": "bad scope"}, "client_credentials"),
        (400, {"error": "unsupported_grant_type"}, "refresh_token"),
        (403, b"<html>Forbidden</html>", "client_credentials"),
        (404, b"", "client_credentials"),
    ],
)
def test_other_4xx_are_rejected_requests(status: int, body: Any, grant_type: str) -> None:
    err = failure(body, status, grant_type=grant_type)
    assert type(err) is TokenRequestRejected
    assert not err.is_transient
    assert f"refused the {grant_type} request" in str(err)


def test_error_description_is_flattened_and_truncated() -> None:
    body = {"error": "invalid_scope", "error_description": "line one\nline two " + "x" * 500}
    err = failure(body, 400)
    assert "line one line two" in str(err)
    assert len(str(err)) < 400


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_5xx_and_429_are_unavailable(status: int) -> None:
    err = failure(b"<html>Bad Gateway</html>", status)
    assert isinstance(err, TokenEndpointUnavailable)
    assert err.is_transient
    assert err.retry_after is None
    assert f"HTTP {status}" in str(err)


def test_retry_after_seconds() -> None:
    err = failure(b"", 429, headers={"Retry-After": "17"})
    assert isinstance(err, TokenEndpointUnavailable)
    assert err.retry_after == 17.0
    assert "Retry-After 17 s" in str(err)


def test_retry_after_http_date() -> None:
    when = format_datetime(T0 + timedelta(seconds=120), usegmt=True)
    err = failure(b"", 503, headers={"Retry-After": when})
    assert isinstance(err, TokenEndpointUnavailable)
    assert err.retry_after == 120.0


def test_parse_retry_after_edge_cases() -> None:
    assert parse_retry_after(None, T0) is None
    assert parse_retry_after("", T0) is None
    assert parse_retry_after("soon", T0) is None
    assert parse_retry_after("-5", T0) is None
    assert parse_retry_after("0", T0) == 0.0
    assert parse_retry_after("999999", T0) == MAX_RETRY_AFTER
    past = format_datetime(T0 - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(past, T0) == 0.0
    far = format_datetime(T0 + timedelta(days=3), usegmt=True)
    assert parse_retry_after(far, T0) == MAX_RETRY_AFTER


def test_safe_url_drops_query_and_user_info() -> None:
    assert (
        safe_url(f"https://u:{CLIENT_SECRET}@sso.example.com:8443/token?x={ACCESS}#f")
        == "https://sso.example.com:8443/token"
    )


def test_messages_never_carry_the_query_string() -> None:
    err = failure(b"", 503, url=f"{URL}?client_secret={CLIENT_SECRET}")
    assert err.url == URL
