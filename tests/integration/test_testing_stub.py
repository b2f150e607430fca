"""Real-HTTP tests of the shipped KeycloakStub (127.0.0.1 only)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
import requests

from rotator.testing import KeycloakStub
from tests.harness.stubs import CC, CLIENT, SECRET, TIMEOUT, helper_threads, post

pytestmark = pytest.mark.timeout(30)

REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def jwt_part(token: str, index: int) -> dict[str, Any]:
    part = token.split(".")[index]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kc() -> Iterator[KeycloakStub]:
    with KeycloakStub() as stub:
        yield stub


@pytest.fixture
def kc_refresh(clock: FakeClock) -> Iterator[KeycloakStub]:
    with KeycloakStub(use_refresh_tokens=True, clock=clock) as stub:
        yield stub


# ------------------------------------------------------------------------------------------
# KeycloakStub
# ------------------------------------------------------------------------------------------


def test_client_credentials_post(kc: KeycloakStub) -> None:
    assert kc.base_url.startswith("http://127.0.0.1:")
    assert kc.token_url == (kc.base_url + "/auth/realms/astore-p2p/protocol/openid-connect/token")
    r = post(kc.token_url, CC)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Pragma"] == "no-cache"
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["refresh_expires_in"] == 0
    assert "refresh_token" not in body
    assert "session_state" not in body
    assert body["not-before-policy"] == 0
    assert body["scope"] == "profile email"
    assert kc.is_active(body["access_token"])
    assert kc.issued_tokens() == {body["access_token"]}
    [req] = kc.requests()
    assert (req.grant_type, req.client_id, req.auth_method) == (
        "client_credentials",
        CLIENT,
        "client_secret_post",
    )
    assert (req.outcome, req.status) == ("ok", 200)
    assert kc.count(grant_type="client_credentials", outcome="ok") == 1


def test_client_secret_basic_is_form_urlencoded(kc: KeycloakStub) -> None:
    secret = "s3:cr+t/ é&="
    kc.set_client_secret("odd client", secret)
    raw = f"{quote_plus('odd client')}:{quote_plus(secret)}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    r = post(kc.token_url, {"grant_type": "client_credentials"}, headers=headers)
    assert r.status_code == 200, r.text
    assert jwt_part(r.json()["access_token"], 1)["azp"] == "odd client"
    assert kc.requests()[-1].auth_method == "client_secret_basic"
    # Plain requests basic auth works too for secrets without special characters.
    r = post(kc.token_url, {"grant_type": "client_credentials"}, auth=(CLIENT, SECRET))
    assert r.status_code == 200


def test_every_token_is_unique(kc: KeycloakStub) -> None:
    tokens = {post(kc.token_url, CC).json()["access_token"] for _ in range(5)}
    assert len(tokens) == 5
    assert kc.issued_tokens() == tokens


@pytest.mark.parametrize(
    ("data", "auth", "error"),
    [
        ({**CC, "client_secret": "wrong"}, None, "unauthorized_client"),
        ({**CC, "client_id": "nobody"}, None, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": CLIENT}, None, "unauthorized_client"),
        ({"grant_type": "client_credentials"}, (CLIENT, "wrong"), "unauthorized_client"),
    ],
    ids=["wrong-secret", "unknown-client", "no-secret", "basic-wrong-secret"],
)
def test_bad_client_credentials(
    kc: KeycloakStub, data: dict[str, str], auth: tuple[str, str] | None, error: str
) -> None:
    # As Keycloak 26 answers (tests/integration/test_keycloak_stub_parity.py).
    r = post(kc.token_url, data, auth=auth)
    assert r.status_code == 401
    assert r.json() == {
        "error": error,
        "error_description": "Invalid client or Invalid client credentials",
    }
    assert kc.count(outcome=error) == 1
    assert kc.issued_tokens() == set()


def test_legacy_errors() -> None:
    with KeycloakStub(legacy_errors=True) as stub:
        r = post(stub.token_url, {**CC, "client_secret": "wrong"})
        assert r.status_code == 401
        assert r.json() == {"error": "invalid_client", "error_description": "Invalid client secret"}


def test_missing_client_id(kc: KeycloakStub) -> None:
    r = post(kc.token_url, {"grant_type": "client_credentials", "client_secret": SECRET})
    assert r.status_code == 401
    assert r.json() == {
        "error": "invalid_client",
        "error_description": "Invalid client or Invalid client credentials",
    }


def test_grant_type_errors(kc: KeycloakStub) -> None:
    r = post(kc.token_url, {**CC, "grant_type": "password"})
    assert r.status_code == 400
    assert r.json() == {
        "error": "unauthorized_client",
        "error_description": "Client not allowed for direct access grants",
    }
    r = post(kc.token_url, {**CC, "grant_type": "bogus"})
    assert r.status_code == 400
    assert r.json()["error"] == "unsupported_grant_type"
    r = post(kc.token_url, {"client_id": CLIENT, "client_secret": SECRET})
    assert r.status_code == 400
    assert r.json() == {
        "error": "invalid_request",
        "error_description": "Missing form parameter: grant_type",
    }
    # A JSON body is not a form: Keycloak sees no grant_type.
    r = requests.post(kc.token_url, json=CC, timeout=TIMEOUT)
    assert r.status_code == 400
    assert r.json()["error_description"] == "Missing form parameter: grant_type"


def test_non_post_is_405_and_unknown_paths_404(kc: KeycloakStub) -> None:
    r = requests.get(kc.token_url, timeout=TIMEOUT)
    assert r.status_code == 405
    assert kc.count(outcome="method_not_allowed") == 1
    r = requests.post(
        kc.base_url + "/auth/realms/other/protocol/openid-connect/token", data=CC, timeout=5
    )
    assert r.status_code == 404
    assert requests.get(kc.base_url + "/nope", timeout=TIMEOUT).status_code == 404


def test_without_auth_prefix() -> None:
    with KeycloakStub(auth_prefix=False) as stub:
        assert stub.token_url == stub.base_url + "/realms/astore-p2p/protocol/openid-connect/token"
        r = post(stub.token_url, CC)
        assert r.status_code == 200
        assert jwt_part(r.json()["access_token"], 1)["iss"] == stub.base_url + "/realms/astore-p2p"
        old = stub.base_url + "/auth/realms/astore-p2p/protocol/openid-connect/token"
        assert post(old, CC).status_code == 404


def test_jwt_shape_and_expiry_are_consistent(clock: FakeClock) -> None:
    clock.now = 1_700_000_000.7
    with KeycloakStub(access_token_lifespan=2.5, clock=clock) as stub:
        body = post(stub.token_url, {**CC, "scope": "openid orders"}).json()
        token = body["access_token"]
        assert jwt_part(token, 0) == {"alg": "HS256", "typ": "JWT"}
        claims = jwt_part(token, 1)
        assert body["expires_in"] == 3  # 2.5 s rounded up: Keycloak only knows whole seconds
        assert claims["iat"] == 1_700_000_000
        assert claims["exp"] - claims["iat"] == body["expires_in"]
        assert claims["iss"] == stub.base_url + "/auth/realms/astore-p2p"
        assert claims["azp"] == CLIENT
        assert claims["typ"] == "Bearer"
        assert claims["jti"]
        assert body["scope"] == claims["scope"] == "openid profile email orders"
        assert stub.token_claims(token) == claims
        assert stub.token_claims(token[:-2] + "xx") is None
        # Active while floor(now) <= exp, Keycloak's own rule.
        clock.now = claims["exp"] + 0.9
        assert stub.is_active(token)
        clock.now = claims["exp"] + 1
        assert not stub.is_active(token)
        assert not stub.is_active("not-a-token")


def test_runtime_settings(kc: KeycloakStub) -> None:
    kc.set_access_token_lifespan(15)
    kc.set_use_refresh_tokens(True)
    body = post(kc.token_url, CC).json()
    assert body["expires_in"] == 15
    assert body["refresh_expires_in"] == 1800
    kc.set_use_refresh_tokens(False)
    assert "refresh_token" not in post(kc.token_url, CC).json()
    kc.set_client_secret(CLIENT, "rotated")
    assert post(kc.token_url, CC).status_code == 401
    assert post(kc.token_url, {**CC, "client_secret": "rotated"}).status_code == 200


def test_refresh_token_flow(kc_refresh: KeycloakStub) -> None:
    body = post(kc_refresh.token_url, CC).json()
    assert body["refresh_expires_in"] == 1800
    assert body["refresh_token"].count(".") == 2
    assert body["session_state"]
    refresh = {
        "grant_type": "refresh_token",
        "client_id": CLIENT,
        "client_secret": SECRET,
        "refresh_token": body["refresh_token"],
    }
    r = post(kc_refresh.token_url, refresh)
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["access_token"] != body["access_token"]
    assert again["refresh_token"] != body["refresh_token"]
    assert again["session_state"] == body["session_state"]
    assert kc_refresh.is_active(again["access_token"])
    # Keycloak's default does not revoke a used refresh token.
    assert post(kc_refresh.token_url, refresh).status_code == 200
    assert kc_refresh.count(grant_type="refresh_token", outcome="ok") == 2
    # The refresh grant needs client authentication too.
    r = post(kc_refresh.token_url, {**refresh, "client_secret": "wrong"})
    assert r.status_code == 401


def test_refresh_after_revoke(kc_refresh: KeycloakStub) -> None:
    body = post(kc_refresh.token_url, CC).json()
    kc_refresh.revoke_refresh_tokens()
    r = post(
        kc_refresh.token_url,
        {**CC, "grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
    )
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_grant", "error_description": "Session not active"}
    # The right reaction, a new client_credentials grant, works.
    fresh = post(kc_refresh.token_url, CC).json()
    r = post(
        kc_refresh.token_url,
        {**CC, "grant_type": "refresh_token", "refresh_token": fresh["refresh_token"]},
    )
    assert r.status_code == 200


def test_expired_and_unknown_refresh_tokens(kc_refresh: KeycloakStub, clock: FakeClock) -> None:
    body = post(kc_refresh.token_url, CC).json()
    form = {**CC, "grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    clock.advance(body["refresh_expires_in"] + 1)
    r = post(kc_refresh.token_url, form)
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_grant", "error_description": "Token is not active"}
    assert not kc_refresh.is_active(body["access_token"])

    r = post(kc_refresh.token_url, {**form, "refresh_token": "eyJ.bogus.token"})
    assert r.status_code == 400
    assert r.json()["error_description"] == "Invalid refresh token"

    kc_refresh.set_client_secret("other", "pw")
    fresh = post(kc_refresh.token_url, CC).json()
    r = post(
        kc_refresh.token_url,
        {
            **form,
            "client_id": "other",
            "client_secret": "pw",
            "refresh_token": fresh["refresh_token"],
        },
    )
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_grant"
    assert kc_refresh.count(grant_type="refresh_token", outcome="invalid_grant") == 3


def test_protected_resource(kc_refresh: KeycloakStub, clock: FakeClock) -> None:
    token = post(kc_refresh.token_url, CC).json()["access_token"]
    assert kc_refresh.verify_url == kc_refresh.base_url + "/oms-api/"
    r = requests.get(
        kc_refresh.verify_url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
    )
    assert r.status_code == 200
    assert r.text == "Hello ! Welcome to the Astoreshop OMS API"
    r = requests.get(kc_refresh.verify_url, timeout=TIMEOUT)
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    r = requests.get(
        kc_refresh.verify_url, headers={"Authorization": "Bearer forged"}, timeout=TIMEOUT
    )
    assert r.status_code == 401
    clock.advance(301)
    r = requests.get(
        kc_refresh.verify_url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
    )
    assert r.status_code == 401
    assert kc_refresh.verify_count() == 4
    assert kc_refresh.verify_count(ok=True) == 1


def test_enqueue_canned_responses(kc: KeycloakStub) -> None:
    kc.enqueue(503, "<html><body>503 Service Unavailable</body></html>", times=2)
    kc.enqueue(429, "", headers={"Retry-After": "7"})
    kc.enqueue(200, '{"access_token": 42}')
    for _ in range(2):
        r = post(kc.token_url, CC)
        assert r.status_code == 503
        assert r.headers["Content-Type"].startswith("text/html")
    r = post(kc.token_url, CC)
    assert (r.status_code, r.headers["Retry-After"]) == (429, "7")
    r = post(kc.token_url, CC)
    assert r.json() == {"access_token": 42}
    assert r.headers["Content-Type"] == "application/json"
    assert post(kc.token_url, CC).status_code == 200
    assert kc.count(outcome="injected") == 4
    assert kc.count(grant_type="client_credentials") == 5
    assert len(kc.issued_tokens()) == 1


def test_stop_closes_everything() -> None:
    baseline = helper_threads()
    stub = KeycloakStub().start()
    session = requests.Session()
    assert session.post(stub.token_url, data=CC, timeout=TIMEOUT).status_code == 200
    url = stub.token_url
    stub.stop()
    stub.stop()  # idempotent
    assert helper_threads() == baseline
    with pytest.raises(requests.ConnectionError):
        session.post(url, data=CC, timeout=TIMEOUT)
    session.close()


def test_standalone_main() -> None:
    env = {**os.environ, "STUB_CLIENT_SECRET": "from-env", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rotator.testing.keycloak",
            "--port",
            "0",
            "--lifespan",
            "15",
            "--refresh",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout is not None
        token_url = proc.stdout.readline().strip()
        assert token_url.endswith("/auth/realms/astore-p2p/protocol/openid-connect/token")
        body = post(token_url, {**CC, "client_secret": "from-env"}).json()
        assert body["expires_in"] == 15
        assert body["refresh_expires_in"] > 0
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Warning" not in err
    assert "from-env" not in err
