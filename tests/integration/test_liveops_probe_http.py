"""The probes over real HTTP (in process): KeycloakStub's resource and introspection
endpoint, through a FaultProxy that stalls, resets or fails. A failing probe is an
``error``, never a revocation, and a stalled one is cut at the request deadline (the
hardening Deadline), however long the read timeout."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rotator.app import build_session
from rotator.clock import SystemClock
from rotator.oauth import TokenClient
from rotator.probe import ACTIVE, ERROR, REVOKED, HttpOptions, introspection_probe, verify_probe
from rotator.secret import Secret
from rotator.testing import FaultProxy, KeycloakStub

pytestmark = pytest.mark.timeout(60)

CLIENT_ID, CLIENT_SECRET = "oms-client", "probe-http-secret"


@pytest.fixture
def stub() -> Iterator[KeycloakStub]:
    with KeycloakStub(clients={CLIENT_ID: CLIENT_SECRET}) as kc:
        yield kc


@pytest.fixture
def proxy(stub: KeycloakStub) -> Iterator[FaultProxy]:
    with FaultProxy(stub.base_url) as fault_proxy:
        yield fault_proxy


def client(url: str, method: str) -> TokenClient:
    return TokenClient(
        build_session(),
        token_url=url,
        client_id=CLIENT_ID,
        client_secret=lambda: Secret(CLIENT_SECRET),
        clock=SystemClock(),
        auth_method=method,
    )


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_both_probes_see_a_revocation(stub: KeycloakStub, method: str) -> None:
    token = client(stub.token_url, method).client_credentials().token
    options = HttpOptions(deadline=5)
    by_verify = verify_probe(build_session(), stub.verify_url, options)
    by_introspection = introspection_probe(
        build_session(), stub.introspection_url, client(stub.token_url, method), options
    )
    assert (by_verify(token).outcome, by_introspection(token).outcome) == (ACTIVE, ACTIVE)
    stub.revoke_access_tokens()
    assert (by_verify(token).outcome, by_introspection(token).outcome) == (REVOKED, REVOKED)
    assert stub.introspection_count(active=True) == 1
    assert stub.introspection_count(active=False) == 1


def test_introspection_with_a_wrong_secret_is_an_error_not_a_revocation(
    stub: KeycloakStub,
) -> None:
    token = client(stub.token_url, "client_secret_post").client_credentials().token
    wrong = TokenClient(
        build_session(),
        token_url=stub.token_url,
        client_id=CLIENT_ID,
        client_secret=lambda: Secret("not-the-secret"),
        clock=SystemClock(),
    )
    result = introspection_probe(build_session(), stub.introspection_url, wrong, HttpOptions())(
        token
    )
    assert result.outcome == ERROR and "HTTP 401" in result.detail
    assert stub.introspection_count() == 0


def test_failing_probes_are_errors_and_a_stall_is_cut_at_the_deadline(
    stub: KeycloakStub, proxy: FaultProxy
) -> None:
    token = client(stub.token_url, "client_secret_post").client_credentials().token
    url = proxy.url + "/oms-api/"
    # a read timeout far beyond the deadline: only the Deadline can end a stall
    probe = verify_probe(build_session(), url, HttpOptions(timeout=(5, 60), deadline=1))
    proxy.fail(503)
    proxy.reset()
    proxy.stall()
    results = [probe(token) for _ in range(3)]
    assert [r.outcome for r in results] == [ERROR, ERROR, ERROR]
    assert "HTTP 503" in results[0].detail
    assert "unreachable" in results[1].detail
    assert "within the 1 s deadline" in results[2].detail
    proxy.clear()
    assert probe(token).outcome == ACTIVE
    assert stub.verify_count(ok=True) == 1  # the faults never reached the resource
