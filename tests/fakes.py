"""Small real fakes shared by the unit tests: no sockets, no mock library.

* ``FakeClock``: a settable clock whose ``wait`` records the intended wait and
  lets the time pass (or returns at once when the event is set).
* ``FakeFetcher``: the ``Fetcher`` protocol; hands out scripted Grants or raises
  scripted errors, else issues a fresh token; records the ``previous`` it got.
* ``FlakyStore``: a ``MemoryStore`` whose ``put`` can be made to fail.
* ``FakeSession`` / ``FakeResponse``: just enough of ``requests.Session`` for
  ``TokenClient`` and ``verify_token``.
* ``FakeScheduler``: records ``add_job`` calls of the daemon.
* ``RecordingObserver``: the rotation ``Observer``, recording every event.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from requests.structures import CaseInsensitiveDict

from rotator.errors import StoreError
from rotator.oauth import Grant
from rotator.secret import Secret
from rotator.stores.base import PutResult, Reading
from rotator.stores.memory import MemoryStore
from rotator.token import Token

T0 = datetime(2026, 11, 28, 22, 0, 0, tzinfo=UTC)


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


class FakeClock:
    """A clock under the test's control. ``wait`` records what it was asked to
    wait and advances the time by it (as a real sleep would), unless the event
    is set, in which case it returns True at once."""

    def __init__(self, start: datetime = T0) -> None:
        self._now = start
        self.waits: list[float] = []
        self.on_wait: Callable[[float], None] | None = None

    def now(self) -> datetime:
        return self._now

    def advance(self, by: float | timedelta) -> datetime:
        self._now += by if isinstance(by, timedelta) else seconds(by)
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to any instant, backwards included."""
        self._now = when

    def wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        self.waits.append(seconds)
        if self.on_wait is not None:
            self.on_wait(seconds)
        if event is not None and event.is_set():
            return True
        self.advance(max(0.0, seconds))
        return False


def make_token(
    issued_at: datetime = T0,
    lifetime: float = 300.0,
    *,
    access_token: str = "access-token-MARKER-0",
    scope: str | None = None,
) -> Token:
    return Token(
        access_token=access_token,
        token_type="Bearer",
        issued_at=issued_at,
        expires_at=issued_at + seconds(lifetime),
        scope=scope,
    )


def make_jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWS compact token carrying `claims` (only the shape matters)."""

    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


class FakeFetcher:
    """Scripted token endpoint. Each ``fetch`` pops the next scripted item: a
    Grant is returned, an exception raised; with nothing scripted a fresh
    token is issued at the clock's now with ``lifetime``."""

    def __init__(
        self, clock: FakeClock, *, lifetime: float = 300.0, refresh_token: str | None = None
    ) -> None:
        self._clock = clock
        self.lifetime = lifetime
        self.refresh_token = refresh_token
        self.script: list[Grant | BaseException] = []
        self.previous: list[Grant | None] = []
        self.issued: list[Grant] = []
        self.on_fetch: Callable[[], None] | None = None
        self._seq = itertools.count(1)

    @property
    def calls(self) -> int:
        return len(self.previous)

    def queue(self, *items: Grant | BaseException) -> None:
        self.script.extend(items)

    def grant(self, lifetime: float | None = None) -> Grant:
        now = self._clock.now()
        token = make_token(
            now,
            self.lifetime if lifetime is None else lifetime,
            access_token=f"access-token-MARKER-{next(self._seq)}",
        )
        if self.refresh_token is None:
            return Grant(token=token)
        return Grant(
            token=token,
            refresh_token=Secret(self.refresh_token),
            refresh_expires_at=now + seconds(1800),
        )

    def fetch(self, previous: Grant | None = None) -> Grant:
        self.previous.append(previous)
        if self.on_fetch is not None:
            self.on_fetch()
        item = self.script.pop(0) if self.script else self.grant()
        if isinstance(item, BaseException):
            raise item
        self.issued.append(item)
        return item


class FlakyStore(MemoryStore):
    """A MemoryStore whose next ``put`` calls raise the queued errors (reads still work)."""

    def __init__(self, name: str = "flaky", fmt: str = "json") -> None:
        super().__init__(name, fmt)
        self.put_failures: list[StoreError] = []
        self.put_calls = 0

    def fail_puts(self, exc: StoreError, times: int = 1) -> None:
        self.put_failures.extend([exc] * times)

    def put(self, token: Token, basis: Reading | None = None) -> PutResult:
        self.put_calls += 1
        if self.put_failures:
            raise self.put_failures.pop(0)
        return super().put(token, basis)


@dataclass
class FakeResponse:
    """What ``requests.Response`` offers TokenClient: status, headers, streamed body."""

    status_code: int = 200
    body: bytes = b""
    headers: CaseInsensitiveDict[str] = field(default_factory=CaseInsensitiveDict)
    chunk_error: BaseException | None = None
    closed: bool = False

    @classmethod
    def json(
        cls, data: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> FakeResponse:
        hdrs = CaseInsensitiveDict({"Content-Type": "application/json", **(headers or {})})
        return cls(status_code=status, body=json.dumps(data).encode(), headers=hdrs)

    def iter_content(self, chunk_size: int = 1) -> Iterator[bytes]:
        for start in range(0, len(self.body), chunk_size):
            yield self.body[start : start + chunk_size]
        if self.chunk_error is not None:
            raise self.chunk_error

    def close(self) -> None:
        self.closed = True


@dataclass
class SentRequest:
    method: str
    url: str
    kwargs: dict[str, Any]

    @property
    def form(self) -> dict[str, Any]:
        """The form fields the encoded body carries: a value, or a list for a field
        sent more than once (as the client's dict said before encoding)."""
        body = self.kwargs.get("data")
        if body is None:
            return {}
        assert isinstance(body, bytes), f"the form must go out encoded, got {type(body)}"
        assert self.kwargs["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
        fields: dict[str, Any] = {}
        for key, value in parse_qsl(
            body.decode("ascii"), keep_blank_values=True, strict_parsing=True
        ):
            previous = fields.get(key)
            if previous is None:
                fields[key] = value
            else:
                fields[key] = [*([previous] if isinstance(previous, str) else previous), value]
        return fields


class FakeSession:
    """Answers ``post``/``get`` from a script of FakeResponse or exceptions, and
    records every request. ``on_send`` runs before each answer (e.g. to let the
    fake clock pass, as a slow server would)."""

    def __init__(self, *script: FakeResponse | BaseException) -> None:
        self.script: list[FakeResponse | BaseException] = list(script)
        self.sent: list[SentRequest] = []
        self.responses: list[FakeResponse] = []
        self.on_send: Callable[[SentRequest], None] | None = None

    def queue(self, *items: FakeResponse | BaseException) -> None:
        self.script.extend(items)

    def _answer(self, method: str, url: str, kwargs: dict[str, Any]) -> FakeResponse:
        request = SentRequest(method, url, kwargs)
        self.sent.append(request)
        if self.on_send is not None:
            self.on_send(request)
        if not self.script:
            raise AssertionError(f"unexpected {method} {url}: nothing scripted")
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        self.responses.append(item)
        return item

    def post(self, url: str, **kwargs: Any) -> FakeResponse:
        return self._answer("POST", url, kwargs)

    def get(self, url: str, **kwargs: Any) -> FakeResponse:
        return self._answer("GET", url, kwargs)


@dataclass
class ScheduledJob:
    func: Callable[..., Any]
    run_date: datetime
    args: tuple[Any, ...]
    id: str


class FakeScheduler:
    """Records the daemon's ``add_job`` calls instead of running them."""

    def __init__(self) -> None:
        self.jobs: list[ScheduledJob] = []
        self.running = True

    def add_job(
        self,
        func: Callable[..., Any],
        *,
        trigger: str,
        run_date: datetime,
        args: Iterable[Any] = (),
        id: str = "",
        name: str = "",
    ) -> None:
        assert trigger == "date"
        self.jobs.append(ScheduledJob(func, run_date, tuple(args), id))

    @property
    def run_dates(self) -> list[datetime]:
        return [job.run_date for job in self.jobs]


class RecordingObserver:
    """The rotation Observer, recording (event, *details) tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e[1:] for e in self.events if e[0] == kind]

    def token_request(self, credential: str, grant: str, outcome: str) -> None:
        self.events.append(("token_request", credential, grant, outcome))

    def publish(self, credential: str, target: str, outcome: str) -> None:
        self.events.append(("publish", credential, target, outcome))

    def rotation(self, credential: str, result: str) -> None:
        self.events.append(("rotation", credential, result))

    def published(self, credential: str, token: Token) -> None:
        self.events.append(("published", credential, token))

    def scheduled(self, credential: str, at: datetime) -> None:
        self.events.append(("scheduled", credential, at))

    def retry(self, credential: str, error: BaseException) -> None:
        self.events.append(("retry", credential, error))


def memory_daemon(clock: Any, count: int) -> tuple[Any, list[Any]]:
    """A Daemon over ``count`` rotators ``c0``, ``c1``... (a FakeFetcher and a MemoryStore
    ``m0``, ``m1``... each), no jitter, on ``clock``; its scheduler is the caller's."""
    from rotator.retry import Backoff
    from rotator.rotation import CredentialRotator, NullObserver
    from rotator.scheduler import Daemon

    rotators = [
        CredentialRotator(
            f"c{k}", fetcher=FakeFetcher(clock), stores=[MemoryStore(f"m{k}")], clock=clock
        )
        for k in range(count)
    ]
    daemon = Daemon(
        rotators,
        clock=clock,
        backoff=Backoff(initial=1.0, cap=30.0, jitter=0.0),
        observer=NullObserver(),
        scheduler_now=clock.now,
    )
    return daemon, rotators
