"""The token endpoint client: client_credentials, refresh_token, fallback.

Parsing is pure (``parse_response``, in ``rotator.grant``: response validation and
RFC 6749 error mapping) so it is tested without sockets; the ``TokenClient`` only adds
the HTTP call, its timeouts and its size cap.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from rotator.clock import Clock
from rotator.config import connect_host, is_loopback
from rotator.deadline import Deadline
from rotator.errors import (
    ConfigError,
    CredentialsRejected,
    InvalidGrant,
    InvalidTokenResponse,
    TokenEndpointError,
    TokenEndpointUnavailable,
)
from rotator.grant import (
    MAX_EXPIRES_IN,
    MAX_RETRY_AFTER,
    REJECTED_CLIENT_ERRORS,
    Grant,
    parse_response,
    parse_retry_after,
    parse_token,
    safe_url,
)
from rotator.secret import Secret
from rotator.token import Token

if TYPE_CHECKING:
    import requests

    from rotator.assertion import ClientAuth
    from rotator.transport import TokenResponse, TokenTransport

# The parsing names keep their old import path (``from rotator.oauth import Grant``).
__all__ = [
    "FORM_CONTENT_TYPE",
    "MAX_BODY_BYTES",
    "MAX_EXPIRES_IN",
    "MAX_RETRY_AFTER",
    "REJECTED_CLIENT_ERRORS",
    "Grant",
    "TokenClient",
    "check_http_url",
    "encode_form",
    "parse_response",
    "parse_retry_after",
    "parse_token",
    "safe_url",
    "verify_token",
]

MAX_BODY_BYTES = 1 << 20  # a token response is a few KB; cap what we read


@functools.lru_cache(maxsize=1024)
def check_http_url(url: str, where: str) -> None:
    """https, or plain http to loopback only, judged on the host the HTTP library will
    actually connect to; a URL whose host two parsers read differently is refused.
    A pure function of its arguments, so an accepted URL is remembered (1,000
    credentials share a few token URLs); a refusal is not (it raises)."""
    try:
        parts = urlsplit(url)
        hostname = (parts.hostname or "").lower()
        host = connect_host(url)
    except ValueError:  # no cause: the parser's text may quote the URL, user info included
        raise ConfigError(f"{where} is not a valid URL") from None
    if host != hostname:
        raise ConfigError(f"{where}: the URL's host is ambiguous, refused: {safe_url(url)!r}")
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(host)):
        raise ConfigError(
            f"{where}: plain http:// is refused except to loopback: {safe_url(url)!r}"
        )


FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def encode_form(fields: Mapping[str, str | Sequence[str] | None]) -> bytes:
    """The form body exactly as requests encodes ``data=fields`` (UTF-8, ``quote_plus``,
    a list as a repeated field, in order, None left out), done here: requests' own path
    runs runtime Protocol checks on every call, a measurable share of a rotation's CPU."""
    pairs = [
        (key, value)
        for key, values in fields.items()
        if values is not None
        for value in ([values] if isinstance(values, str) else values)
        if value is not None
    ]
    return urlencode(pairs).encode("ascii")


class TokenClient:
    """Gets tokens from one token endpoint for one client, through `session`: the
    daemon's ``TokenTransport`` (urllib3 pools, see rotator.transport) or any
    requests.Session (the transport's errors are requests' exception types)."""

    def __init__(
        self,
        session: TokenTransport | requests.Session,
        *,
        token_url: str,
        client_id: str,
        client_secret: Callable[[], Secret],
        clock: Clock,
        auth_method: str = "client_secret_post",
        scope: str | None = None,
        timeout: tuple[float, float] = (5.0, 10.0),
        verify: str | bool = True,
        proxies: dict[str, str] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        on_request: Callable[[str, str], None] | None = None,
        client_auth: ClientAuth | None = None,
        extra_params: Sequence[tuple[str, str]] = (),
        deadline: float = 30.0,
        reresolve_secret: Callable[[], None] | None = None,
    ) -> None:
        check_http_url(token_url, "token_url")
        self._session = session
        self._url = token_url
        self._client_id = client_id
        self._secret = client_secret
        self._clock = clock
        self._auth_method = auth_method
        self._scope = scope
        self._timeout = timeout
        self._verify = verify
        self._proxies = proxies or {}
        self._max_body = max_body_bytes
        self._on_request = on_request or (lambda grant, outcome: None)
        # RFC 7523 assertions (client_secret_jwt, private_key_jwt) instead of the secret
        self._client_auth = client_auth
        # on every grant, client_credentials and refresh; a repeated field becomes a list
        self._extra: dict[str, str | list[str]] = {}
        for key, value in extra_params:
            previous = self._extra.get(key)
            if previous is None:
                self._extra[key] = value
            else:
                self._extra[key] = [*([previous] if isinstance(previous, str) else previous), value]
        self._deadline = deadline
        self._reresolve = reresolve_secret

    @property
    def client_id(self) -> str:
        return self._client_id

    def __repr__(self) -> str:
        return f"TokenClient({safe_url(self._url)!r}, client_id={self._client_id!r})"

    @property
    def url(self) -> str:
        return safe_url(self._url)

    def fetch(self, previous: Grant | None = None) -> Grant:
        """A fresh token: the refresh grant when `previous` still allows it, with an
        immediate fallback to client_credentials when the refresh token is rejected."""
        if (
            previous is not None
            and previous.refresh_token is not None
            and previous.can_refresh(self._clock.now())
        ):
            try:
                return self.refresh(previous.refresh_token)
            except InvalidGrant:
                pass  # the cure is a fresh client_credentials grant, at once
        return self.client_credentials()

    def client_credentials(self) -> Grant:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        return self._post(form, "client_credentials")

    def refresh(self, refresh_token: Secret) -> Grant:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token.reveal()}
        return self._post(form, "refresh_token")

    def _post(self, form: dict[str, str], grant_type: str) -> Grant:
        # The secret this request uses (None: an RFC 7523 assertion is signed instead).
        secret = self._secret() if self._client_auth is None else None
        try:
            return self._post_with(secret, form, grant_type)
        except CredentialsRejected as exc:
            # The secret or key may have been rotated (and its stored copy updated):
            # re-read the source once, and ask again at once only if it changed.
            if exc.error not in REJECTED_CLIENT_ERRORS or not self._source_changed(secret):
                raise
        return self._post_with(None if secret is None else self._secret(), form, grant_type)

    def _source_changed(self, used: Secret | None) -> bool:
        """Re-read the client secret or key source once: did it change since `used`?"""
        if self._client_auth is not None:
            return self._client_auth.reload()
        if self._reresolve is None or used is None:
            return False
        self._reresolve()
        return self._secret().reveal() != used.reveal()

    def authenticate(self, form: dict[str, str]) -> tuple[dict[str, Any], tuple[str, str] | None]:
        """`form` with this client's authentication (post, basic or an RFC 7523
        assertion), and the Basic auth pair if any: for the realm's other endpoints
        (RFC 7662 introspection), which take the same client authentication."""
        secret = self._secret() if self._client_auth is None else None
        return self._with_auth(dict(form), secret)

    def _with_auth(
        self, data: dict[str, Any], client_secret: Secret | None
    ) -> tuple[dict[str, Any], tuple[str, str] | None]:
        if self._client_auth is not None:
            return self._client_auth.apply(data), None
        assert client_secret is not None
        if self._auth_method == "client_secret_basic":
            # RFC 6749 2.3.1: both parts form-urlencoded before Basic encoding.
            from urllib.parse import quote_plus

            return data, (quote_plus(self._client_id), quote_plus(client_secret.reveal()))
        return {**data, "client_id": self._client_id, "client_secret": client_secret.reveal()}, None

    def _post_with(
        self, client_secret: Secret | None, form: dict[str, str], grant_type: str
    ) -> Grant:
        import requests

        # config refused any overlap of extra_params and the fields we set
        data, auth = self._with_auth({**self._extra, **form}, client_secret)
        sent_at = self._clock.now()
        where = f"token endpoint {safe_url(self._url)}"
        with Deadline(self._deadline) as deadline:
            try:
                response = self._session.post(
                    self._url,
                    data=encode_form(data),
                    auth=auth,
                    headers={"Accept": "application/json", "Content-Type": FORM_CONTENT_TYPE},
                    timeout=self._timeout,
                    verify=self._verify,
                    proxies=self._proxies,
                    stream=True,
                    allow_redirects=False,
                )
            # `from None` below on purpose: requests' and urllib3's exceptions quote the
            # whole URL (its query too) and the pool's repr, which the debug chain of causes
            # would print; the messages name the exception type instead.
            except requests.Timeout:
                self._on_request(grant_type, "timeout")
                raise TokenEndpointUnavailable(
                    f"{where} timed out", url=safe_url(self._url)
                ) from None
            except OSError as exc:
                if deadline.expired():
                    self._on_request(grant_type, "timeout")
                    raise self._past_deadline(where, None) from None
                if isinstance(exc, requests.RequestException):
                    raise self._unreachable(exc, where, grant_type) from None
                # requests raises a bare OSError for a CA bundle it cannot load
                self._on_request(grant_type, "config_error")
                raise ConfigError(
                    f"{where}: cannot use the CA bundle ({type(exc).__name__})"
                ) from None
            try:
                body = self._read_capped(response, where, deadline)
            finally:
                response.close()
            if deadline.fired:  # the socket was cut: what was read may be a truncated answer
                self._on_request(grant_type, "timeout")
                raise self._past_deadline(where, response.status_code)
        try:
            grant = parse_response(
                status=response.status_code,
                headers=response.headers,
                body=body,
                sent_at=sent_at,
                url=self._url,
                grant_type=grant_type,
            )
        except TokenEndpointError as exc:
            self._on_request(grant_type, exc.error or f"http_{response.status_code}")
            raise
        self._on_request(grant_type, "ok")
        return grant

    def _unreachable(
        self, exc: BaseException, where: str, grant_type: str
    ) -> TokenEndpointUnavailable:
        import requests

        if isinstance(exc, requests.exceptions.SSLError):
            self._on_request(grant_type, "tls_error")
            return TokenEndpointUnavailable(
                f"{where}: TLS verification failed ({type(exc).__name__})", url=safe_url(self._url)
            )
        self._on_request(grant_type, "connection_error")
        return TokenEndpointUnavailable(
            f"{where} is unreachable ({type(exc).__name__})", url=safe_url(self._url)
        )

    def _past_deadline(self, where: str, status: int | None) -> TokenEndpointUnavailable:
        return TokenEndpointUnavailable(
            f"{where}: no complete answer within the {self._deadline:g} s deadline",
            url=safe_url(self._url),
            status=status,
        )

    def _read_capped(
        self, response: TokenResponse | requests.Response, where: str, deadline: Deadline
    ) -> bytes:
        import requests

        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(chunk_size=4096):
                if deadline.expired():
                    raise requests.exceptions.ConnectionError("deadline")
                size += len(chunk)
                if size > self._max_body:
                    raise InvalidTokenResponse(
                        f"{where}: response body is larger than {self._max_body} bytes",
                        url=safe_url(self._url),
                        status=response.status_code,
                    )
                chunks.append(chunk)
        except requests.RequestException as exc:  # `from None`: see _post_with
            if deadline.expired():
                raise self._past_deadline(where, response.status_code) from None
            raise TokenEndpointUnavailable(
                f"{where}: the response was cut off ({type(exc).__name__})",
                url=safe_url(self._url),
                status=response.status_code,
            ) from None
        return b"".join(chunks)


def verify_token(
    session: requests.Session,
    url: str,
    token: Token,
    *,
    timeout: tuple[float, float] = (5.0, 10.0),
    verify: str | bool = True,
    proxies: dict[str, str] | None = None,
    deadline: float = 30.0,
) -> None:
    """GET `url` with the new token; anything but 2xx is a VerificationFailed.
    The exchange ends within `deadline` seconds however slowly the server answers."""
    import requests

    from rotator.errors import VerificationFailed, VerificationUnavailable

    where = f"verify_url {safe_url(url)}"
    with Deadline(deadline) as limit:
        try:
            response = session.get(
                url,
                headers={"Authorization": f"Bearer {token.access_token}"},
                timeout=timeout,
                verify=verify,
                proxies=proxies or {},
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as exc:  # `from None`: see TokenClient._post_with
            if limit.expired():
                raise VerificationUnavailable(
                    f"{where}: no answer within the {deadline:g} s deadline"
                ) from None
            raise VerificationUnavailable(
                f"{where} is unreachable ({type(exc).__name__})"
            ) from None
        response.close()
    if limit.fired:  # the socket was cut: the status may come from a truncated answer
        raise VerificationUnavailable(f"{where}: no answer within the {deadline:g} s deadline")
    if response.status_code >= 500 or response.status_code == 429:
        raise VerificationUnavailable(f"{where} answered HTTP {response.status_code}")
    if not 200 <= response.status_code < 300:
        raise VerificationFailed(f"{where} refused the new token: HTTP {response.status_code}")
