"""The consumer side: read the published token cheaply, and attach it to requests.

``TokenReader`` caches the token in memory until ``expires_at`` minus a leeway,
so a busy consumer calls the store about once per token lifetime; one refresh
is in flight at a time however many threads ask; re-reads after a 401 are at most
one per ``min_reread_interval`` (1 s), and while the store is unreachable a
cached token that has not expired is still served. ``BearerAuth`` plugs it into
``requests`` and, on a 401 from the origin it was sent to, re-reads the store
once and retries once.

    from rotator.reader import TokenReader, BearerAuth
    reader = TokenReader.from_secretsmanager("oms/token")
    requests.get("https://oms.example/oms-api/", auth=BearerAuth(reader))
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import requests.auth

from rotator.clock import Clock, SystemClock, format_instant
from rotator.errors import StoreError, TokenUnavailable
from rotator.stores.base import TokenStore
from rotator.token import Token

__all__ = ["BearerAuth", "TokenReader", "TokenUnavailable"]

log = logging.getLogger("rotator.reader")

# The reader's AWS calls happen while it holds its lock: short timeouts and a
# single attempt, instead of botocore's 60 s timeouts and its own retries.
READER_CONNECT_TIMEOUT_SECONDS = 2.0
READER_READ_TIMEOUT_SECONDS = 5.0


class TokenReader:
    """Cached, thread-safe reads of a published token."""

    def __init__(
        self,
        store: TokenStore,
        *,
        leeway: timedelta = timedelta(seconds=30),
        raw_max_age: timedelta = timedelta(seconds=60),
        min_reread_interval: timedelta = timedelta(seconds=1),
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._leeway = leeway
        self._raw_max_age = raw_max_age
        self._min_reread = min_reread_interval
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._value: str | None = None
        self._token: Token | None = None
        self._valid_until: datetime | None = None
        self._forced_at: datetime | None = None  # the last re-read a 401 asked for
        self.reads = 0  # store calls made, for tests and benchmarks

    def __repr__(self) -> str:
        return f"TokenReader({self._store.name!r})"

    # -- constructors for each store

    @classmethod
    def from_secretsmanager(
        cls, secret_id: str, *, region: str | None = None, client: Any = None, **kw: Any
    ) -> TokenReader:
        from rotator.stores.secretsmanager import SecretsManagerStore

        fmt = kw.pop("fmt", "json")
        client = client or _client("secretsmanager", region)
        return cls(SecretsManagerStore(client, secret_id, fmt=fmt), **kw)

    @classmethod
    def from_ssm(
        cls, parameter: str, *, region: str | None = None, client: Any = None, **kw: Any
    ) -> TokenReader:
        from rotator.stores.ssm import SsmStore

        fmt = kw.pop("fmt", "json")
        client = client or _client("ssm", region)
        return cls(SsmStore(client, parameter, fmt=fmt), **kw)

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> TokenReader:
        from rotator.stores.file import FileStore

        fmt = kw.pop("fmt", "json")
        return cls(FileStore(Path(path), fmt=fmt), **kw)

    # -- reads

    def token(self) -> str:
        """The current access token string, from cache when it is still good."""
        value = self._cached()
        if value is not None:
            return value
        with self._lock:
            value = self._cached()  # another thread may have refreshed meanwhile
            if value is not None:
                return value
            return self._reread()

    def document(self) -> Token | None:
        """The decoded token (None for an opaque raw token)."""
        self.token()
        return self._token

    def refresh(self, rejected: str | None = None) -> str:
        """Re-read the store now, whatever the cache says (after a 401).

        With `rejected` (the token the server refused), threads that hit the same
        401 together share one re-read: if the cache already moved on, it is used.
        """
        with self._lock:
            if rejected is not None and self._value is not None and self._value != rejected:
                return self._value
            now = self._clock.now()
            forced_at = self._forced_at
            if (
                self._value is not None
                and forced_at is not None
                and now - forced_at < self._min_reread
            ):
                # Rate limit: a burst of 401s makes one store read per interval, not one each.
                return self._value
            self._forced_at = now
            return self._reread()

    def _cached(self) -> str | None:
        until = self._valid_until
        if until is not None and self._clock.now() < until:
            return self._value
        return None

    def _reread(self) -> str:
        now = self._clock.now()
        self.reads += 1
        try:
            reading = self._store.get()
        except StoreError as exc:
            token = self._token
            if (
                exc.is_transient
                and self._value is not None
                and (token is None or not token.is_expired(now))
            ):
                # The store is down but what we hold is still valid: serve it, and
                # try the store again after the re-read interval.
                log.warning(
                    "store %s unreachable, serving the cached token: %s", self._store.name, exc
                )
                self._valid_until = min(
                    now + self._min_reread, token.expires_at if token else now + self._min_reread
                )
                return self._value
            raise
        if reading.is_missing or reading.value is None:
            raise TokenUnavailable(f"no token published in {self._store.name}")
        if reading.problem:
            raise TokenUnavailable(f"unreadable token in {self._store.name}: {reading.problem}")
        token = reading.token
        if token is None:  # opaque raw token: cache for a bounded age
            until = now + self._raw_max_age
            value = reading.value.strip()
        else:
            if token.is_expired(now):
                raise TokenUnavailable(
                    f"the token in {self._store.name} expired at {format_instant(token.expires_at)}"
                )
            until = max(token.expires_at - self._leeway, now + self._min_reread)
            until = min(until, token.expires_at)
            value = token.access_token
        self._value, self._token, self._valid_until = value, token, until
        return value


def _client(service: str, region: str | None) -> Any:
    import os

    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    config = Config(
        connect_timeout=READER_CONNECT_TIMEOUT_SECONDS,
        read_timeout=READER_READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    return session.create_client(service, region_name=region, config=config)


def _origin(url: str | None) -> tuple[str, str, int | None]:
    from urllib3.util import parse_url

    parts = parse_url(url or "")
    scheme = (parts.scheme or "").lower()
    port = parts.port or {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.host or "").lower(), port


class BearerAuth(requests.auth.AuthBase):
    """``requests`` auth: ``Authorization: Bearer <token>``; on a 401, one re-read
    of the store and one retry, never a loop. The token only ever goes to the
    origin the caller asked for: a 401 after a redirect to another host, port or
    scheme is returned as it is."""

    def __init__(self, reader: TokenReader) -> None:
        self.reader = reader

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.reader.token()}"
        origin = _origin(request.url)

        def hook(response: requests.Response, **kwargs: Any) -> requests.Response:
            return self._retry_on_401(response, origin=origin, **kwargs)

        request.register_hook("response", hook)  # type: ignore[no-untyped-call]
        return request

    def _retry_on_401(
        self,
        response: requests.Response,
        *,
        origin: tuple[str, str, int | None],
        **kwargs: Any,
    ) -> requests.Response:
        request = response.request
        if response.status_code != 401 or getattr(request, "_rotator_retried", False):
            return response
        if _origin(request.url) != origin or "Authorization" not in request.headers:
            return response  # a redirect took us elsewhere: never send the token there
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        token = self.reader.refresh(rejected=sent or None)
        response.content  # noqa: B018 - drain so the connection can be reused
        response.close()
        retry = request.copy()
        retry.headers["Authorization"] = f"Bearer {token}"
        retry._rotator_retried = True  # type: ignore[attr-defined]
        retry.hooks = {"response": []}
        new = response.connection.send(retry, **kwargs)
        new.history.append(response)
        new.request = retry
        return new
