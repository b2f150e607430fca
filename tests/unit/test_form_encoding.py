"""The token request's form is encoded by rotator, not by requests: the bytes on the wire
must be exactly what requests made of the same fields before (same fields, same order,
same encoding), for every client authentication method, grant and extra_params."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from rotator import assertion
from rotator.config import SecretSource
from rotator.keysource import KeyProvider
from rotator.oauth import FORM_CONTENT_TYPE, Grant, TokenClient, encode_form
from rotator.secret import Secret
from tests.fakes import FakeClock, FakeResponse, FakeSession, make_token
from tests.jwtkeys import pem, rsa_key, write

URL = "https://sso.example.com/realms/prod/protocol/openid-connect/token"
BODY = {"access_token": "eyJ-access", "expires_in": 300, "token_type": "Bearer"}
SECRET = "s3cret MARKER:+/ &%=?#é💥"  # every character form encoding touches
REFRESH = "refresh+token/MARKER=="
EXTRA = (("audience", "oms api"), ("resource", "https://a/?x=1&y=2"), ("resource", "ü b"))


def requests_body(fields: dict[str, Any]) -> tuple[bytes, str]:
    """What requests itself sends for ``data=fields``: the body and its Content-Type."""
    prepared = requests.Request("POST", URL, data=fields).prepare()
    body = prepared.body
    assert isinstance(body, str)
    return body.encode("ascii"), prepared.headers["Content-Type"]


@pytest.mark.parametrize(
    "fields",
    [
        {"grant_type": "client_credentials"},
        {"grant_type": "client_credentials", "scope": "a b", "client_secret": SECRET},
        {"resource": ["https://a", "https://b"], "grant_type": "refresh_token"},
        {"empty": "", "dropped": None, "unicode": "日本 ✓", "plus": "a+b c"},
        {"list_with_none": ["x", None, "y"]},
    ],
)
def test_encode_form_is_what_requests_sends(fields: dict[str, Any]) -> None:
    body, content_type = requests_body(fields)
    assert encode_form(fields) == body
    assert content_type == FORM_CONTENT_TYPE


def ok() -> FakeResponse:
    return FakeResponse.json(BODY)


def secret_client(session: FakeSession, clock: FakeClock, method: str) -> TokenClient:
    return TokenClient(
        session,  # type: ignore[arg-type]
        token_url=URL,
        client_id="oms client",
        client_secret=lambda: Secret(SECRET),
        clock=clock,
        auth_method=method,
        scope="oms.read oms.write",
        extra_params=EXTRA,
    )


EXTRA_FIELDS: dict[str, Any] = {"audience": "oms api", "resource": [EXTRA[1][1], EXTRA[2][1]]}
CC = {"grant_type": "client_credentials", "scope": "oms.read oms.write"}
RT = {"grant_type": "refresh_token", "refresh_token": REFRESH}


def sent_body(session: FakeSession, n: int = 0) -> bytes:
    sent = session.sent[n]
    assert sent.kwargs["headers"]["Content-Type"] == FORM_CONTENT_TYPE
    body = sent.kwargs["data"]
    assert isinstance(body, bytes)
    return body


@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token"])
def test_client_secret_post_body_is_unchanged(clock: FakeClock, grant: str) -> None:
    session = FakeSession(ok())
    tc = secret_client(session, clock, "client_secret_post")
    tc.client_credentials() if grant == "client_credentials" else tc.refresh(Secret(REFRESH))
    form = CC if grant == "client_credentials" else RT
    expected = {**EXTRA_FIELDS, **form, "client_id": "oms client", "client_secret": SECRET}
    assert sent_body(session) == requests_body(expected)[0]


def test_client_secret_basic_body_is_unchanged(clock: FakeClock) -> None:
    session = FakeSession(ok())
    secret_client(session, clock, "client_secret_basic").client_credentials()
    assert sent_body(session) == requests_body({**EXTRA_FIELDS, **CC})[0]
    assert session.sent[0].kwargs["auth"] is not None  # the secret goes in the header


@pytest.mark.parametrize("method", ["private_key_jwt", "client_secret_jwt"])
def test_jwt_methods_body_is_unchanged(clock: FakeClock, tmp_path: Path, method: str) -> None:
    if method == "private_key_jwt":
        keys = KeyProvider(
            SecretSource("private_key_file", str(write(tmp_path / "k.pem", pem(rsa_key())))),
            alg="RS256",
            env={},
        )
        auth = assertion.private_key_jwt(
            keys, client_id="oms", audience=URL, clock=clock, lifetime=timedelta(seconds=60)
        )
    else:
        auth = assertion.client_secret_jwt(
            lambda: Secret("a-client-secret-of-32-bytes-or-more!"),
            client_id="oms",
            audience=URL,
            clock=clock,
            lifetime=timedelta(seconds=60),
        )
    session = FakeSession(ok(), ok())
    tc = TokenClient(
        session,  # type: ignore[arg-type]
        token_url=URL,
        client_id="oms",
        client_secret=lambda: pytest.fail("a JWT client reads no client secret"),
        clock=clock,
        auth_method=method,
        scope="oms.read oms.write",
        client_auth=auth,
        extra_params=EXTRA,
    )
    tc.client_credentials()
    previous = Grant(
        token=make_token(clock.now()),
        refresh_token=Secret(REFRESH),
        refresh_expires_at=clock.now() + timedelta(minutes=5),
    )
    tc.fetch(previous)
    for n, form in enumerate((CC, RT)):
        signed = session.sent[n].form["client_assertion"]  # fresh per request
        expected = {
            **EXTRA_FIELDS,
            **form,
            "client_id": "oms",
            "client_assertion_type": assertion.ASSERTION_TYPE,
            "client_assertion": signed,
        }
        assert sent_body(session, n) == requests_body(expected)[0]
