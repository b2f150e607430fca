"""The oidc-provider test peer behaves like the Keycloak token endpoint we rely on.

Real HTTP over 127.0.0.1 against npm ``oidc-provider`` (see tests/fixtures/oidc.py).
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.fixtures.oidc import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    OidcPeer,
    OidcPeerError,
    node_peer_available,
    require_node_peer,
)

pytestmark = pytest.mark.node

PeerFactory = Callable[..., OidcPeer]


def _sleep_past(exp: int) -> None:
    # oidc-provider treats a token as expired once floor(now) >= exp.
    time.sleep(max(0.0, exp - time.time()) + 0.05)


def _jwt_claims(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims


def test_node_peer_available_reports_versions() -> None:
    require_node_peer()
    ok, why = node_peer_available()
    assert ok
    assert "oidc-provider 9." in why


def test_addresses_are_keycloak_shaped(oidc_peer: OidcPeer) -> None:
    assert oidc_peer.issuer == f"{oidc_peer.base_url}/auth/realms/astore-p2p"
    assert oidc_peer.token_url == f"{oidc_peer.issuer}/protocol/openid-connect/token"
    assert oidc_peer.introspection_url == f"{oidc_peer.token_url}/introspect"
    discovery = requests.get(f"{oidc_peer.issuer}/.well-known/openid-configuration", timeout=5)
    assert discovery.status_code == 200
    meta = discovery.json()
    assert meta["issuer"] == oidc_peer.issuer
    assert meta["token_endpoint"] == oidc_peer.token_url
    assert meta["introspection_endpoint"] == oidc_peer.introspection_url
    assert "client_credentials" in meta["grant_types_supported"]
    assert "refresh_token" not in meta["grant_types_supported"]


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_client_credentials_succeeds(oidc_peer: OidcPeer, auth: str) -> None:
    if auth == "basic":
        resp = requests.post(
            oidc_peer.token_url,
            data={"grant_type": "client_credentials"},
            auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
            timeout=5,
        )
    else:
        resp = requests.post(
            oidc_peer.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": DEFAULT_CLIENT_ID,
                "client_secret": DEFAULT_CLIENT_SECRET,
            },
            timeout=5,
        )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers["cache-control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["access_token"], str)
    assert len(body["access_token"]) >= 32
    assert body["expires_in"] == oidc_peer.ttl
    assert "refresh_token" not in body
    assert body["refresh_expires_in"] == 0  # Keycloak's answer when refresh tokens are off
    assert oidc_peer.introspect(body["access_token"])


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_wrong_secret_is_401_invalid_client(oidc_peer: OidcPeer, auth: Any) -> None:
    resp = oidc_peer.request_token(auth=auth, client_secret="not-the-secret")
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    assert "access_token" not in resp.json()


def test_unknown_client_is_401_invalid_client(oidc_peer: OidcPeer) -> None:
    resp = oidc_peer.request_token(client_id="nobody", client_secret="x")
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


def test_missing_client_authentication_is_400(oidc_peer: OidcPeer) -> None:
    resp = requests.post(oidc_peer.token_url, data={"grant_type": "client_credentials"}, timeout=5)
    # Keycloak says 400 invalid_client here; oidc-provider says 400 invalid_request.
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"


def test_refresh_grant_is_unsupported_when_refresh_is_off(oidc_peer: OidcPeer) -> None:
    resp = oidc_peer.request_token(grant_type="refresh_token", refresh_token="whatever")
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_grant_type"


def test_token_is_active_then_expires(oidc_peer: OidcPeer) -> None:
    token = oidc_peer.request_token().json()["access_token"]
    info = oidc_peer.introspection(token)
    assert info["active"] is True
    assert info["client_id"] == DEFAULT_CLIENT_ID
    assert info["exp"] - info["iat"] == oidc_peer.ttl
    assert oidc_peer.introspect("not-a-token-we-issued") is False
    _sleep_past(info["exp"])
    assert oidc_peer.introspect(token) is False


def test_failure_injection_then_recovery_and_stats(oidc_peer: OidcPeer) -> None:
    assert oidc_peer.fail(503, times=2, retry_after=2) == 2
    for _ in range(2):
        resp = oidc_peer.request_token()
        assert resp.status_code == 503
        assert resp.headers["content-type"].startswith("text/html")
        assert resp.headers["retry-after"] == "2"
    assert oidc_peer.request_token(auth="post").status_code == 200
    assert oidc_peer.request_token(client_secret="bad").status_code == 401

    stats = oidc_peer.stats()
    assert stats["token_requests"] == 4
    assert stats["by_grant"] == {
        "client_credentials": {"injected_503": 2, "ok": 1, "invalid_client": 1}
    }
    assert stats["auth_methods"] == {"client_secret_basic": 3, "client_secret_post": 1}
    assert stats["pending_failures"] == 0


def test_failure_injection_custom_body_and_delay(oidc_peer: OidcPeer) -> None:
    oidc_peer.fail(429, body={"error": "slow_down"}, content_type="application/json")
    resp = oidc_peer.request_token()
    assert resp.status_code == 429
    assert resp.json() == {"error": "slow_down"}

    # Order, not durations: a request sent after the delayed one is answered first.
    oidc_peer.fail(status=0, delay_ms=3000)
    answered: list[tuple[str, int]] = []

    def delayed() -> None:
        answered.append(("delayed", oidc_peer.request_token().status_code))

    caller = threading.Thread(target=delayed)
    caller.start()
    deadline = time.monotonic() + 30
    while oidc_peer.stats()["pending_failures"]:  # the delayed request took the fault
        assert time.monotonic() < deadline, "the peer never took the delay"
        time.sleep(0.01)
    answered.append(("prompt", oidc_peer.request_token().status_code))
    caller.join(60)
    assert answered == [("prompt", 200), ("delayed", 200)]


def test_stats_reset_between_tests(oidc_peer: OidcPeer) -> None:
    # what the fixture does before each test, checked on a peer this test dirtied itself
    assert oidc_peer.request_token().status_code == 200
    oidc_peer.fail(503, times=2)
    stats = oidc_peer.stats()
    assert (stats["token_requests"], stats["pending_failures"]) == (1, 2)
    oidc_peer.reset()
    stats = oidc_peer.stats()
    assert stats["token_requests"] == 0
    assert stats["pending_failures"] == 0
    assert oidc_peer.request_token().status_code == 200  # no failure left queued


def test_refresh_tokens_keycloak_style(oidc_peer_factory: PeerFactory) -> None:
    peer = oidc_peer_factory(
        refresh=True,
        refresh_ttl=60,
        clients=[
            {"client_id": "oms-client", "client_secret": "s1"},
            {
                "client_id": "other",
                "client_secret": "s2",
                "token_endpoint_auth_method": "client_secret_post",
            },
        ],
    )
    first = peer.request_token()
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["refresh_expires_in"] == 60
    refresh_token = body["refresh_token"]
    assert refresh_token

    second = peer.request_token(grant_type="refresh_token", refresh_token=refresh_token)
    assert second.status_code == 200, second.text
    renewed = second.json()
    assert renewed["access_token"] != body["access_token"]
    assert renewed["token_type"] == "Bearer"
    assert renewed["expires_in"] == peer.ttl
    assert renewed["refresh_token"] not in (refresh_token, "")
    assert peer.introspect(renewed["access_token"])

    # Without rotation a refresh token may be used again (Keycloak's default).
    assert (
        peer.request_token(grant_type="refresh_token", refresh_token=refresh_token).status_code
        == 200
    )
    # Client authentication still applies to the refresh grant...
    bad = peer.request_token(
        grant_type="refresh_token", refresh_token=refresh_token, client_secret="wrong"
    )
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_client"
    # ...and another client's refresh token is refused. (Registered for
    # client_secret_post, "other" authenticates with basic: oidc-provider takes both.)
    stolen = peer.request_token(
        grant_type="refresh_token",
        refresh_token=refresh_token,
        client_id="other",
        client_secret="s2",
    )
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"

    unknown = peer.request_token(grant_type="refresh_token", refresh_token="forged")
    assert unknown.status_code == 400
    assert unknown.json() == {"error": "invalid_grant", "error_description": "Token is not active"}

    assert peer.revoke_refresh() >= 3
    revoked = peer.request_token(grant_type="refresh_token", refresh_token=refresh_token)
    assert revoked.status_code == 400
    assert revoked.json() == {"error": "invalid_grant", "error_description": "Token is not active"}
    # The way out is a fresh client_credentials grant.
    assert "refresh_token" in peer.request_token().json()

    by_grant = peer.stats()["by_grant"]
    assert by_grant["client_credentials"] == {"ok": 2}
    assert by_grant["refresh_token"] == {"ok": 2, "invalid_client": 1, "invalid_grant": 3}


def test_refresh_rotation_spends_tokens(oidc_peer_factory: PeerFactory) -> None:
    peer = oidc_peer_factory(refresh=True, refresh_rotate=True)
    refresh_token = peer.request_token().json()["refresh_token"]
    assert (
        peer.request_token(grant_type="refresh_token", refresh_token=refresh_token).status_code
        == 200
    )
    reused = peer.request_token(grant_type="refresh_token", refresh_token=refresh_token)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"


def test_jwt_format_and_keycloak_error_code(oidc_peer_factory: PeerFactory) -> None:
    peer = oidc_peer_factory(token_format="jwt", ttl=5, bad_client_error="unauthorized_client")
    body = peer.request_token().json()
    token = body["access_token"]
    assert token.count(".") == 2
    claims = _jwt_claims(token)
    assert claims["iss"] == peer.issuer
    assert claims["client_id"] == DEFAULT_CLIENT_ID
    assert claims["exp"] - claims["iat"] == 5
    assert body["expires_in"] == 5
    assert peer.introspect(token)
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert not peer.introspect(tampered)

    bad = peer.request_token(client_secret="wrong")
    assert bad.status_code == 401
    assert bad.json()["error"] == "unauthorized_client"


def test_bad_config_fails_fast_with_the_reason(oidc_peer_factory: PeerFactory) -> None:
    # the reason comes from the peer's own exit, not from a start-up timeout
    with pytest.raises(OidcPeerError, match="ttl must be a positive integer"):
        oidc_peer_factory(ttl=0)


def test_stop_ends_the_process_and_frees_the_port() -> None:
    require_node_peer()
    with OidcPeer() as peer:
        assert peer.startup_seconds is not None  # measured, reported; never asserted on
        proc = peer._proc
        assert proc is not None
        token_url = peer.token_url
        assert peer.request_token().status_code == 200
    assert proc.returncode == 0  # clean exit on SIGTERM
    assert not peer.running
    with pytest.raises(requests.ConnectionError):
        requests.post(token_url, data={"grant_type": "client_credentials"}, timeout=2)


def test_context_manager_stops_on_error() -> None:
    require_node_peer()
    peer = OidcPeer()
    with pytest.raises(ZeroDivisionError), peer:
        assert peer.running
        _ = 1 / 0
    assert not peer.running
    assert peer.stop() is None  # idempotent


def test_peer_exits_when_its_parent_goes_away() -> None:
    require_node_peer()
    peer = OidcPeer().start()
    try:
        proc = peer._proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.close()  # what the OS does when the Python parent dies
        assert proc.wait(timeout=5) == 0
    finally:
        peer.stop()


def test_sigint_also_exits_cleanly() -> None:
    require_node_peer()
    peer = OidcPeer().start()
    try:
        proc = peer._proc
        assert proc is not None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        peer.stop()
