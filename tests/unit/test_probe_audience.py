"""Keycloak 26 answers ``active: false`` when the introspecting client is not in the
token's ``aud`` (even the client the token was issued to): the probe's "not active" line
says so when the JWT shows it, so that a misconfigured realm is not read as a revocation
storm (found against the real Keycloak, tests/integration/test_keycloak_liveops.py)."""

from __future__ import annotations

import base64
import json

import pytest

from rotator.oauth import TokenClient
from rotator.probe import REVOKED, HttpOptions, introspection_probe
from rotator.secret import Secret
from tests.fakes import FakeClock, FakeResponse, FakeSession, make_token

INTROSPECT = "https://kc.example/realms/r/protocol/openid-connect/token/introspect"


def _jwt(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize(
    ("token", "hinted"),
    [
        (_jwt({"aud": ["oms-api", "account"], "azp": "oms-client"}), True),
        (_jwt({"aud": "oms-api"}), True),
        (_jwt({"aud": ["oms-api", "oms-client"]}), False),
        (_jwt({"aud": "oms-client"}), False),
        (_jwt({"azp": "oms-client"}), False),  # no aud: nothing to say
        ("opaque-access-token-MARKER", False),
    ],
)
def test_not_active_says_when_the_client_is_not_in_the_audience(token: str, hinted: bool) -> None:
    session = FakeSession(FakeResponse.json({"active": False}))
    client = TokenClient(
        session,  # type: ignore[arg-type]
        token_url="https://kc.example/realms/r/protocol/openid-connect/token",
        client_id="oms-client",
        client_secret=lambda: Secret("oms-secret"),
        clock=FakeClock(),
        auth_method="client_secret_basic",
    )
    probe = introspection_probe(session, INTROSPECT, client, HttpOptions())  # type: ignore[arg-type]
    result = probe(make_token(access_token=token))
    assert result.outcome == REVOKED
    assert result.detail.startswith("introspection endpoint https://kc.example/")
    assert ("not in the token's audience" in result.detail) is hinted
    assert "'oms-client'" in result.detail if hinted else "oms-client" not in result.detail
    assert token not in result.detail
