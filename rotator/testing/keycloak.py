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

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import parse_qs, urlsplit

from rotator.testing._http import BodyError, Handler, TrackingServer, public_host, read_body
from rotator.testing.hs256 import json_bytes, verify_jwt
from rotator.testing.realm import Exchange, OAuthError, Realm, TokenRequest, VerifyRequest

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

_MAX_BODY = 1 << 20


@dataclass(frozen=True)
class _Canned:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]


def _content_type(body: bytes) -> str:
    start = body.lstrip()[:1]
    if start in (b"{", b"["):
        return "application/json"
    return "text/html; charset=utf-8"


class KeycloakStub(Realm):
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
        super().__init__(
            clients=DEFAULT_CLIENTS if clients is None else clients,
            realm=realm,
            access_token_lifespan=access_token_lifespan,
            use_refresh_tokens=use_refresh_tokens,
            refresh_token_lifespan=refresh_token_lifespan,
            legacy_errors=legacy_errors,
            clock=clock,
            extra_claims=extra_claims,
            disabled_clients=disabled_clients,
            refresh_clients=refresh_clients,
            issuer=lambda: self.issuer,
        )
        self.host = host
        self._requested_port = port
        self.auth_prefix = auth_prefix
        self._requests: list[TokenRequest] = []
        self._verifies: list[VerifyRequest] = []
        self._canned: deque[_Canned] = deque()
        self._server: TrackingServer | None = None
        self._port: int | None = None
        self._introspections: list[bool] = []  # the `active` of each answered request

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in daemon threads; returns ``self``."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("KeycloakStub is already running")
            server = TrackingServer(
                (self.host, self._requested_port), Handler, self._handle, "keycloak-stub"
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
        return f"http://{public_host(self.host)}:{self.port}"

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

    def introspection_count(self, active: bool | None = None) -> int:
        """Answered introspection requests; ``active=True``/``False`` counts by answer."""
        with self._lock:
            return sum(1 for a in self._introspections if active is None or a == active)

    # -- request handling --------------------------------------------------------------------

    def _handle(self, handler: Handler) -> None:
        try:
            body = read_body(handler.rfile, handler.headers, _MAX_BODY)
        except BodyError as exc:
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
        handler: Handler,
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
        handler.send_raw(status, headers, json_bytes(payload))

    def _token_endpoint(self, handler: Handler, body: bytes) -> None:
        now = self._clock()
        exchange = Exchange()
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
        except OAuthError as exc:
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
        handler: Handler,
        exchange: Exchange,
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

    def _introspect(self, handler: Handler, body: bytes) -> None:
        """RFC 7662: the client authenticates as at the token endpoint."""
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        exchange = Exchange(client_id=self._param(form, "client_id"), form=form)
        try:
            with self._lock:
                self._authenticate(exchange, handler.headers.get("Authorization"))
        except OAuthError as exc:
            self._send_json(handler, exc.status, {"error": exc.error})
            return
        token = self._param(form, "token") or ""
        active = handler.command == "POST" and self.is_active(token)
        with self._lock:
            self._introspections.append(active)
        claims = verify_jwt(token, self._key) if active else None
        self._send_json(handler, 200, {**(claims or {}), "active": active})

    def _protected_resource(self, handler: Handler) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run a stub until Ctrl-C or SIGTERM (see rotator.testing.keycloak_cli)."""
    from rotator.testing.keycloak_cli import main as run  # the CLI imports this module

    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
