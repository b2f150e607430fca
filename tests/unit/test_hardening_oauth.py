"""Issue 8, points 1, 4 and 8 at the token endpoint client: a rejected client secret
is re-read from its source once, every exchange has an overall deadline, and
numbers from the server are parsed as ASCII digits of bounded length."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rotator.config import SecretSource
from rotator.errors import CredentialsRejected, InvalidTokenResponse, TokenEndpointUnavailable
from rotator.oauth import TokenClient, parse_response, parse_retry_after
from rotator.secretsource import SecretProvider
from tests.fakes import T0, FakeClock, FakeResponse, FakeSession

URL = "https://sso.example.com/realms/r/protocol/openid-connect/token"
GOOD = {"access_token": "tok-MARKER", "token_type": "Bearer", "expires_in": 300}


def rejected(error: str = "unauthorized_client") -> FakeResponse:
    return FakeResponse.json({"error": error, "error_description": "bad secret"}, status=401)


class FakeSecretsManager:
    """The one call SecretProvider makes, answering from a value the test changes."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.calls = 0

    def get_secret_value(self, SecretId: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        self.calls += 1
        return {"SecretString": self.value}

    def get_parameter(self, Name: str, WithDecryption: bool) -> dict[str, Any]:  # noqa: N803
        self.calls += 1
        return {"Parameter": {"Value": self.value}}


def client_with(provider: SecretProvider, session: FakeSession, clock: FakeClock) -> TokenClient:
    return TokenClient(
        session,  # type: ignore[arg-type]
        token_url=URL,
        client_id="oms",
        client_secret=provider,
        clock=clock,
        reresolve_secret=provider.invalidate,
    )


# ---------------------------------------------------------------- point 1


@pytest.mark.parametrize("kind", ["client_secret_secretsmanager", "client_secret_ssm"])
@pytest.mark.parametrize("error", ["invalid_client", "unauthorized_client"])
def test_rejection_rereads_an_aws_secret_and_retries_at_once(
    clock: FakeClock, kind: str, error: str
) -> None:
    aws = FakeSecretsManager("old-secret")
    provider = SecretProvider(SecretSource(kind, "oms/client"), client_for=lambda s, r: aws)
    session = FakeSession(rejected(error), FakeResponse.json(GOOD))
    client = client_with(provider, session, clock)
    assert provider.get().reveal() == "old-secret"  # cached, as in a running daemon
    aws.value = "new-secret"  # the operator updated the stored copy

    grant = client.client_credentials()

    assert grant.token.access_token == "tok-MARKER"
    assert [r.form["client_secret"] for r in session.sent] == ["old-secret", "new-secret"]


def test_rejection_rereads_a_file_secret(clock: FakeClock, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("old-secret\n")
    provider = SecretProvider(SecretSource("client_secret_file", str(path)))
    session = FakeSession(rejected(), FakeResponse.json(GOOD))
    session.on_send = lambda request: path.write_text("new-secret\n")
    client = client_with(provider, session, clock)

    client.client_credentials()

    assert [r.form["client_secret"] for r in session.sent] == ["old-secret", "new-secret"]


def test_rejection_rereads_an_env_secret(clock: FakeClock) -> None:
    env = {"OMS_SECRET": "old-secret"}
    provider = SecretProvider(SecretSource("client_secret_env", "OMS_SECRET"), env=env)
    session = FakeSession(rejected(), FakeResponse.json(GOOD))
    session.on_send = lambda request: env.update(OMS_SECRET="new-secret")
    client = client_with(provider, session, clock)

    client.client_credentials()

    assert [r.form["client_secret"] for r in session.sent] == ["old-secret", "new-secret"]


def test_unchanged_secret_is_a_rejection_after_one_reread(clock: FakeClock) -> None:
    aws = FakeSecretsManager("same-secret")
    provider = SecretProvider(
        SecretSource("client_secret_secretsmanager", "oms/client"), client_for=lambda s, r: aws
    )
    session = FakeSession(rejected())
    client = client_with(provider, session, clock)

    with pytest.raises(CredentialsRejected):
        client.client_credentials()

    assert len(session.sent) == 1  # no retry with the same secret
    assert aws.calls == 2  # the first read and exactly one re-read


def test_a_still_rejected_new_secret_is_not_retried_again(clock: FakeClock) -> None:
    aws = FakeSecretsManager("old-secret")
    provider = SecretProvider(
        SecretSource("client_secret_secretsmanager", "oms/client"), client_for=lambda s, r: aws
    )
    session = FakeSession(rejected(), rejected())
    session.on_send = lambda request: setattr(aws, "value", aws.value + "+")
    client = client_with(provider, session, clock)

    with pytest.raises(CredentialsRejected):
        client.client_credentials()

    assert len(session.sent) == 2  # once more, never a loop


# ---------------------------------------------------------------- point 4


class DrippingResponse(FakeResponse):
    """A body that arrives a byte at a time; each byte costs `step` of monotonic time."""

    def iter_content(self, chunk_size: int = 1) -> Any:
        for byte in self.body:
            yield bytes([byte])


def test_token_request_has_an_overall_deadline(clock: FakeClock) -> None:
    body = json.dumps(GOOD).encode()
    session = FakeSession(DrippingResponse(status_code=200, body=body))
    client = TokenClient(
        session,  # type: ignore[arg-type]
        token_url=URL,
        client_id="oms",
        client_secret=lambda: __import__("rotator.secret").secret.Secret("s"),
        clock=clock,
        deadline=0.0,  # already over when the first byte arrives
    )

    with pytest.raises(TokenEndpointUnavailable, match="deadline"):
        client.client_credentials()
    assert session.responses[0].closed


def test_refresh_settings_have_a_documented_deadline_key() -> None:
    from rotator.config import from_mapping

    settings = from_mapping(
        {
            "credentials": [
                {
                    "name": "oms",
                    "token_url": URL,
                    "client_id": "oms",
                    "client_secret_env": "X",
                    "refresh": {"request_deadline_seconds": 12},
                    "targets": [{"type": "file", "path": "/tmp/t"}],
                }
            ]
        }
    )
    assert settings.credentials[0].refresh.request_deadline_seconds == 12.0


# ---------------------------------------------------------------- point 8


@pytest.mark.parametrize("value", ["²", "١٢", "9" * 5000, "1" * 70])
def test_non_ascii_or_huge_retry_after_is_ignored(value: str) -> None:
    assert parse_retry_after(value, T0) is None


@pytest.mark.parametrize("value", ["²", "9" * 5000])
def test_non_ascii_or_huge_expires_in_is_a_clear_rejection(value: str) -> None:
    body = json.dumps({**GOOD, "expires_in": value}).encode()
    with pytest.raises(InvalidTokenResponse, match="expires_in must be a number"):
        parse_response(
            status=200,
            headers={},
            body=body,
            sent_at=T0,
            url=URL,
            grant_type="client_credentials",
        )


def test_retry_after_superscript_on_503_is_a_clean_unavailable() -> None:
    with pytest.raises(TokenEndpointUnavailable) as info:
        parse_response(
            status=503,
            headers={"Retry-After": "²"},
            body=b"",
            sent_at=T0,
            url=URL,
            grant_type="client_credentials",
        )
    assert info.value.retry_after is None
