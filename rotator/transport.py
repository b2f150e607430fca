"""The token POST straight to a urllib3 connection pool, one pool per token host.

requests' Session prepares, merges and re-checks every call (its settings, hooks,
cookies, the URL, the adapter's pool and TLS choice): ~0.6 ms of CPU per token request
on a loopback endpoint, half of it the Session layer, a fifth of the daemon's whole
cost per rotation (measured, issue 14). The token POST has one shape (a fixed URL per
client, an encoded form, no cookies, no redirects), so what requests decides per call
is decided here once per (URL, TLS trust, proxies), by requests' own code: the URL's
normal form (``PreparedRequest.prepare_url``); the pool, its TLS trust (the
credential's CA bundle, else certifi's bundle, never off) and the proxy with its
credentials (``HTTPAdapter``, with the overall deadline's connections mounted); the
request line's target (the whole URL through an http proxy). Each call then goes to
the pool's ``urlopen`` as requests' adapter sends it: the same headers, no retries,
no redirects, a streamed body decoded as requests decodes it, and urllib3's errors
raised as requests' exception types, so ``TokenClient`` maps them as it always did.
The verify_url GET and the probes keep requests' Session.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests.exceptions as rex
import urllib3
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.utils import default_headers, get_auth_from_url
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import ProxyError as _ProxyError
from urllib3.exceptions import SSLError as _SSLError

from rotator import deadline

USER_AGENT = "rotator/0.1"
POOL_MAXSIZE = 32  # connections kept per host: the default worker cap
POOL_HOSTS = 1024  # distinct routes before requests' pool manager closes the oldest


@dataclass(frozen=True)
class _Route:
    pool: Any  # a urllib3 connection pool, from requests' adapter
    target: str  # the request line's target: path and query, or the URL via an http proxy
    url_auth: tuple[str, str] | None  # user info in the URL, sent as Basic auth by requests


class TokenResponse:
    """What TokenClient reads of an answer, as requests.Response offers it: the
    status, the headers (case-insensitive), the body streamed and decoded, close."""

    def __init__(self, raw: urllib3.BaseHTTPResponse) -> None:
        self._raw = raw
        self.status_code = raw.status
        self.headers = raw.headers
        self._consumed = False

    def iter_content(self, chunk_size: int = 4096) -> Iterator[bytes]:
        try:
            yield from self._raw.stream(chunk_size, decode_content=True)
        except ProtocolError as exc:
            raise rex.ChunkedEncodingError(exc) from exc
        except DecodeError as exc:
            raise rex.ContentDecodingError(exc) from exc
        except ReadTimeoutError as exc:
            raise rex.ConnectionError(exc) from exc
        except _SSLError as exc:
            raise rex.SSLError(exc) from exc
        self._consumed = True

    def close(self) -> None:
        """Back to the pool when read to the end; a connection left mid-body is closed."""
        if not self._consumed:
            self._raw.close()
        self._raw.release_conn()


class TokenTransport:
    """The part of ``requests.Session.post`` that TokenClient uses, without the Session.
    Thread-safe: routes are built once under a lock; urllib3's pools are thread-safe."""

    def __init__(self, *, user_agent: str = USER_AGENT, pool_maxsize: int = POOL_MAXSIZE) -> None:
        self._adapter = HTTPAdapter(
            pool_connections=POOL_HOSTS, pool_maxsize=pool_maxsize, max_retries=0
        )
        deadline.mount(self._adapter)  # the overall deadline can shut the socket
        # requests' defaults (Accept-Encoding, Connection, ...) with our User-Agent
        self._headers = dict(default_headers())
        self._headers["User-Agent"] = user_agent
        self._routes: dict[tuple[str, str | bool, tuple[tuple[str, str], ...]], _Route] = {}
        self._timeouts: dict[tuple[float, float], urllib3.Timeout] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._routes.clear()
        self._adapter.close()

    def post(
        self,
        url: str,
        *,
        data: bytes,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
        auth: tuple[str, str] | None = None,
        verify: str | bool = True,
        proxies: Mapping[str, str] | None = None,
        stream: bool = True,
        allow_redirects: bool = False,
    ) -> TokenResponse:
        """POST `data` (an encoded body) to `url`; the answer's body is left to stream.
        A redirect is returned as is, never followed (nor is any other call made)."""
        if allow_redirects or not stream:
            raise ValueError("the token transport streams and never follows redirects")
        key = (url, verify, tuple(proxies.items()) if proxies else ())
        route = self._routes.get(key) or self._route(key)
        sent = dict(self._headers)
        sent.update(headers)
        sent["Content-Length"] = str(len(data))
        basic = auth or route.url_auth
        if basic is not None:
            sent["Authorization"] = _basic_auth(*basic)
        try:
            raw = route.pool.urlopen(
                method="POST",
                url=route.target,
                body=data,
                headers=sent,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=self._adapter.max_retries,
                timeout=self._timeout(timeout),
                chunked=False,
            )
        except ClosedPoolError as exc:  # its manager let it go: build the route again next time
            with self._lock:
                self._routes.pop(key, None)
            raise rex.ConnectionError(exc) from exc
        except (ProtocolError, OSError, MaxRetryError, _ProxyError, HTTPError) as exc:
            raise _as_requests_error(exc) from exc
        return TokenResponse(raw)

    def _route(self, key: tuple[str, str | bool, tuple[tuple[str, str], ...]]) -> _Route:
        """Everything requests decides per call, decided once per URL, trust and proxies
        (an OSError for a CA bundle it cannot find, as requests raises)."""
        url, verify, proxy_items = key
        with self._lock:
            found = self._routes.get(key)
            if found is not None:
                return found
            prepared = PreparedRequest()
            prepared.prepare(method="POST", url=url)
            proxies = dict(proxy_items)
            adapter = self._adapter
            try:
                pool = adapter.get_connection_with_tls_context(prepared, verify, proxies=proxies)
            except (ValueError, HTTPError) as exc:  # a malformed proxy URL
                raise rex.InvalidURL(exc) from exc
            adapter.cert_verify(pool, str(prepared.url), verify, None)  # type: ignore[no-untyped-call]
            user, password = get_auth_from_url(str(prepared.url))
            route = _Route(
                pool=pool,
                target=adapter.request_url(prepared, proxies),
                url_auth=(user, password) if user or password else None,
            )
            self._routes[key] = route
            return route

    def _timeout(self, timeout: tuple[float, float]) -> urllib3.Timeout:
        found = self._timeouts.get(timeout)
        if found is None:
            connect, read = timeout
            found = self._timeouts[timeout] = urllib3.Timeout(connect=connect, read=read)
        return found


def _basic_auth(user: str, password: str) -> str:
    """The Authorization header requests' HTTPBasicAuth sends (latin-1, then base64)."""
    pair = f"{user}:{password}".encode("latin1")
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _as_requests_error(exc: BaseException) -> BaseException:
    """urllib3's error as the requests exception its adapter raises for it."""
    if isinstance(exc, MaxRetryError):
        reason = exc.reason
        if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
            return rex.ConnectTimeout(exc)
        if isinstance(reason, ResponseError):
            return rex.RetryError(exc)
        if isinstance(reason, _ProxyError):
            return rex.ProxyError(exc)
        if isinstance(reason, _SSLError):
            return rex.SSLError(exc)
        return rex.ConnectionError(exc)
    if isinstance(exc, _ProxyError):
        return rex.ProxyError(exc)
    if isinstance(exc, _SSLError):
        return rex.SSLError(exc)
    if isinstance(exc, ReadTimeoutError):
        return rex.ReadTimeout(exc)
    if isinstance(exc, ProtocolError | OSError):
        return rex.ConnectionError(exc)
    return rex.RequestException(exc)
