"""The Keycloak stub's realm: clients, issued tokens and the OAuth2 grants, with
Keycloak's status codes, error codes and descriptions (see rotator.testing.keycloak)."""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import secrets
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from rotator.testing.hs256 import sign_jwt, verify_jwt

__all__ = ["Exchange", "OAuthError", "Realm", "TokenRequest", "VerifyRequest", "check_lifespan"]

_DEFAULT_SCOPE = ("profile", "email")


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


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass
class Exchange:
    """What is known about a token request while it is being processed."""

    grant_type: str | None = None
    client_id: str | None = None
    auth_method: str | None = None
    form: dict[str, list[str]] = field(default_factory=dict)


def _whole_seconds(seconds: float) -> int:
    return math.ceil(seconds)


def check_lifespan(name: str, seconds: float) -> float:
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")
    return float(seconds)


class Realm:
    """The realm behind the stub: its clients, settings and issued tokens, and the
    OAuth2 grants (client authentication, client_credentials, refresh_token). No HTTP:
    ``KeycloakStub`` adds the server, the request log and the canned answers.

    Every method that reads or changes the state holds ``_lock`` (re-entrant).
    """

    def __init__(
        self,
        *,
        clients: Mapping[str, str],
        realm: str,
        access_token_lifespan: float,
        use_refresh_tokens: bool,
        refresh_token_lifespan: float,
        legacy_errors: bool,
        clock: Callable[[], float],
        extra_claims: Mapping[str, object] | None,
        disabled_clients: Iterable[str],
        refresh_clients: Iterable[str],
        issuer: Callable[[], str],
    ) -> None:
        """``issuer`` gives the ``iss`` claim (it names the server's port, known once it
        listens)."""
        self._lock = threading.RLock()
        self._issuer = issuer
        self._clients = dict(clients)
        self.realm = realm
        self._access_lifespan = check_lifespan("access_token_lifespan", access_token_lifespan)
        self._refresh_lifespan = check_lifespan("refresh_token_lifespan", refresh_token_lifespan)
        self._use_refresh_tokens = use_refresh_tokens
        self._refresh_clients = set(refresh_clients)
        self._disabled = set(disabled_clients)
        self.legacy_errors = legacy_errors
        self._clock = clock
        self._extra_claims = dict(extra_claims or {})
        self._key = secrets.token_bytes(32)
        self._access: dict[str, _AccessRecord] = {}
        self._refresh: dict[str, _RefreshRecord] = {}
        self._revoked: set[str] = set()  # access tokens revoked before their expiry
        self._refuse_all = False

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
        return verify_jwt(token, self._key)

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

    def set_access_token_lifespan(self, seconds: float) -> None:
        value = check_lifespan("access_token_lifespan", seconds)
        with self._lock:
            self._access_lifespan = value

    def set_refresh_token_lifespan(self, seconds: float) -> None:
        value = check_lifespan("refresh_token_lifespan", seconds)
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

    # -- the OAuth2 protocol ------------------------------------------------------------------

    @staticmethod
    def _param(form: Mapping[str, list[str]], name: str) -> str | None:
        values = form.get(name)
        return values[0] if values else None

    def _grant(
        self, exchange: Exchange, authorization: str | None, now: float
    ) -> dict[str, object]:
        grant_type = exchange.grant_type
        if grant_type is None:
            raise OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
        if grant_type not in ("client_credentials", "refresh_token", "password"):
            raise OAuthError(400, "unsupported_grant_type", "Unsupported grant_type")
        client_id = self._authenticate(exchange, authorization)
        if grant_type == "password":  # the realm's clients have direct access grants off
            raise OAuthError(
                400, "unauthorized_client", "Client not allowed for direct access grants"
            )
        if any(len(values) > 1 for values in exchange.form.values()):
            raise OAuthError(400, "invalid_request", "duplicated parameter")
        if grant_type == "client_credentials":
            scope = self._scope(self._param(exchange.form, "scope"))
            return self._issue(client_id, scope, now, session_state=None)
        return self._refresh_grant(exchange, client_id, now)

    def _client_error(
        self, legacy_description: str, error: str = "unauthorized_client"
    ) -> OAuthError:
        """Keycloak 26: 401 ``unauthorized_client`` for a known client with a wrong or missing
        secret, 401 ``invalid_client`` when there is no usable client (unknown, disabled or
        not named at all); same description for all."""
        if self.legacy_errors:
            return OAuthError(401, "invalid_client", legacy_description)
        return OAuthError(401, error, "Invalid client or Invalid client credentials")

    def _authenticate(self, exchange: Exchange, authorization: str | None) -> str:
        form_client_id = exchange.client_id
        secret: str | None
        if authorization is not None and authorization[:6].lower() == "basic ":
            exchange.auth_method = "client_secret_basic"
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                # No cause: a UnicodeDecodeError quotes a byte of the client's credentials.
                raise OAuthError(
                    400, "invalid_client", "Invalid Basic authentication header"
                ) from None
            raw_id, sep, raw_secret = decoded.partition(":")
            if not sep:
                raise OAuthError(400, "invalid_client", "Invalid Basic authentication header")
            # RFC 6749 2.3.1: both parts are form-urlencoded before being joined.
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            exchange.client_id = client_id
            if form_client_id is not None and form_client_id != client_id:
                raise OAuthError(400, "invalid_request", "Parameter client_id does not match")
        else:
            exchange.auth_method = "client_secret_post"
            if form_client_id is None:
                if self.legacy_errors:
                    raise OAuthError(400, "invalid_client", "Missing form parameter: client_id")
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

    def _refresh_grant(self, exchange: Exchange, client_id: str, now: float) -> dict[str, object]:
        token = self._param(exchange.form, "refresh_token")
        if token is None:
            raise OAuthError(400, "invalid_request", "No refresh token")
        claims = verify_jwt(token, self._key)
        jti = claims.get("jti") if claims is not None else None
        record = self._refresh.get(jti) if isinstance(jti, str) else None
        if claims is None or claims.get("typ") != "Refresh" or record is None:
            raise OAuthError(400, "invalid_grant", "Invalid refresh token")
        if math.floor(now) > record.exp:
            raise OAuthError(400, "invalid_grant", "Token is not active")
        if record.revoked is not None:
            raise OAuthError(400, "invalid_grant", record.revoked)
        if record.client_id != client_id:
            raise OAuthError(
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
        issuer = self._issuer()
        iat = math.floor(now)
        expires_in = _whole_seconds(self._access_lifespan)
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
        access_token = sign_jwt(claims, self._key)
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
            payload["refresh_token"] = sign_jwt(refresh_claims, self._key)
        payload["token_type"] = "Bearer"
        payload["not-before-policy"] = 0
        if session_state is not None:
            payload["session_state"] = session_state
        payload["scope"] = scope
        return payload
