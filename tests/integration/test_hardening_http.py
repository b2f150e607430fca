"""Issue 8 over real sockets on loopback: BearerAuth never re-sends the token after a
redirect to another origin (point 2), a token response that drips a byte at a time
ends at the overall deadline (point 4), and the health server drops idle
connections, bounds its threads, says state not error details, and goes 503 when a
job is stuck (point 7). Every server here is started and stopped by its test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from rotator import health
from rotator.app import build, build_session
from rotator.config import from_mapping
from rotator.errors import TokenEndpointUnavailable, VerificationUnavailable
from rotator.health import HealthServer
from rotator.oauth import TokenClient, verify_token
from rotator.reader import BearerAuth, TokenReader
from rotator.rotation import CredentialRotator, NullObserver
from rotator.scheduler import STUCK_MARGIN, Daemon
from rotator.secret import Secret
from rotator.stores.memory import MemoryStore
from rotator.token import encode
from rotator.transport import TokenTransport
from tests.fakes import FakeClock, FakeFetcher, FakeScheduler, make_token

pytestmark = pytest.mark.timeout(60)

TOKEN = "bearer-token-MARKER-redirect"
# A dripping server gives up after this many bytes (~10 s), so a build without the
# deadline fails on a wrong error instead of hanging until the test timeout.
DRIP_BYTES = 200


@contextmanager
def serve(host: str, respond: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A tiny HTTP server on `host`; yields its base URL; records nothing itself."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            respond(self)

        do_POST = do_GET

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family})
    server = server_class(("127.0.0.1" if host == "localhost" else host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------- point 2


def reader_holding(token: str) -> TokenReader:
    clock = FakeClock()
    store = MemoryStore("sm")
    store.plant(encode(make_token(clock.now(), 300, access_token=token), "json"))
    return TokenReader(store, clock=clock)


def test_token_never_follows_a_redirect_to_another_host() -> None:
    seen_by_b: list[str | None] = []

    def b(handler: BaseHTTPRequestHandler) -> None:
        seen_by_b.append(handler.headers.get("Authorization"))
        handler.send_response(401)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with serve("localhost", b) as b_url:

        def a(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(302)
            handler.send_header("Location", f"{b_url}/api")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with serve("127.0.0.1", a) as a_url:
            reader = reader_holding(TOKEN)
            with requests.Session() as session:
                session.trust_env = False
                response = session.get(f"{a_url}/api", auth=BearerAuth(reader), timeout=10)

    assert response.status_code == 401  # B's answer, returned as is
    assert len(seen_by_b) == 1  # no retry went to B
    assert seen_by_b == [None]  # and B never saw the token
    assert reader.reads == 1  # no re-read of the store for another host's 401


def test_a_401_from_the_origin_is_still_retried_once() -> None:
    seen: list[str | None] = []

    def origin(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers.get("Authorization"))
        handler.send_response(401 if len(seen) == 1 else 200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    with serve("127.0.0.1", origin) as url:
        reader = reader_holding(TOKEN)
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(f"{url}/api", auth=BearerAuth(reader), timeout=10)
    assert response.status_code == 200
    assert seen == [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]


# ---------------------------------------------------------------- point 4


@pytest.fixture(params=["transport", "session"])
def token_session(request: pytest.FixtureRequest) -> TokenTransport | requests.Session:
    """The daemon's token transport (urllib3 pools), and a requests Session."""
    return TokenTransport() if request.param == "transport" else build_session()


def slow_client(url: str, session: TokenTransport | requests.Session) -> TokenClient:
    """5 s per socket read, 1 s for the whole exchange."""
    return TokenClient(
        session,
        token_url=f"{url}/token",
        client_id="oms",
        client_secret=lambda: Secret("s"),
        clock=FakeClock(),
        timeout=(5.0, 5.0),
        deadline=1.0,
    )


def test_a_dripping_token_response_ends_at_the_deadline(
    token_session: TokenTransport | requests.Session,
) -> None:
    stop = threading.Event()

    def drip(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        try:
            for _ in range(DRIP_BYTES):  # a byte every 50 ms: each read is "on time"
                if stop.wait(0.05):
                    break
                handler.wfile.write(b" ")
                handler.wfile.flush()
        except OSError:
            pass  # the client hung up: what the deadline must do

    with serve("127.0.0.1", drip) as url:
        client = slow_client(url, token_session)
        try:
            with pytest.raises(TokenEndpointUnavailable, match="deadline"):
                client.client_credentials()
        finally:
            stop.set()


def drip_headers(stop: threading.Event) -> Callable[[BaseHTTPRequestHandler], None]:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        try:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(DRIP_BYTES):  # a header that does not end, a byte every 50 ms
                if stop.wait(0.05):
                    break
                handler.wfile.write(b"a")
                handler.wfile.flush()
        except OSError:
            pass

    return respond


def test_dripping_headers_end_at_the_deadline(
    token_session: TokenTransport | requests.Session,
) -> None:
    stop = threading.Event()
    with serve("127.0.0.1", drip_headers(stop)) as url:
        client = slow_client(url, token_session)
        try:
            with pytest.raises(TokenEndpointUnavailable, match="deadline"):
                client.client_credentials()
        finally:
            stop.set()


def test_a_dripping_verify_url_ends_at_the_deadline() -> None:
    stop = threading.Event()
    with serve("127.0.0.1", drip_headers(stop)) as url:
        try:
            with pytest.raises(VerificationUnavailable, match="deadline"):
                verify_token(
                    build_session(),
                    f"{url}/oms-api/",
                    make_token(FakeClock().now(), 300),
                    timeout=(5.0, 5.0),
                    deadline=1.0,
                )
        finally:
            stop.set()


# ---------------------------------------------------------------- point 7


@pytest.fixture
def health_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[HealthServer, Daemon]]:
    monkeypatch.setattr(health, "CONNECTION_TIMEOUT_SECONDS", 0.5)
    clock = FakeClock()
    settings = from_mapping(
        {
            "credentials": [
                {
                    "name": "oms",
                    "token_url": "https://sso.example.com/token",
                    "client_id": "oms",
                    "client_secret_env": "X",
                    "targets": [{"type": "file", "path": "/nonexistent/t.json"}],
                }
            ]
        }
    )
    app = build(settings, clock=clock, env={})
    rotator = CredentialRotator(
        "oms", fetcher=FakeFetcher(clock), stores=[MemoryStore("m")], clock=clock
    )
    daemon = Daemon(
        [rotator],
        clock=clock,
        backoff=app.backoff(settings.credentials[0]),
        observer=NullObserver(),
        scheduler_now=clock.now,
        job_deadlines={"oms": timedelta(seconds=100)},
    )
    scheduler = FakeScheduler()
    scheduler.running = True  # type: ignore[attr-defined]
    daemon._scheduler = scheduler
    server = HealthServer(app, daemon, host="127.0.0.1", port=0)
    server.start()
    try:
        yield server, daemon
    finally:
        server.stop()


def test_idle_connection_is_closed_by_the_server(
    health_server: tuple[HealthServer, Daemon],
) -> None:
    server, _ = health_server
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as idle:
        assert idle.recv(1) == b""  # the server hung up; before, this waited for ever


def test_idle_connections_beyond_the_bound_are_dropped(
    health_server: tuple[HealthServer, Daemon],
) -> None:
    server, _ = health_server
    extra = 5
    sockets = [
        socket.create_connection(("127.0.0.1", server.port), timeout=30)
        for _ in range(health.MAX_CONNECTIONS + extra)
    ]
    try:
        closed = 0
        limit = time.monotonic() + 20
        pending = list(sockets)
        # The over-the-bound ones are closed at once; the others at the idle timeout.
        while pending and time.monotonic() < limit:
            for sock in list(pending):
                sock.settimeout(0.01)
                try:
                    if sock.recv(1) == b"":
                        closed += 1
                        pending.remove(sock)
                except TimeoutError:
                    pass
        assert closed == len(sockets)
    finally:
        for sock in sockets:
            sock.close()


def test_health_bodies_say_state_not_error_details(
    health_server: tuple[HealthServer, Daemon],
) -> None:
    server, daemon = health_server
    daemon.states["oms"].consecutive_failures = 3
    daemon.states["oms"].last_error = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x"
    response = requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
    assert response.status_code == 200
    assert "123456789012" not in response.text
    assert response.json()["credentials"]["oms"]["state"] == "failing"


def test_healthz_is_503_when_a_job_overruns_its_deadline(
    health_server: tuple[HealthServer, Daemon],
) -> None:
    server, daemon = health_server
    clock: FakeClock = daemon._clock  # type: ignore[assignment]
    daemon.states["oms"].running_since = clock.now()
    url = f"http://127.0.0.1:{server.port}/healthz"
    clock.advance(50)
    assert requests.get(url, timeout=10).status_code == 200
    clock.advance(100 + STUCK_MARGIN.total_seconds())
    response = requests.get(url, timeout=10)
    assert response.status_code == 503
    assert response.json()["credentials"]["oms"]["state"] == "stuck"
