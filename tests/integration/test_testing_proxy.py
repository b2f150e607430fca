"""Real-HTTP tests of the shipped FaultProxy (127.0.0.1 only)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from rotator.testing import FaultProxy, KeycloakStub
from tests import gates
from tests.harness.factories import StubFactory
from tests.harness.stubs import CC, TIMEOUT, helper_threads, post

pytestmark = pytest.mark.timeout(30)


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


def test_proxy_in_front_of_keycloak_stub(make_stub: StubFactory) -> None:
    kc = make_stub()
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
