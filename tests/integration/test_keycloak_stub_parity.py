"""Issue 10, point 7: ``rotator.testing.KeycloakStub`` against the real server. The same
requests (good, bad secret, bad grant, refresh, revoked refresh, disabled client, ...) must
give the same status code, error code, error description and response keys, and access
tokens with the same claim names.

Keycloak 26.7.3's answers, as observed (token endpoint of realm astore-p2p), as
``status error: error_description``:

- wrong secret (post or basic), or a client_id without a secret:
  401 unauthorized_client: Invalid client or Invalid client credentials
- no client authentication at all, an unknown client, a disabled client:
  401 invalid_client: Invalid client or Invalid client credentials
- no grant_type (or a JSON body): 400 invalid_request: Missing form parameter: grant_type
- grant_type=bogus: 400 unsupported_grant_type: Unsupported grant_type (checked before the
  client secret)
- grant_type=password: 400 unauthorized_client: Client not allowed for direct access grants
- refresh without refresh_token: 400 invalid_request: No refresh token
- refresh_token=garbage: 400 invalid_grant: Invalid refresh token
- another client's refresh token: 400 invalid_grant: Invalid refresh token. Token client
  and authorized client don't match
- refresh after a logout of the service account: 400 invalid_grant: Session not active
- refresh after a client not-before: 400 invalid_grant: Stale token
- GET on the token endpoint: 405 ``{"error":"HTTP 405 Method Not Allowed"}``
- an unknown realm: 404 ``{"error":"Realm does not exist"}``
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from rotator.testing import KeycloakStub
from tests.fixtures.keycloak import CLIENTS, KeycloakServer, jwt_parts
from tests.fixtures.keycloak_admin import KeycloakAdmin

pytestmark = pytest.mark.timeout(120)

T = 30.0


class Target:
    """The same requests against Keycloak or the stub."""

    def __init__(self, token_url: str, revoke: Callable[[str], None]) -> None:
        self.token_url = token_url
        self.revoke = revoke

    def post(self, data: dict[str, str], *, auth: tuple[str, str] | None = None) -> Any:
        return requests.post(self.token_url, data=data, auth=auth, timeout=T)

    def cc(self, client: str) -> dict[str, Any]:
        resp = self.post({"grant_type": "client_credentials"}, auth=(client, CLIENTS[client]))
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body


def _form(client: str, **extra: str) -> dict[str, str]:
    return {"client_id": client, "client_secret": CLIENTS[client], **extra}


def _refresh(target: Target, *, other_client: bool = False, revoke: bool = False) -> Any:
    refresh_token = target.cc("oms-refresh")["refresh_token"]
    if revoke:
        target.revoke("oms-refresh")
    client = "oms-client" if other_client else "oms-refresh"
    return target.post(_form(client, grant_type="refresh_token", refresh_token=refresh_token))


CASES: dict[str, Callable[[Target], Any]] = {
    "good_post": lambda t: t.post(_form("oms-client", grant_type="client_credentials")),
    "good_basic": lambda t: t.post(
        {"grant_type": "client_credentials"}, auth=("oms-client", CLIENTS["oms-client"])
    ),
    "good_with_refresh": lambda t: t.post(_form("oms-refresh", grant_type="client_credentials")),
    "bad_secret_post": lambda t: t.post(
        {"grant_type": "client_credentials", "client_id": "oms-client", "client_secret": "x"}
    ),
    "bad_secret_basic": lambda t: t.post(
        {"grant_type": "client_credentials"}, auth=("oms-client", "x")
    ),
    "missing_secret": lambda t: t.post(
        {"grant_type": "client_credentials", "client_id": "oms-client"}
    ),
    "no_client_auth": lambda t: t.post({"grant_type": "client_credentials"}),
    "unknown_client": lambda t: t.post(
        {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"}
    ),
    "disabled_client": lambda t: t.post(_form("oms-disabled", grant_type="client_credentials")),
    "missing_grant_type": lambda t: t.post(_form("oms-client")),
    "json_body": lambda t: requests.post(
        t.token_url, json={"grant_type": "client_credentials"}, timeout=T
    ),
    "unsupported_grant": lambda t: t.post(_form("oms-client", grant_type="bogus")),
    "password_grant": lambda t: t.post(
        _form("oms-client", grant_type="password", username="u", password="p")
    ),
    "refresh_ok": _refresh,
    "refresh_missing_token": lambda t: t.post(_form("oms-refresh", grant_type="refresh_token")),
    "refresh_garbage": lambda t: t.post(
        _form("oms-refresh", grant_type="refresh_token", refresh_token="garbage")
    ),
    "refresh_other_client": lambda t: _refresh(t, other_client=True),
    "refresh_revoked": lambda t: _refresh(t, revoke=True),
    "get_token_endpoint": lambda t: requests.get(t.token_url, timeout=T),
    "unknown_realm": lambda t: requests.post(
        t.token_url.replace("astore-p2p", "no-such-realm"),
        data=_form("oms-client", grant_type="client_credentials"),
        timeout=T,
    ),
}


def shape(resp: requests.Response) -> dict[str, Any]:
    """What must agree: status, error, description, body keys, access-token claim names."""
    out: dict[str, Any] = {"status": resp.status_code}
    try:
        body = resp.json()
    except ValueError:
        out["content_type"] = resp.headers.get("Content-Type")
        return out
    out["keys"] = sorted(body)
    out["error"] = body.get("error")
    out["error_description"] = body.get("error_description")
    if isinstance(body.get("access_token"), str):
        out["token_type"] = body.get("token_type")
        out["claims"] = sorted(jwt_parts(body["access_token"])[1])
        # Keycloak counts expires_in from its clock after issuing: 6 or, when a second
        # ticked meanwhile, 5 for a 6 s lifespan. Only its type must agree.
        out["expires_in"] = type(body.get("expires_in")).__name__
        out["has_refresh"] = "refresh_token" in body and body["refresh_expires_in"] > 0
    return out


@pytest.fixture(scope="module")
def stub() -> Iterator[KeycloakStub]:
    with KeycloakStub(
        clients={c: CLIENTS[c] for c in ("oms-client", "oms-refresh", "oms-disabled")},
        disabled_clients={"oms-disabled"},
        refresh_clients={"oms-refresh"},
        access_token_lifespan=6,
    ) as server:
        yield server


@pytest.mark.parametrize("case", list(CASES))
def test_stub_answers_like_keycloak(real_kc: KeycloakServer, stub: KeycloakStub, case: str) -> None:
    admin = KeycloakAdmin(real_kc)
    real = Target(real_kc.token_url, admin.logout_service_account)
    fake = Target(stub.token_url, lambda client: stub.revoke_refresh_tokens())
    real_shape = shape(CASES[case](real))
    stub_shape = shape(CASES[case](fake))
    assert stub_shape == real_shape
