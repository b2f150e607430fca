"""Real-HTTP tests of the shipped test helpers: KeycloakStub and FaultProxy (127.0.0.1 only)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
import requests

from rotator.testing import FaultProxy, KeycloakStub
from tests import gates

pytestmark = pytest.mark.timeout(30)

CLIENT = "oms-client"
SECRET = "oms-secret"
CC = {"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET}
TIMEOUT = 5.0
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


def helper_threads() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith(("keycloak-stub", "fault-proxy")) and t.is_alive()
    ]


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


def post(url: str, data: dict[str, str], **kwargs: Any) -> requests.Response:
    return requests.post(url, data=data, timeout=TIMEOUT, **kwargs)


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
    ("data", "auth"),
    [
        ({**CC, "client_secret": "wrong"}, None),
        ({**CC, "client_id": "nobody"}, None),
        ({"grant_type": "client_credentials", "client_id": CLIENT}, None),
        ({"grant_type": "client_credentials"}, (CLIENT, "wrong")),
    ],
    ids=["wrong-secret", "unknown-client", "no-secret", "basic-wrong-secret"],
)
def test_bad_client_credentials(
    kc: KeycloakStub, data: dict[str, str], auth: tuple[str, str] | None
) -> None:
    r = post(kc.token_url, data, auth=auth)
    assert r.status_code == 401
    assert r.json() == {
        "error": "unauthorized_client",
        "error_description": "Invalid client or Invalid client credentials",
    }
    assert kc.count(outcome="unauthorized_client") == 1
    assert kc.issued_tokens() == set()


def test_legacy_errors() -> None:
    with KeycloakStub(legacy_errors=True) as stub:
        r = post(stub.token_url, {**CC, "client_secret": "wrong"})
        assert r.status_code == 401
        assert r.json() == {"error": "invalid_client", "error_description": "Invalid client secret"}


def test_missing_client_id(kc: KeycloakStub) -> None:
    r = post(kc.token_url, {"grant_type": "client_credentials", "client_secret": SECRET})
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_client"
    assert "client_id" in r.json()["error_description"]


def test_grant_type_errors(kc: KeycloakStub) -> None:
    r = post(kc.token_url, {**CC, "grant_type": "password"})
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


# ------------------------------------------------------------------------------------------
# FaultProxy
# ------------------------------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Echo", "yes")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _answer


@pytest.fixture
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def proxy(echo: str) -> Iterator[FaultProxy]:
    with FaultProxy(echo) as p:
        yield p


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def amz(action: str) -> dict[str, str]:
    return {"X-Amz-Target": action, "Content-Type": "application/x-amz-json-1.1"}


def test_proxy_passes_through_with_keep_alive(proxy: FaultProxy, session: requests.Session) -> None:
    for i in range(3):
        r = session.post(
            proxy.url + f"/p/{i}?q=1",
            data=b'{"a": 1}',
            headers={**amz("secretsmanager.GetSecretValue"), "Proxy-Authorization": "x"},
            timeout=TIMEOUT,
        )
        assert r.status_code == 200
        assert r.headers["X-Echo"] == "yes"
        echoed = r.json()
        assert echoed["path"] == f"/p/{i}?q=1"
        assert echoed["body"] == '{"a": 1}'
        assert echoed["headers"]["x-amz-target"] == "secretsmanager.GetSecretValue"
        assert echoed["headers"]["host"] == proxy.url.removeprefix("http://")
        assert "proxy-authorization" not in echoed["headers"]
    [entry, *_] = proxy.requests()
    assert (entry.method, entry.path, entry.fault, entry.status) == ("POST", "/p/0?q=1", None, 200)
    assert entry.target == "secretsmanager.GetSecretValue"
    assert proxy.count() == 3
    assert proxy.count(path_prefix="/p/1") == 1


def test_proxy_in_front_of_keycloak_stub(kc: KeycloakStub) -> None:
    with FaultProxy(kc.base_url) as p:
        r = post(p.url + kc.token_path, CC)
        assert r.status_code == 200
        assert r.headers["Cache-Control"] == "no-store"
        assert kc.is_active(r.json()["access_token"])
        p.fail(503, times=2, path_prefix="/auth/")
        assert [post(p.url + kc.token_path, CC).status_code for _ in range(3)] == [503, 503, 200]
        assert kc.count() == 2


def test_proxy_latency(proxy: FaultProxy, session: requests.Session) -> None:
    # Order, not durations: a request sent later, without latency, is answered first.
    proxy.add_latency(3.0)
    answered: list[tuple[str, int]] = []

    def slow() -> None:
        response = requests.get(proxy.url + "/slow", timeout=TIMEOUT)
        answered.append(("slow", response.status_code))

    caller = threading.Thread(target=slow)
    caller.start()
    deadline = time.monotonic() + 30
    while proxy.count() == 0:  # the slow request holds the latency rule
        assert time.monotonic() < deadline, "the proxy never saw the slow request"
        time.sleep(0.01)
    answered.append(("fast", session.get(proxy.url + "/fast", timeout=TIMEOUT).status_code))
    caller.join(30)
    assert answered == [("fast", 200), ("slow", 200)]
    assert {r.path: r.fault for r in proxy.requests()} == {"/slow": "latency", "/fast": None}


def test_proxy_stall_then_clear(proxy: FaultProxy, session: requests.Session) -> None:
    proxy.stall(times=None)
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(proxy.url + "/x", timeout=0.3)
    proxy.clear()
    assert session.get(proxy.url + "/x", timeout=TIMEOUT).status_code == 200
    assert [(r.fault, r.status) for r in proxy.requests()] == [("stall", None), (None, 200)]


def test_proxy_reset(proxy: FaultProxy, session: requests.Session) -> None:
    proxy.reset()
    with pytest.raises(requests.exceptions.ConnectionError):
        session.post(proxy.url + "/x", data=b"{}", timeout=TIMEOUT)
    assert session.get(proxy.url + "/x", timeout=TIMEOUT).status_code == 200


def test_proxy_fail_then_recover(proxy: FaultProxy, session: requests.Session) -> None:
    proxy.fail(502, times=2)
    proxy.fail(429, body="slow down", headers={"Retry-After": "3", "Content-Type": "text/plain"})
    for _ in range(2):
        r = session.get(proxy.url + "/x", timeout=TIMEOUT)
        assert r.status_code == 502
        assert r.text.startswith("<html>")
    r = session.get(proxy.url + "/x", timeout=TIMEOUT)
    assert (r.status_code, r.headers["Retry-After"], r.text) == (429, "3", "slow down")
    assert session.get(proxy.url + "/x", timeout=TIMEOUT).status_code == 200
    assert [r.status for r in proxy.requests()] == [502, 502, 429, 200]


def test_proxy_truncate(proxy: FaultProxy, session: requests.Session) -> None:
    proxy.truncate()
    with pytest.raises(requests.exceptions.RequestException):
        session.get(proxy.url + "/x", timeout=TIMEOUT)
    assert session.get(proxy.url + "/x", timeout=TIMEOUT).status_code == 200
    assert proxy.requests()[0].fault == "truncate"


def test_proxy_target_filter(proxy: FaultProxy, session: requests.Session) -> None:
    proxy.fail(503, times=None, target="PutSecretValue")
    url = proxy.url + "/"
    r = session.post(url, data=b"{}", headers=amz("secretsmanager.GetSecretValue"), timeout=5)
    assert r.status_code == 200
    r = session.post(url, data=b"{}", headers=amz("secretsmanager.PutSecretValue"), timeout=5)
    assert r.status_code == 503
    assert session.post(url, data=b"{}", timeout=TIMEOUT).status_code == 200
    r = session.post(url, data=b"{}", headers=amz("secretsmanager.PutSecretValue"), timeout=5)
    assert r.status_code == 503
    assert proxy.count(target="PutSecretValue") == 2
    assert proxy.count(target="secretsmanager.") == 3
    proxy.clear()
    r = session.post(url, data=b"{}", headers=amz("secretsmanager.PutSecretValue"), timeout=5)
    assert r.status_code == 200


def test_proxy_upstream_down_gives_502() -> None:
    with KeycloakStub() as stub:
        dead = stub.base_url
    with FaultProxy(dead) as p:
        assert requests.get(p.url + "/", timeout=TIMEOUT).status_code == 502


def test_proxy_refuses_non_loopback_upstream() -> None:
    for upstream in ("http://10.0.0.1:80", "http://example.com", "https://127.0.0.1:1"):
        with pytest.raises(ValueError):
            FaultProxy(upstream)


def test_proxy_stop_closes_stalled_connections(echo: str) -> None:
    baseline = helper_threads()
    p = FaultProxy(echo).start()
    p.stall(times=None)
    outcome: list[BaseException | int] = []

    def call() -> None:
        try:
            outcome.append(requests.get(p.url + "/x", timeout=120).status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 5
    while p.count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    p.stop()
    caller.join(60)  # far below the caller's own 120 s timeout: stop() closed the connection
    assert not caller.is_alive()
    assert isinstance(outcome[0], requests.ConnectionError)
    assert helper_threads() == baseline


def test_proxy_in_front_of_moto() -> None:
    gates.require_module("moto.server", "the proxy is tested in front of a moto server")
    boto3 = gates.require_module("boto3", "the proxy is tested with a boto3 client")
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        with FaultProxy(f"http://{host}:{port}") as p:
            client = boto3.client(
                "secretsmanager",
                endpoint_url=p.url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(retries={"total_max_attempts": 1}),
            )
            client.create_secret(Name="tok", SecretString="v1")
            p.fail(503, target="PutSecretValue")
            with pytest.raises(ClientError) as info:
                client.put_secret_value(SecretId="tok", SecretString="v2")
            assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
            assert p.count(target="PutSecretValue") == 1  # one attempt: no retry hid the fault
            client.put_secret_value(SecretId="tok", SecretString="v2")
            assert client.get_secret_value(SecretId="tok")["SecretString"] == "v2"
            assert p.count(target="PutSecretValue") == 2
            assert [r.fault for r in p.requests() if r.target and "Put" in r.target] == [
                "fail",
                None,
            ]
    finally:
        server.stop()
