"""A Keycloak-faithful OAuth2 token endpoint stub for tests.

``KeycloakStub`` serves, on 127.0.0.1 and an ephemeral port by default:

* ``POST {base_url}/auth/realms/{realm}/protocol/openid-connect/token`` (``/realms/...``
  with ``auth_prefix=False``, as newer Keycloak does), with the ``client_credentials`` and
  ``refresh_token`` grants, client authentication by ``client_secret_post`` or
  ``client_secret_basic``, and Keycloak's status codes, error codes and descriptions;
* ``GET {base_url}/oms-api/``, a protected resource that answers 200 to an active bearer
  token issued by the stub and 401 otherwise;
* ``POST {token_url}/introspect`` (RFC 7662, with the same client authentication), which
  says whether a token is ``active``. ``revoke_access_tokens()`` invalidates every token
  issued so far before its expiry (an admin logging out the service account's sessions);
  ``refuse_all_tokens()`` refuses every token, later ones included (keys disabled).

Usage::

    from rotator.testing import KeycloakStub

    with KeycloakStub(access_token_lifespan=5, use_refresh_tokens=True) as kc:
        consumer = MyConsumer(token_url=kc.token_url, client_id="oms-client",
                              client_secret="oms-secret")
        ...
        assert kc.count(grant_type="client_credentials", outcome="ok") == 1
        assert kc.is_active(token_the_consumer_published)

Timing: Keycloak only knows whole seconds. The stub follows it: ``expires_in`` is the access
token lifespan rounded *up* to a whole number of seconds (2.5 s gives ``expires_in: 3``), the
JWT carries ``iat = floor(now)`` and ``exp = iat + expires_in``, and a token is active while
``floor(clock()) <= exp``, which is Keycloak's own check. So a token lives at least
``expires_in`` seconds after it was issued and less than one second longer. Refresh tokens
follow the same rule with ``refresh_expires_in``. Pass ``clock=`` to control time in tests.

Tokens are HS256 JWTs signed with a random key private to each stub, so they are unique and
cannot be forged, and ``is_active`` only accepts tokens this stub issued.

Run standalone with ``python -m rotator.testing.keycloak --port 8080 --lifespan 15
--refresh`` (the client secret comes from the ``STUB_CLIENT_SECRET`` environment variable).

The server never logs requests: they carry client secrets and tokens.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import math
import os
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from types import FrameType, TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote_plus, urlsplit

__all__ = [
    "DEFAULT_CLIENTS",
    "OMS_WELCOME",
    "KeycloakStub",
    "TokenRequest",
    "VerifyRequest",
    "main",
]

#: Clients known to a stub built without ``clients=``: client id -> client secret.
DEFAULT_CLIENTS: Mapping[str, str] = {"oms-client": "oms-secret"}

#: Body of the protected resource's 200 answer.
OMS_WELCOME = "Hello ! Welcome to the Astoreshop OMS API"

_DEFAULT_SCOPE = ("profile", "email")
_MAX_BODY = 1 << 20
_STOP_TIMEOUT = 5.0
_POLL_INTERVAL = 0.05


# --------------------------------------------------------------------------------------------
# HTTP plumbing shared with rotator.testing.proxy (private)
# --------------------------------------------------------------------------------------------


class _BodyError(Exception):
    """The request body could not be read; answer ``status`` and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _read_chunked(rfile: BufferedIOBase, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise _BodyError(400, "malformed chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _BodyError(400, "malformed chunk size") from exc
        if size < 0:
            raise _BodyError(400, "malformed chunk size")
        if size == 0:
            break
        total += size
        if total > limit:
            raise _BodyError(413, "request body too large")
        chunk = rfile.read(size)
        if len(chunk) < size:
            raise _BodyError(400, "incomplete chunked body")
        parts.append(chunk)
        if rfile.readline(1024) not in (b"\r\n", b"\n"):
            raise _BodyError(400, "malformed chunked body")
    while True:  # trailer section
        line = rfile.readline(8192)
        if line in (b"\r\n", b"\n", b""):
            break
    return b"".join(parts)


def _read_body(rfile: BufferedIOBase, headers: Message, limit: int) -> bytes:
    """Read a request body framed by Content-Length or chunked transfer coding."""
    transfer_encoding = headers.get("Transfer-Encoding")
    if transfer_encoding is not None:
        if transfer_encoding.strip().lower() != "chunked":
            raise _BodyError(501, "unsupported transfer coding")
        return _read_chunked(rfile, limit)
    content_length = headers.get("Content-Length")
    if content_length is None:
        return b""
    try:
        size = int(content_length)
    except ValueError as exc:
        raise _BodyError(400, "invalid Content-Length") from exc
    if size < 0:
        raise _BodyError(400, "invalid Content-Length")
    if size > limit:
        raise _BodyError(413, "request body too large")
    data = rfile.read(size)
    if len(data) < size:
        raise _BodyError(400, "incomplete request body")
    return data


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler that hands every request to the server's ``app``."""

    protocol_version = "HTTP/1.1"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Never log: request lines and bodies may carry secrets."""

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = ""
                self.request_version = ""
                self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            server = self.server
            assert isinstance(server, _TrackingServer)
            server.app(self)
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def send_raw(
        self,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        reason: str | None = None,
        content_length: int | None = None,
        date: bool = True,
    ) -> None:
        """Write a whole response at once; the body is left out for HEAD requests."""
        if reason is None:
            try:
                reason = HTTPStatus(status).phrase
            except ValueError:
                reason = ""
        lines = [f"HTTP/1.1 {status} {reason}".rstrip()]
        if date:
            lines.append(f"Date: {self.date_time_string()}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        length = len(body) if content_length is None else content_length
        lines.append(f"Content-Length: {length}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.wfile.write(head if self.command == "HEAD" else head + body)


class _TrackingServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its connections and worker threads, so that ``stop``
    can close every socket (idle keep-alive and stalled ones included) and join every thread.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[_Handler],
        app: Callable[[_Handler], None],
        name: str,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.app = app
        self.name = name
        self._track_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self._closing = False
        self._serial = 0
        self._serve_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port = self.server_address[1]
        assert isinstance(port, int)
        return port

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        sock = request if isinstance(request, socket.socket) else request[1]
        with self._track_lock:
            if self._closing:
                self.shutdown_request(request)
                return
            self._serial += 1
            worker = threading.Thread(
                target=self._work,
                args=(request, sock, client_address),
                name=f"{self.name}-conn-{self._serial}",
                daemon=True,
            )
            self._connections.add(sock)
            self._workers.add(worker)
        worker.start()

    def _work(
        self,
        request: socket.socket | tuple[bytes, socket.socket],
        sock: socket.socket,
        client_address: Any,
    ) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._track_lock:
                self._connections.discard(sock)
                self._workers.discard(threading.current_thread())
            self.shutdown_request(request)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        if isinstance(sys.exception(), OSError):
            return  # the peer went away, or stop() closed the socket: not worth a traceback
        super().handle_error(request, client_address)

    def start_serving(self) -> None:
        self._serve_thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"{self.name}-accept",
            daemon=True,
        )
        self._serve_thread.start()

    def stop_serving(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Stop accepting, close the listening socket and every connection, join threads."""
        self.shutdown()
        self.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout)
        with self._track_lock:
            self._closing = True
            connections = list(self._connections)
            workers = list(self._workers)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))


def _public_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


# --------------------------------------------------------------------------------------------
# JWT helpers
# --------------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _sign_jwt(claims: Mapping[str, object], key: bytes) -> str:
    header = _b64url(_json_bytes({"alg": "HS256", "typ": "JWT"}))
    signing_input = f"{header}.{_b64url(_json_bytes(claims))}"
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def _verify_jwt(token: str, key: bytes) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
    expected = _b64url(hmac.new(key, signing_input, hashlib.sha256).digest())
    if not hmac.compare_digest(expected.encode("ascii"), parts[2].encode("ascii", "replace")):
        return None
    try:
        claims = json.loads(_b64url_decode(parts[1]))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


# --------------------------------------------------------------------------------------------
# The stub
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRequest:
    """One request that reached the token endpoint.

    ``outcome`` is ``"ok"``, ``"injected"`` (answered from ``enqueue``), ``"method_not_allowed"``
    or the OAuth2 ``error`` code that was returned (``"invalid_client"``, ``"invalid_grant"``...).
    ``time`` is the stub's clock at arrival. ``auth_method`` is ``"client_secret_post"``,
    ``"client_secret_basic"`` or ``None`` when it was not determined.
    """

    time: float
    method: str
    grant_type: str | None
    client_id: str | None
    auth_method: str | None
    outcome: str
    status: int
    error_description: str | None = None


@dataclass(frozen=True)
class VerifyRequest:
    """One request that reached the protected ``/oms-api/`` resource."""

    time: float
    status: int
    ok: bool


@dataclass(frozen=True)
class _Canned:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class _AccessRecord:
    client_id: str
    exp: int


@dataclass
class _RefreshRecord:
    client_id: str
    exp: int
    session_state: str
    scope: str
    revoked: str | None = None


class _OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass
class _Exchange:
    """What is known about a token request while it is being processed."""

    grant_type: str | None = None
    client_id: str | None = None
    auth_method: str | None = None
    form: dict[str, list[str]] = field(default_factory=dict)


def _whole_seconds(seconds: float) -> int:
    return math.ceil(seconds)


def _check_lifespan(name: str, seconds: float) -> float:
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")
    return float(seconds)


def _content_type(body: bytes) -> str:
    start = body.lstrip()[:1]
    if start in (b"{", b"["):
        return "application/json"
    return "text/html; charset=utf-8"


class KeycloakStub:
    """A Keycloak-faithful OAuth2 token endpoint on a local port; see the module docstring.

    All observation and control methods are thread-safe and may be called while consumers
    talk to the stub. Settings changed at run time apply to tokens issued afterwards.
    """

    def __init__(
        self,
        *,
        clients: Mapping[str, str] | None = None,
        realm: str = "astore-p2p",
        host: str = "127.0.0.1",
        port: int = 0,
        access_token_lifespan: float = 300.0,
        use_refresh_tokens: bool = False,
        refresh_token_lifespan: float = 1800.0,
        auth_prefix: bool = True,
        legacy_errors: bool = False,
        clock: Callable[[], float] = time.time,
        extra_claims: Mapping[str, object] | None = None,
        disabled_clients: Iterable[str] = (),
        refresh_clients: Iterable[str] = (),
    ) -> None:
        """Configure the stub; nothing listens before ``start()``.

        ``clients`` maps client ids to secrets (default ``DEFAULT_CLIENTS``).
        ``use_refresh_tokens`` is Keycloak's per-client switch "Use refresh tokens for client
        credentials grant". ``legacy_errors`` gives the answers of older Keycloak versions to
        bad client credentials (``invalid_client``, "Invalid client secret") instead of 401
        ``unauthorized_client`` "Invalid client or Invalid client credentials".
        ``extra_claims`` are added to every access token (to make big tokens, say).
        ``disabled_clients`` are known but disabled (Keycloak answers 401 ``invalid_client``).
        ``refresh_clients`` get refresh tokens for client_credentials even when
        ``use_refresh_tokens`` is off: Keycloak's switch is per client.
        """
        self._lock = threading.RLock()
        self._clients = dict(DEFAULT_CLIENTS if clients is None else clients)
        self.realm = realm
        self.host = host
        self._requested_port = port
        self._access_lifespan = _check_lifespan("access_token_lifespan", access_token_lifespan)
        self._refresh_lifespan = _check_lifespan("refresh_token_lifespan", refresh_token_lifespan)
        self._use_refresh_tokens = use_refresh_tokens
        self._refresh_clients = set(refresh_clients)
        self._disabled = set(disabled_clients)
        self.auth_prefix = auth_prefix
        self.legacy_errors = legacy_errors
        self._clock = clock
        self._extra_claims = dict(extra_claims or {})
        self._key = secrets.token_bytes(32)
        self._requests: list[TokenRequest] = []
        self._verifies: list[VerifyRequest] = []
        self._canned: deque[_Canned] = deque()
        self._access: dict[str, _AccessRecord] = {}
        self._refresh: dict[str, _RefreshRecord] = {}
        self._server: _TrackingServer | None = None
        self._port: int | None = None
        self._revoked: set[str] = set()  # access tokens revoked before their expiry
        self._refuse_all = False
        self._introspections: list[bool] = []  # the `active` of each answered request

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in daemon threads; returns ``self``."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("KeycloakStub is already running")
            server = _TrackingServer(
                (self.host, self._requested_port), _Handler, self._handle, "keycloak-stub"
            )
            self._server = server
            self._port = server.port
        server.start_serving()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket and every connection. Idempotent."""
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop_serving()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("KeycloakStub has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``"""
        return f"http://{_public_host(self.host)}:{self.port}"

    @property
    def realm_path(self) -> str:
        return f"{'/auth' if self.auth_prefix else ''}/realms/{self.realm}"

    @property
    def token_path(self) -> str:
        return f"{self.realm_path}/protocol/openid-connect/token"

    @property
    def issuer(self) -> str:
        """The ``iss`` claim: ``base_url`` + ``/auth/realms/REALM`` (no ``/auth`` without
        ``auth_prefix``), as Keycloak does."""
        return self.base_url + self.realm_path

    @property
    def token_url(self) -> str:
        return self.base_url + self.token_path

    @property
    def introspection_url(self) -> str:
        """RFC 7662 token introspection, Keycloak's ``.../token/introspect``."""
        return self.token_url + "/introspect"

    @property
    def verify_url(self) -> str:
        """URL of the protected resource, ``base_url + "/oms-api/"``."""
        return self.base_url + "/oms-api/"

    # -- observation -------------------------------------------------------------------------

    def requests(self) -> list[TokenRequest]:
        """Snapshot of every request that reached the token endpoint, oldest first."""
        with self._lock:
            return list(self._requests)

    def count(self, grant_type: str | None = None, outcome: str | None = None) -> int:
        """Number of token requests, optionally only those of a grant type and/or outcome."""
        with self._lock:
            return sum(
                1
                for r in self._requests
                if (grant_type is None or r.grant_type == grant_type)
                and (outcome is None or r.outcome == outcome)
            )

    def verify_requests(self) -> list[VerifyRequest]:
        with self._lock:
            return list(self._verifies)

    def verify_count(self, ok: bool | None = None) -> int:
        """Number of requests to ``/oms-api/``; ``ok=True``/``False`` counts 200s/401s."""
        with self._lock:
            return sum(1 for v in self._verifies if ok is None or v.ok == ok)

    def issued_tokens(self) -> set[str]:
        """Every access token this stub ever issued."""
        with self._lock:
            return set(self._access)

    def is_active(self, access_token: str) -> bool:
        """True if this stub issued the token and it has not expired by the stub's clock."""
        with self._lock:
            record = self._access.get(access_token)
            if self._refuse_all or access_token in self._revoked:
                return False
            return record is not None and math.floor(self._clock()) <= record.exp

    def token_claims(self, token: str) -> dict[str, Any] | None:
        """Claims of an access or refresh token signed by this stub, else ``None``."""
        return _verify_jwt(token, self._key)

    # -- control -----------------------------------------------------------------------------

    def enqueue(
        self,
        status: int,
        body: str | bytes,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` token requests with this canned response.

        Without a Content-Type in ``headers``, it is ``application/json`` when the body starts
        with ``{`` or ``[`` and ``text/html; charset=utf-8`` otherwise. Content-Length is set.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        header_items = list((headers or {}).items())
        if not any(name.lower() == "content-type" for name, _ in header_items):
            header_items.insert(0, ("Content-Type", _content_type(data)))
        header_items = [(n, v) for n, v in header_items if n.lower() != "content-length"]
        canned = _Canned(status, data, tuple(header_items))
        with self._lock:
            self._canned.extend([canned] * times)

    def clear_enqueued(self) -> None:
        with self._lock:
            self._canned.clear()

    def revoke_refresh_tokens(self, description: str = "Session not active") -> None:
        """Make every refresh token issued so far fail with 400 invalid_grant ``description``.

        Refresh tokens issued later (by a new client_credentials grant) work.
        """
        with self._lock:
            for record in self._refresh.values():
                if record.revoked is None:
                    record.revoked = description

    def revoke_access_tokens(self, client_id: str | None = None) -> int:
        """Invalidate every access token issued so far (to `client_id`, or to any client)
        before its expiry; later tokens work. Returns how many were revoked."""
        with self._lock:
            tokens = {t for t, r in self._access.items() if client_id in (None, r.client_id)}
            fresh = tokens - self._revoked
            self._revoked |= tokens
            return len(fresh)

    def refuse_all_tokens(self, enabled: bool = True) -> None:
        """Refuse every access token at the resource and introspection, including those
        issued later (the realm's keys disabled); ``False`` restores normal answers."""
        with self._lock:
            self._refuse_all = enabled

    def introspection_count(self, active: bool | None = None) -> int:
        """Answered introspection requests; ``active=True``/``False`` counts by answer."""
        with self._lock:
            return sum(1 for a in self._introspections if active is None or a == active)

    def set_access_token_lifespan(self, seconds: float) -> None:
        value = _check_lifespan("access_token_lifespan", seconds)
        with self._lock:
            self._access_lifespan = value

    def set_refresh_token_lifespan(self, seconds: float) -> None:
        value = _check_lifespan("refresh_token_lifespan", seconds)
        with self._lock:
            self._refresh_lifespan = value

    def set_use_refresh_tokens(self, enabled: bool) -> None:
        with self._lock:
            self._use_refresh_tokens = enabled

    def set_client_enabled(self, client_id: str, enabled: bool) -> None:
        """Disable or enable a known client (a disabled one gets 401 ``invalid_client``)."""
        with self._lock:
            if enabled:
                self._disabled.discard(client_id)
            else:
                self._disabled.add(client_id)

    def set_client_secret(self, client_id: str, secret: str) -> None:
        """Add a client or change its secret (a rotated credential, say)."""
        with self._lock:
            self._clients[client_id] = secret

    # -- request handling --------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        try:
            body = _read_body(handler.rfile, handler.headers, _MAX_BODY)
        except _BodyError as exc:
            handler.close_connection = True
            self._send_json(handler, exc.status, {"error": "invalid_request"})
            return
        path = urlsplit(handler.path).path
        if path == self.token_path:
            self._token_endpoint(handler, body)
        elif path == self.token_path + "/introspect":
            self._introspect(handler, body)
        elif path in ("/oms-api/", "/oms-api"):
            self._protected_resource(handler)
        elif path.startswith(f"{'/auth' if self.auth_prefix else ''}/realms/"):
            self._send_json(handler, 404, {"error": "Realm does not exist"})
        else:
            self._send_json(
                handler, 404, {"error": "Unable to find matching target resource method"}
            )

    def _send_json(
        self,
        handler: _Handler,
        status: int,
        payload: Mapping[str, object],
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        headers = [
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            ("Pragma", "no-cache"),
            *extra_headers,
        ]
        handler.send_raw(status, headers, _json_bytes(payload))

    def _token_endpoint(self, handler: _Handler, body: bytes) -> None:
        now = self._clock()
        exchange = _Exchange()
        content_type = (handler.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        if handler.command == "POST" and content_type.lower() == (
            "application/x-www-form-urlencoded"
        ):
            exchange.form = parse_qs(
                body.decode("utf-8", "replace"), keep_blank_values=True, errors="replace"
            )
        exchange.grant_type = self._param(exchange.form, "grant_type")
        exchange.client_id = self._param(exchange.form, "client_id")

        with self._lock:
            canned = self._canned.popleft() if self._canned else None
        if canned is not None:
            self._record(now, handler, exchange, "injected", canned.status)
            handler.send_raw(canned.status, canned.headers, canned.body)
            return

        if handler.command != "POST":
            self._record(now, handler, exchange, "method_not_allowed", 405)
            self._send_json(
                handler,
                405,
                {"error": "HTTP 405 Method Not Allowed"},
                [("Allow", "POST, OPTIONS")],
            )
            return

        try:
            with self._lock:
                payload = self._grant(exchange, handler.headers.get("Authorization"), now)
        except _OAuthError as exc:
            self._record(now, handler, exchange, exc.error, exc.status, description=exc.description)
            self._send_json(
                handler, exc.status, {"error": exc.error, "error_description": exc.description}
            )
            return
        self._record(now, handler, exchange, "ok", 200)
        self._send_json(handler, 200, payload)

    def _record(
        self,
        now: float,
        handler: _Handler,
        exchange: _Exchange,
        outcome: str,
        status: int,
        *,
        description: str | None = None,
    ) -> None:
        entry = TokenRequest(
            time=now,
            method=handler.command,
            grant_type=exchange.grant_type,
            client_id=exchange.client_id,
            auth_method=exchange.auth_method,
            outcome=outcome,
            status=status,
            error_description=description,
        )
        with self._lock:
            self._requests.append(entry)

    @staticmethod
    def _param(form: Mapping[str, list[str]], name: str) -> str | None:
        values = form.get(name)
        return values[0] if values else None

    def _grant(
        self, exchange: _Exchange, authorization: str | None, now: float
    ) -> dict[str, object]:
        grant_type = exchange.grant_type
        if grant_type is None:
            raise _OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
        if grant_type not in ("client_credentials", "refresh_token", "password"):
            raise _OAuthError(400, "unsupported_grant_type", "Unsupported grant_type")
        client_id = self._authenticate(exchange, authorization)
        if grant_type == "password":  # the realm's clients have direct access grants off
            raise _OAuthError(
                400, "unauthorized_client", "Client not allowed for direct access grants"
            )
        if any(len(values) > 1 for values in exchange.form.values()):
            raise _OAuthError(400, "invalid_request", "duplicated parameter")
        if grant_type == "client_credentials":
            scope = self._scope(self._param(exchange.form, "scope"))
            return self._issue(client_id, scope, now, session_state=None)
        return self._refresh_grant(exchange, client_id, now)

    def _client_error(
        self, legacy_description: str, error: str = "unauthorized_client"
    ) -> _OAuthError:
        """Keycloak 26: 401 ``unauthorized_client`` for a known client with a wrong or missing
        secret, 401 ``invalid_client`` when there is no usable client (unknown, disabled or
        not named at all); same description for all."""
        if self.legacy_errors:
            return _OAuthError(401, "invalid_client", legacy_description)
        return _OAuthError(401, error, "Invalid client or Invalid client credentials")

    def _authenticate(self, exchange: _Exchange, authorization: str | None) -> str:
        form_client_id = exchange.client_id
        secret: str | None
        if authorization is not None and authorization[:6].lower() == "basic ":
            exchange.auth_method = "client_secret_basic"
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise _OAuthError(
                    400, "invalid_client", "Invalid Basic authentication header"
                ) from None
            raw_id, sep, raw_secret = decoded.partition(":")
            if not sep:
                raise _OAuthError(400, "invalid_client", "Invalid Basic authentication header")
            # RFC 6749 2.3.1: both parts are form-urlencoded before being joined.
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            exchange.client_id = client_id
            if form_client_id is not None and form_client_id != client_id:
                raise _OAuthError(400, "invalid_request", "Parameter client_id does not match")
        else:
            exchange.auth_method = "client_secret_post"
            if form_client_id is None:
                if self.legacy_errors:
                    raise _OAuthError(400, "invalid_client", "Missing form parameter: client_id")
                raise self._client_error("", "invalid_client")
            client_id = form_client_id
            secret = self._param(exchange.form, "client_secret")
        expected = self._clients.get(client_id)
        if expected is None:
            raise self._client_error("Invalid client credentials", "invalid_client")
        if client_id in self._disabled:
            raise self._client_error("Invalid client credentials", "invalid_client")
        if secret is None:
            raise self._client_error("Client secret not provided in request")
        if not hmac.compare_digest(secret.encode(), expected.encode()):
            raise self._client_error("Invalid client secret")
        return client_id

    @staticmethod
    def _scope(requested: str | None) -> str:
        scopes = list(_DEFAULT_SCOPE)
        for item in (requested or "").split():
            if item not in scopes:
                if item == "openid":
                    scopes.insert(0, item)
                else:
                    scopes.append(item)
        return " ".join(scopes)

    def _refresh_grant(self, exchange: _Exchange, client_id: str, now: float) -> dict[str, object]:
        token = self._param(exchange.form, "refresh_token")
        if token is None:
            raise _OAuthError(400, "invalid_request", "No refresh token")
        claims = _verify_jwt(token, self._key)
        jti = claims.get("jti") if claims is not None else None
        record = self._refresh.get(jti) if isinstance(jti, str) else None
        if claims is None or claims.get("typ") != "Refresh" or record is None:
            raise _OAuthError(400, "invalid_grant", "Invalid refresh token")
        if math.floor(now) > record.exp:
            raise _OAuthError(400, "invalid_grant", "Token is not active")
        if record.revoked is not None:
            raise _OAuthError(400, "invalid_grant", record.revoked)
        if record.client_id != client_id:
            raise _OAuthError(
                400,
                "invalid_grant",
                "Invalid refresh token. Token client and authorized client don't match",
            )
        return self._issue(client_id, record.scope, now, session_state=record.session_state)

    def _service_account_id(self, client_id: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.realm}/{client_id}"))

    def _issue(
        self, client_id: str, scope: str, now: float, *, session_state: str | None
    ) -> dict[str, object]:
        """Issue an access token, plus a refresh token when refreshing or when enabled."""
        with_refresh = (
            session_state is not None
            or self._use_refresh_tokens
            or client_id in self._refresh_clients
        )
        if with_refresh and session_state is None:
            session_state = str(uuid.uuid4())
        iat = math.floor(now)
        expires_in = _whole_seconds(self._access_lifespan)
        issuer = self.issuer
        subject = self._service_account_id(client_id)
        claims: dict[str, object] = {
            "exp": iat + expires_in,
            "iat": iat,
            "jti": str(uuid.uuid4()),
            "iss": issuer,
            "aud": "account",
            "sub": subject,
            "typ": "Bearer",
            "azp": client_id,
        }
        if session_state is not None:
            claims["sid"] = session_state  # Keycloak 26: no session_state claim any more
        claims.update(
            {
                "acr": "1",
                "realm_access": {
                    "roles": ["offline_access", "uma_authorization", f"default-roles-{self.realm}"]
                },
                "resource_access": {
                    "account": {"roles": ["manage-account", "manage-account-links", "view-profile"]}
                },
                "scope": scope,
                "email_verified": False,
                "clientHost": "127.0.0.1",
                "preferred_username": f"service-account-{client_id}",
                "clientAddress": "127.0.0.1",
                "client_id": client_id,
            }
        )
        claims.update(self._extra_claims)
        access_token = _sign_jwt(claims, self._key)
        self._access[access_token] = _AccessRecord(client_id, iat + expires_in)

        payload: dict[str, object] = {
            "access_token": access_token,
            "expires_in": expires_in,
            "refresh_expires_in": 0,
        }
        if session_state is not None:
            refresh_expires_in = _whole_seconds(self._refresh_lifespan)
            refresh_jti = str(uuid.uuid4())
            refresh_claims: dict[str, object] = {
                "exp": iat + refresh_expires_in,
                "iat": iat,
                "jti": refresh_jti,
                "iss": issuer,
                "aud": issuer,
                "sub": subject,
                "typ": "Refresh",
                "azp": client_id,
                "session_state": session_state,
                "scope": scope,
                "sid": session_state,
            }
            self._refresh[refresh_jti] = _RefreshRecord(
                client_id, iat + refresh_expires_in, session_state, scope
            )
            payload["refresh_expires_in"] = refresh_expires_in
            payload["refresh_token"] = _sign_jwt(refresh_claims, self._key)
        payload["token_type"] = "Bearer"
        payload["not-before-policy"] = 0
        if session_state is not None:
            payload["session_state"] = session_state
        payload["scope"] = scope
        return payload

    def _introspect(self, handler: _Handler, body: bytes) -> None:
        """RFC 7662: the client authenticates as at the token endpoint."""
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        exchange = _Exchange(client_id=self._param(form, "client_id"), form=form)
        try:
            with self._lock:
                self._authenticate(exchange, handler.headers.get("Authorization"))
        except _OAuthError as exc:
            self._send_json(handler, exc.status, {"error": exc.error})
            return
        token = self._param(form, "token") or ""
        active = handler.command == "POST" and self.is_active(token)
        with self._lock:
            self._introspections.append(active)
        claims = _verify_jwt(token, self._key) if active else None
        self._send_json(handler, 200, {**(claims or {}), "active": active})

    def _protected_resource(self, handler: _Handler) -> None:
        now = self._clock()
        scheme, _, credentials = (handler.headers.get("Authorization") or "").partition(" ")
        ok = (
            handler.command in ("GET", "HEAD")
            and scheme.lower() == "bearer"
            and self.is_active(credentials.strip())
        )
        status = 200 if ok else 401
        with self._lock:
            self._verifies.append(VerifyRequest(time=now, status=status, ok=ok))
        if ok:
            headers = [("Content-Type", "text/plain; charset=utf-8")]
            handler.send_raw(200, headers, OMS_WELCOME.encode("utf-8"))
            return
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("WWW-Authenticate", 'Bearer realm="oms-api", error="invalid_token"'),
        ]
        handler.send_raw(401, headers, b"Unauthorized")


# --------------------------------------------------------------------------------------------
# Standalone
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run a stub until Ctrl-C or SIGTERM, printing its token URL on the first stdout line."""
    parser = argparse.ArgumentParser(
        prog="python -m rotator.testing.keycloak",
        description="Keycloak-like OAuth2 token endpoint stub (client secret from the "
        "STUB_CLIENT_SECRET environment variable, default oms-secret).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--realm", default="astore-p2p")
    parser.add_argument("--client-id", default="oms-client")
    parser.add_argument("--lifespan", type=float, default=300.0, help="access token seconds")
    parser.add_argument(
        "--refresh", action="store_true", help="issue refresh tokens for client_credentials"
    )
    parser.add_argument("--refresh-lifespan", type=float, default=1800.0)
    parser.add_argument("--no-auth-prefix", action="store_true", help="serve /realms/...")
    parser.add_argument("--legacy-errors", action="store_true")
    args = parser.parse_args(argv)

    secret = os.environ.get("STUB_CLIENT_SECRET", "oms-secret")
    stub = KeycloakStub(
        clients={args.client_id: secret},
        realm=args.realm,
        host=args.host,
        port=args.port,
        access_token_lifespan=args.lifespan,
        use_refresh_tokens=args.refresh,
        refresh_token_lifespan=args.refresh_lifespan,
        auth_prefix=not args.no_auth_prefix,
        legacy_errors=args.legacy_errors,
    )
    done = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        done.set()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous: Any = signal.signal(signal.SIGTERM, on_sigterm) if in_main_thread else None
    stub.start()
    try:
        sys.stdout.write(stub.token_url + "\n")
        sys.stdout.flush()
        sys.stderr.write(
            f"Keycloak stub: realm {args.realm}, client {args.client_id}, "
            f"lifespan {args.lifespan:g}s, refresh tokens {'on' if args.refresh else 'off'}, "
            f"protected resource {stub.verify_url} (Ctrl-C to stop)\n"
        )
        sys.stderr.flush()
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()
    finally:
        stub.stop()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
