"""TokenReader and BearerAuth against real stores: Secrets Manager and SSM on a moto
server over HTTP, and a file; the consumer's requests go to the KeycloakStub's protected
``/oms-api/`` on 127.0.0.1.

Documents are planted with the real stores' ``put`` (Secrets Manager staged the same way
everywhere, see FACTS.md). The reader's AWS client talks to moto through a FaultProxy that
counts GetSecretValue / GetParameter by X-Amz-Target, so store reads are counted on the wire,
not only by ``reader.reads``; the planting client talks to moto directly and is not counted.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from rotator.clock import format_instant
from rotator.reader import BearerAuth, TokenReader, TokenUnavailable
from rotator.stores import FileStore, Reading, SecretsManagerStore, SsmStore, TokenStore
from rotator.testing import FaultProxy, KeycloakStub
from rotator.token import Token
from tests.fakes import FakeClock, make_token

pytestmark = pytest.mark.timeout(60)

STORES = ("secretsmanager", "ssm", "file")
SECRET_ID = "oms/token"
PARAMETER = "/oms/token"
CLIENT = {
    "grant_type": "client_credentials",
    "client_id": "oms-client",
    "client_secret": "oms-secret",
}
THREADS = 8
REQUESTS = 1000
TIMEOUT = 5.0
# An access token the stub never issued: /oms-api/ answers it 401.
FOREIGN = "foreign-token-MARKER-not-issued-by-the-stub"

# X-Amz-Target of the one read call each AWS store makes.
READ_TARGETS = {
    "secretsmanager": "secretsmanager.GetSecretValue",
    "ssm": "AmazonSSM.GetParameter",
}


class CountingStore:
    """Delegates to a real store, counting ``get`` calls (the file store has no wire)."""

    def __init__(self, store: TokenStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self.gets = 0

    @property
    def name(self) -> str:
        return self._store.name

    @property
    def format(self) -> str:
        return self._store.format

    def get(self) -> Reading:
        with self._lock:
            self.gets += 1
        return self._store.get()

    def put(self, token: Token, basis: Reading | None = None) -> Any:
        return self._store.put(token, basis)

    def ping(self) -> None:
        self._store.ping()


@dataclass
class Backend:
    """One published location: ``writer`` plants (uncounted), ``reader_store`` is what the
    TokenReader reads through, ``store_reads()`` counts its reads independently."""

    kind: str
    writer: TokenStore
    reader_store: TokenStore
    store_reads: Callable[[], int]

    def reader(self, **kw: Any) -> TokenReader:
        return TokenReader(self.reader_store, **kw)


@pytest.fixture
def moto_proxy(aws: Any) -> Iterator[FaultProxy]:
    with FaultProxy(aws.endpoint) as proxy:
        yield proxy


@pytest.fixture
def make_backend(aws: Any, moto_proxy: FaultProxy, tmp_path: Path) -> Callable[[str, str], Backend]:
    def make(kind: str, fmt: str = "json") -> Backend:
        if kind == "file":
            path = tmp_path / f"token-{fmt}.json"
            counting = CountingStore(FileStore(path, fmt=fmt))
            return Backend(kind, FileStore(path, fmt=fmt), counting, lambda: counting.gets)
        target = READ_TARGETS[kind]

        def wire_reads() -> int:
            return sum(1 for r in moto_proxy.requests() if r.target == target)

        if kind == "secretsmanager":
            proxied = aws.client("secretsmanager", endpoint_url=moto_proxy.url)
            return Backend(
                kind,
                SecretsManagerStore(aws.secretsmanager, SECRET_ID, fmt=fmt, create=True),
                SecretsManagerStore(proxied, SECRET_ID, fmt=fmt),
                wire_reads,
            )
        proxied = aws.client("ssm", endpoint_url=moto_proxy.url)
        return Backend(
            kind,
            SsmStore(aws.ssm, PARAMETER, fmt=fmt),
            SsmStore(proxied, PARAMETER, fmt=fmt),
            wire_reads,
        )

    return make


def fetch_token(stub: KeycloakStub) -> Token:
    """A real token from the stub, with the instants of its JWT."""
    response = requests.post(stub.token_url, data=CLIENT, timeout=TIMEOUT)
    response.raise_for_status()
    body = response.json()
    claims = stub.token_claims(body["access_token"])
    assert claims is not None
    return Token(
        access_token=body["access_token"],
        token_type=body["token_type"],
        issued_at=datetime.fromtimestamp(claims["iat"], UTC),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        scope=body.get("scope"),
    )


def foreign_token(lifetime: float = 120.0) -> Token:
    """Valid by its document, unknown to the stub; expires before any real stub token."""
    return make_token(datetime.now(UTC), lifetime, access_token=FOREIGN)


def hammer(
    total: int, threads: int, call: Callable[[requests.Session], Any]
) -> tuple[Counter[Any], list[BaseException]]:
    """Run ``call`` ``total`` times spread over ``threads`` threads that start together."""
    results: Counter[Any] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker(count: int) -> None:
        with requests.Session() as session:
            try:
                barrier.wait(timeout=10)
                for _ in range(count):
                    outcome = call(session)
                    with lock:
                        results[outcome] += 1
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                with lock:
                    errors.append(exc)

    share, extra = divmod(total, threads)
    workers = [
        threading.Thread(target=worker, args=(share + (1 if i < extra else 0),), daemon=True)
        for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert not any(w.is_alive() for w in workers), "a worker thread hung"
    return results, errors


# ------------------------------------------------------------------------------------------
# one store read per token lifetime
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORES)
def test_8_threads_1000_requests_read_the_store_once(
    kind: str, make_backend: Callable[..., Backend], stub: KeycloakStub
) -> None:
    backend = make_backend(kind)
    token = fetch_token(stub)
    assert backend.writer.put(token).is_ours
    reader = backend.reader()
    auth = BearerAuth(reader)

    def call(session: requests.Session) -> int:
        return session.get(stub.verify_url, auth=auth, timeout=TIMEOUT).status_code

    results, errors = hammer(REQUESTS, THREADS, call)

    assert errors == []
    assert results == {200: REQUESTS}
    assert stub.verify_count(ok=True) == REQUESTS
    assert stub.verify_count(ok=False) == 0
    # One 300 s token lifetime: one read, however many threads asked at once.
    assert reader.reads == 1
    assert backend.store_reads() == 1


@pytest.mark.parametrize("kind", STORES)
def test_reads_once_per_token_lifetime_across_rotations(
    kind: str, make_backend: Callable[..., Backend]
) -> None:
    backend = make_backend(kind)
    clock = FakeClock()
    reader = backend.reader(clock=clock, leeway=timedelta(seconds=30))
    lifetimes = 3
    for n in range(lifetimes):
        token = make_token(clock.now(), 300, access_token=f"access-token-MARKER-{n}")
        assert backend.writer.put(token).is_ours

        def call(_session: requests.Session, value: str = token.access_token) -> bool:
            return reader.token() == value

        results, errors = hammer(REQUESTS, THREADS, call)
        assert errors == []
        assert results == {True: REQUESTS}
        assert reader.reads == n + 1
        assert backend.store_reads() == n + 1
        # Still cached one second before expires_at - leeway ...
        clock.advance(300 - 30 - 1)
        assert reader.token() == token.access_token
        assert backend.store_reads() == n + 1
        # ... re-read from expires_at - leeway on (the next lifetime's first call).
        clock.advance(1)
    assert reader.reads == lifetimes


# ------------------------------------------------------------------------------------------
# 401: one re-read, one retry, never a loop
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORES)
def test_401_rereads_the_store_once_and_retries_once(
    kind: str, make_backend: Callable[..., Backend], stub: KeycloakStub
) -> None:
    backend = make_backend(kind)
    backend.writer.put(foreign_token())
    reader = backend.reader()
    assert reader.token() == FOREIGN  # cached, and still valid by its document
    real = fetch_token(stub)
    assert backend.writer.put(real).is_ours  # published meanwhile; the cache does not know

    with requests.Session() as session:
        response = session.get(stub.verify_url, auth=BearerAuth(reader), timeout=TIMEOUT)
        assert response.status_code == 200
        assert [r.status_code for r in response.history] == [401]
        assert response.history[0].request.headers["Authorization"] == f"Bearer {FOREIGN}"
        assert response.request.headers["Authorization"] == f"Bearer {real.access_token}"
        assert stub.verify_count(ok=False) == 1
        assert stub.verify_count(ok=True) == 1
        assert reader.reads == 2
        assert backend.store_reads() == 2

        # The re-read refreshed the cache: later requests need no store call.
        for _ in range(5):
            assert session.get(stub.verify_url, auth=BearerAuth(reader), timeout=5).ok
    assert stub.verify_count() == 7
    assert reader.reads == 2
    assert backend.store_reads() == 2


@pytest.mark.parametrize("kind", STORES)
def test_a_server_that_always_answers_401_gets_two_requests_per_call(
    kind: str, make_backend: Callable[..., Backend], stub: KeycloakStub
) -> None:
    backend = make_backend(kind)
    backend.writer.put(foreign_token())  # the store never gets a token the stub accepts
    reader = backend.reader(min_reread_interval=timedelta(hours=1))
    auth = BearerAuth(reader)
    calls = 3
    with requests.Session() as session:
        for n in range(1, calls + 1):
            response = session.get(stub.verify_url, auth=auth, timeout=TIMEOUT)
            assert response.status_code == 401
            assert [r.status_code for r in response.history] == [401]
            assert stub.verify_count() == 2 * n
    assert stub.verify_count(ok=True) == 0
    # The first call's cache fill, then one re-read: later 401s within the re-read
    # interval (1 s by default, an hour here) reuse it (issue 8, point 5).
    assert reader.reads == 2
    assert backend.store_reads() == 2


def test_concurrent_401s_share_one_reread(
    make_backend: Callable[..., Backend], stub: KeycloakStub
) -> None:
    backend = make_backend("secretsmanager")
    backend.writer.put(foreign_token())
    reader = backend.reader()
    assert reader.token() == FOREIGN
    backend.writer.put(fetch_token(stub))
    with FaultProxy(stub.base_url) as api:
        # Hold the first request of every thread a moment, so that all eight are in flight
        # with the cached (rejected) token before the first 401 comes back.
        api.add_latency(0.3, times=THREADS, path_prefix="/oms-api/")
        auth = BearerAuth(reader)
        url = api.url + "/oms-api/"

        def call(session: requests.Session) -> int:
            return session.get(url, auth=auth, timeout=TIMEOUT).status_code

        results, errors = hammer(200, THREADS, call)
    assert errors == []
    assert results == {200: 200}
    assert stub.verify_count(ok=False) == THREADS
    # One read for the first fill, one for the new token: the store is read once per token.
    assert backend.store_reads() == 2


# ------------------------------------------------------------------------------------------
# raw format
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORES)
def test_raw_opaque_token_is_cached_for_the_max_age(
    kind: str, make_backend: Callable[..., Backend]
) -> None:
    backend = make_backend(kind, "raw")
    clock = FakeClock()
    reader = backend.reader(clock=clock, raw_max_age=timedelta(seconds=60))
    backend.writer.put(make_token(clock.now(), 300, access_token="opaque-MARKER-one"))

    results, errors = hammer(REQUESTS, THREADS, lambda _s: reader.token())
    assert errors == []
    assert results == {"opaque-MARKER-one": REQUESTS}
    assert reader.document() is None  # opaque: no expiry to honour
    assert reader.reads == 1
    assert backend.store_reads() == 1

    backend.writer.put(make_token(clock.now(), 300, access_token="opaque-MARKER-two"))
    clock.advance(59)
    assert reader.token() == "opaque-MARKER-one"  # within the max age: no store call
    assert backend.store_reads() == 1
    clock.advance(1)
    assert reader.token() == "opaque-MARKER-two"
    assert reader.reads == 2
    assert backend.store_reads() == 2


@pytest.mark.parametrize("kind", STORES)
def test_raw_jwt_is_cached_until_its_exp_and_authenticates(
    kind: str, make_backend: Callable[..., Backend], stub: KeycloakStub
) -> None:
    backend = make_backend(kind, "raw")
    token = fetch_token(stub)
    backend.writer.put(token)
    reader = backend.reader(raw_max_age=timedelta(seconds=1))  # a JWT's exp wins over it
    with requests.Session() as session:
        for _ in range(20):
            response = session.get(stub.verify_url, auth=BearerAuth(reader), timeout=TIMEOUT)
            assert response.status_code == 200
    document = reader.document()
    assert document is not None
    assert document.expires_at == token.expires_at
    assert reader.reads == 1
    assert backend.store_reads() == 1


# ------------------------------------------------------------------------------------------
# no usable token
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORES)
def test_missing_token_raises_token_unavailable_naming_the_store(
    kind: str, make_backend: Callable[..., Backend]
) -> None:
    backend = make_backend(kind)
    reader = backend.reader()
    with pytest.raises(TokenUnavailable) as caught:
        reader.token()
    assert str(caught.value) == f"no token published in {backend.reader_store.name}"
    # No negative caching: the next call asks the store again.
    with pytest.raises(TokenUnavailable):
        reader.token()
    assert backend.store_reads() == 2


@pytest.mark.parametrize("kind", STORES)
def test_expired_token_raises_with_its_expiry_and_never_the_token(
    kind: str, make_backend: Callable[..., Backend]
) -> None:
    backend = make_backend(kind)
    clock = FakeClock()
    token = make_token(clock.now(), 300, access_token="access-token-MARKER-expired")
    backend.writer.put(token)
    reader = backend.reader(clock=clock)
    assert reader.token() == token.access_token

    clock.advance(300)  # the store still holds it, but it is no longer good
    with pytest.raises(TokenUnavailable) as caught:
        reader.token()
    message = str(caught.value)
    assert message == (
        f"the token in {backend.reader_store.name} expired at {format_instant(token.expires_at)}"
    )
    assert "MARKER" not in message
    assert "MARKER" not in repr(caught.value)
    assert reader.reads == 2


def test_unreadable_document_raises_without_echoing_the_value(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text('{"access_token": "access-token-MARKER-leak", "token_type": "Bearer"}')
    reader = TokenReader.from_file(path)
    with pytest.raises(TokenUnavailable) as caught:
        reader.token()
    message = str(caught.value)
    assert message.startswith(f"unreadable token in file:{path}: ")
    assert "expires_at" in message
    assert "MARKER" not in message


# ------------------------------------------------------------------------------------------
# the constructors consumers use
# ------------------------------------------------------------------------------------------


def test_constructors_read_each_store_through_boto3s_own_endpoint_variables(
    aws: Any, moto_proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    token = make_token(now, 300, access_token="access-token-MARKER-ctor")
    SecretsManagerStore(aws.secretsmanager, SECRET_ID, create=True).put(token)
    SsmStore(aws.ssm, PARAMETER).put(token)
    FileStore(tmp_path / "token.json").put(token)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_proxy.url)

    readers = [
        TokenReader.from_secretsmanager(SECRET_ID, region="us-east-1"),
        TokenReader.from_ssm(PARAMETER, region="us-east-1"),
        TokenReader.from_file(tmp_path / "token.json"),
    ]
    for reader in readers:
        assert reader.token() == token.access_token
        assert reader.document() == token
        assert "MARKER" not in repr(reader)
    assert sum(1 for r in moto_proxy.requests() if r.target in READ_TARGETS.values()) == 2
