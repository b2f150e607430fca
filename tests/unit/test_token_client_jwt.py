"""TokenClient with RFC 7523 client authentication and extra_params: what goes on
the wire for client_credentials, refresh and the fallback, and the re-read of the
key after a rejection."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from rotator import assertion
from rotator.config import SecretSource
from rotator.errors import CredentialsRejected, TokenEndpointUnavailable
from rotator.keysource import KeyProvider
from rotator.oauth import Grant, TokenClient
from rotator.secret import Secret
from tests.fakes import FakeClock, FakeResponse, FakeSession, make_token
from tests.jwtkeys import pem, rsa_key, write

URL = "https://sso.example.com/realms/prod/protocol/openid-connect/token"
BODY = {"access_token": "eyJ-access", "expires_in": 300, "token_type": "Bearer"}
REFRESH = "refresh-token-MARKER"
EXTRA = (("audience", "oms-api"), ("resource", "https://a"), ("resource", "https://b"))
REJECTED = FakeResponse.json({"error": "invalid_client", "error_description": "bad"}, 401)


def ok(**extra: Any) -> FakeResponse:
    return FakeResponse.json({**BODY, **extra})


def jwt_client(
    session: FakeSession, clock: FakeClock, key_path: Path, **kw: Any
) -> tuple[TokenClient, KeyProvider]:
    keys = KeyProvider(SecretSource("private_key_file", str(key_path)), alg="RS256", env={})
    auth = assertion.private_key_jwt(
        keys, client_id="oms", audience=URL, clock=clock, lifetime=timedelta(seconds=60)
    )
    return (
        TokenClient(
            session,  # type: ignore[arg-type]
            token_url=URL,
            client_id="oms",
            client_secret=lambda: pytest.fail("a JWT client must not read a client secret"),
            clock=clock,
            auth_method="private_key_jwt",
            scope="oms.read",
            client_auth=auth,
            extra_params=kw.pop("extra_params", EXTRA),
            **kw,
        ),
        keys,
    )


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return write(tmp_path / "key.pem", pem(rsa_key()))


def previous_grant(clock: FakeClock) -> Grant:
    return Grant(
        token=make_token(clock.now()),
        refresh_token=Secret(REFRESH),
        refresh_expires_at=clock.now() + timedelta(minutes=30),
    )


def jti(sent: Any) -> str:
    claims = jwt.decode(sent.form["client_assertion"], options={"verify_signature": False})
    return str(claims["jti"])


def test_client_credentials_form(clock: FakeClock, key_path: Path) -> None:
    session = FakeSession(ok())
    tc, _ = jwt_client(session, clock, key_path)
    tc.client_credentials()
    data = session.sent[0].form
    assert data["grant_type"] == "client_credentials"
    assert data["scope"] == "oms.read"
    assert data["audience"] == "oms-api"
    assert data["resource"] == ["https://a", "https://b"]  # requests repeats the field
    assert data["client_id"] == "oms"
    assert data["client_assertion_type"] == assertion.ASSERTION_TYPE
    assert "client_secret" not in data
    assert session.sent[0].kwargs["auth"] is None


def test_extra_params_and_a_new_assertion_on_refresh_and_fallback(
    clock: FakeClock, key_path: Path
) -> None:
    invalid = FakeResponse.json({"error": "invalid_grant"}, 400)
    session = FakeSession(ok(), invalid, ok())
    tc, _ = jwt_client(session, clock, key_path)
    tc.fetch(previous_grant(clock))  # refresh, accepted
    tc.fetch(previous_grant(clock))  # refresh refused -> client_credentials at once
    grants = [s.form["grant_type"] for s in session.sent]
    assert grants == ["refresh_token", "refresh_token", "client_credentials"]
    for sent in session.sent:
        assert sent.form["audience"] == "oms-api"
        assert sent.form["resource"] == ["https://a", "https://b"]
    assert session.sent[0].form["refresh_token"] == REFRESH
    assert len({jti(s) for s in session.sent}) == 3


def test_extra_params_on_the_secret_methods_too(clock: FakeClock) -> None:
    session = FakeSession(ok(), ok())
    for method in ("client_secret_post", "client_secret_basic"):
        TokenClient(
            session,  # type: ignore[arg-type]
            token_url=URL,
            client_id="oms",
            client_secret=lambda: Secret("client-secret-value"),
            clock=clock,
            auth_method=method,
            extra_params=(("audience", "oms-api"),),
        ).refresh(Secret(REFRESH))
    assert [s.form["audience"] for s in session.sent] == ["oms-api", "oms-api"]
    assert session.sent[0].form["client_secret"] == "client-secret-value"


def test_a_retry_sends_a_new_assertion(clock: FakeClock, key_path: Path) -> None:
    session = FakeSession(FakeResponse(status_code=503), ok())
    tc, _ = jwt_client(session, clock, key_path)
    with pytest.raises(TokenEndpointUnavailable):
        tc.client_credentials()
    tc.client_credentials()
    assert jti(session.sent[0]) != jti(session.sent[1])


def test_rejection_with_an_unchanged_key_is_final_after_one_request(
    clock: FakeClock, key_path: Path
) -> None:
    session = FakeSession(REJECTED)
    tc, _ = jwt_client(session, clock, key_path)
    with pytest.raises(CredentialsRejected):
        tc.client_credentials()
    assert len(session.sent) == 1


def test_rejection_rereads_the_key_once_and_retries_with_a_rotated_key(
    clock: FakeClock, tmp_path: Path
) -> None:
    source = tmp_path / "key.pem"
    write(source, pem(rsa_key()))
    session = FakeSession(REJECTED, ok())
    rotated = pem(rsa_key(2048, 1))
    session.on_send = lambda _r: write(source, rotated) if len(session.sent) == 1 else None
    tc, keys = jwt_client(session, clock, source)
    before = keys.get().thumbprint
    tc.client_credentials()
    assert len(session.sent) == 2
    assert keys.get().thumbprint != before
    second = session.sent[1].form["client_assertion"]
    jwt.decode(
        second,
        rsa_key(2048, 1).public_key(),
        algorithms=["RS256"],
        audience=URL,
        options={"verify_exp": False},
    )


def test_rejection_again_after_the_reread_is_final(clock: FakeClock, tmp_path: Path) -> None:
    source = write(tmp_path / "key.pem", pem(rsa_key()))
    session = FakeSession(REJECTED, REJECTED)
    rotated = pem(rsa_key(2048, 1))
    session.on_send = lambda _r: write(source, rotated)
    tc, _ = jwt_client(session, clock, source)
    with pytest.raises(CredentialsRejected):
        tc.client_credentials()
    assert len(session.sent) == 2


def test_client_secret_jwt_rereads_a_rotated_secret_once(clock: FakeClock, tmp_path: Path) -> None:
    from rotator.secretsource import SecretProvider

    path = tmp_path / "secret"
    path.write_text("old-secret-0123456789abcdef0123456789\n")
    secrets = SecretProvider(SecretSource("client_secret_file", str(path)))
    auth = assertion.client_secret_jwt(
        secrets, client_id="oms", audience=URL, clock=clock, lifetime=timedelta(seconds=60)
    )
    session = FakeSession(REJECTED, ok(), REJECTED)
    new = "new-secret-0123456789abcdef0123456789"
    session.on_send = lambda _r: path.write_text(new) if len(session.sent) == 1 else None
    tc = TokenClient(
        session,  # type: ignore[arg-type]
        token_url=URL,
        client_id="oms",
        client_secret=secrets,
        clock=clock,
        auth_method="client_secret_jwt",
        client_auth=auth,
    )
    tc.client_credentials()  # rejected, secret changed: asked again, signed with the new one
    second = session.sent[1].form["client_assertion"]
    jwt.decode(
        second, new.encode(), algorithms=["HS256"], audience=URL, options={"verify_exp": False}
    )
    with pytest.raises(CredentialsRejected):  # rejected, secret unchanged: final
        tc.client_credentials()
    assert len(session.sent) == 3


# Keycloak 26 refuses a bad assertion with 400, not 401 (seen in test_keycloak_jwt.py).
KEYCLOAK_REFUSALS = {
    "signed-jwt": {
        "error": "invalid_client",
        "error_description": "Client authentication with signed JWT failed: "
        "Signature on JWT token failed validation",
    },
    "unknown-kid": {"error": "invalid_client", "error_description": "Unable to load public key"},
    "secret-jwt": {
        "error": "unauthorized_client",
        "error_description": "Client authentication with client secret signed JWT failed: "
        "Signature on JWT token by client secret  failed validation",
    },
}


@pytest.mark.parametrize("body", KEYCLOAK_REFUSALS.values(), ids=KEYCLOAK_REFUSALS.keys())
@pytest.mark.parametrize("rotated", [False, True], ids=["same-key", "rotated-key"])
def test_keycloak_400_refusal_is_a_rejection_with_one_reread(
    clock: FakeClock, tmp_path: Path, body: dict[str, str], rotated: bool
) -> None:
    source = write(tmp_path / "key.pem", pem(rsa_key()))
    session = FakeSession(FakeResponse.json(body, 400), ok())
    if rotated:
        session.on_send = lambda _r: write(source, pem(rsa_key(2048, 1)))
    tc, _ = jwt_client(session, clock, source)
    if rotated:
        tc.client_credentials()  # re-read, changed: asked again at once
        assert len(session.sent) == 2
    else:
        with pytest.raises(CredentialsRejected) as err:
            tc.client_credentials()
        assert err.value.exit_code == 3
        assert (err.value.status, err.value.error) == (400, body["error"])
        assert len(session.sent) == 1
