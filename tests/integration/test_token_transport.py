"""The token POST through ``rotator.transport`` (urllib3 pools, no requests Session),
over real sockets on loopback: what goes on the wire is what requests' Session sent,
through a proxy too; redirects are returned, never followed; connections are kept
alive; TLS trusts the credential's CA bundle and nothing else; errors map as before.
Every server here is started and stopped by its test."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rotator.app import build_session
from rotator.errors import (
    ConfigError,
    InvalidTokenResponse,
    TokenEndpointUnavailable,
)
from rotator.oauth import TokenClient
from rotator.secret import Secret
from rotator.transport import TokenTransport
from tests.fakes import FakeClock
from tests.fixtures.recording_proxy import RecordingProxy

pytestmark = pytest.mark.timeout(60)

TOKEN_BODY = b'{"access_token":"tok-MARKER-transport","token_type":"Bearer","expires_in":300}'


class Recorder:
    """What a loopback server saw: request lines, headers, bodies, connections."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[tuple[str, str]], bytes]] = []
        self.peers: list[int] = []  # the client port of each request: one per connection


@contextmanager
def serve(
    answer: Callable[[BaseHTTPRequestHandler], None] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[tuple[str, Recorder]]:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 answering a token by default."""
    seen = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.requests.append((self.requestline, list(self.headers.items()), body))
            seen.peers.append(self.client_address[1])
            if answer is not None:
                answer(self)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(TOKEN_BODY)))
            self.end_headers()
            self.wfile.write(TOKEN_BODY)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def client(session: Any, url: str, **kw: Any) -> TokenClient:
    return TokenClient(
        session,
        token_url=url,
        client_id=kw.pop("client_id", "oms client"),
        client_secret=lambda: Secret("s3cret/+&="),
        clock=FakeClock(),
        **kw,
    )


@pytest.mark.parametrize("auth_method", ["client_secret_post", "client_secret_basic"])
def test_the_wire_request_is_what_requests_sent(auth_method: str) -> None:
    with serve() as (url, seen):
        for session in (build_session(), TokenTransport()):
            tc = client(session, f"{url}/realms/r/token?x=1", auth_method=auth_method, scope="a b")
            assert tc.client_credentials().token.access_token == "tok-MARKER-transport"
    by_requests, by_transport = seen.requests
    assert by_transport == by_requests  # request line, every header in order, the body
    line, headers, body = by_transport
    assert line == "POST /realms/r/token?x=1 HTTP/1.1"
    assert dict(headers)["User-Agent"] == "rotator/0.1"
    assert (b"client_secret=" in body) == (auth_method == "client_secret_post")


def test_connections_are_kept_alive() -> None:
    with serve() as (url, seen):
        tc = client(TokenTransport(), f"{url}/token")
        for _ in range(3):
            tc.client_credentials()
    assert len(seen.requests) == 3
    assert len(set(seen.peers)) == 1  # one connection, reused


def test_a_redirect_is_returned_not_followed() -> None:
    with serve() as (b_url, b_seen):

        def redirect(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(307)
            handler.send_header("Location", f"{b_url}/token")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with serve(redirect) as (a_url, a_seen):
            with pytest.raises(InvalidTokenResponse, match="HTTP 307"):
                client(TokenTransport(), f"{a_url}/token").client_credentials()
    assert len(a_seen.requests) == 1
    assert b_seen.requests == []  # the form, secret included, never went to the other host


def test_unavailable_answers_keep_their_retry_after() -> None:
    def busy(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(503)
        handler.send_header("Retry-After", "7")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with serve(busy) as (url, _seen):
        with pytest.raises(TokenEndpointUnavailable) as caught:
            client(TokenTransport(), f"{url}/token").client_credentials()
    assert caught.value.retry_after == 7.0
    assert caught.value.status == 503


def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        outcomes: list[str] = []
        tc = client(
            TokenTransport(),
            f"http://127.0.0.1:{port}/token",
            on_request=lambda grant, outcome: outcomes.append(outcome),
        )
        with pytest.raises(TokenEndpointUnavailable, match=r"unreachable \(ConnectionError\)"):
            tc.client_credentials()
    assert outcomes == ["connection_error"]


def test_the_proxy_given_is_used() -> None:
    proxy = RecordingProxy()
    try:
        with serve() as (url, seen):
            tc = client(
                TokenTransport(),
                f"{url}/realms/r/protocol/openid-connect/token",
                proxies={"http": proxy.url},
            )
            assert tc.client_credentials().token.access_token == "tok-MARKER-transport"
        (through,) = proxy.token_requests()
    finally:
        proxy.close()
    assert through.form["client_id"] == "oms client"
    assert len(seen.requests) == 1


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_server_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotator test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_trusts_the_ca_bundle_and_nothing_else(tls_server_files: tuple[Path, Path]) -> None:
    cert, key = tls_server_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serve(tls=context) as (url, seen):
        trusted = client(TokenTransport(), f"{url}/token", verify=str(cert))
        assert trusted.client_credentials().token.access_token == "tok-MARKER-transport"
        outcomes: list[str] = []
        default = client(
            TokenTransport(),
            f"{url}/token",
            on_request=lambda grant, outcome: outcomes.append(outcome),
        )
        with pytest.raises(TokenEndpointUnavailable, match="TLS verification failed"):
            default.client_credentials()  # certifi's bundle does not hold this certificate
    assert outcomes == ["tls_error"]
    assert len(seen.requests) == 1  # the untrusted handshake never sent the form


def test_a_ca_bundle_gone_missing_is_a_config_error(tmp_path: Path) -> None:
    tc = client(TokenTransport(), "https://127.0.0.1:9/token", verify=str(tmp_path / "gone.pem"))
    with pytest.raises(ConfigError, match="cannot use the CA bundle"):
        tc.client_credentials()
