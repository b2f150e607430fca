"""Issue 8, point 5: the consumer reader does not amplify errors. A burst of 401s
makes at most one store read per interval, a store outage serves the cached token
while it is valid, and the reader's AWS clients have short timeouts, one attempt."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rotator import reader as reader_module
from rotator.errors import StoreAccessDenied, StoreUnavailable
from rotator.reader import TokenReader, TokenUnavailable
from rotator.stores.memory import MemoryStore
from rotator.token import encode
from tests.fakes import FakeClock, make_token


def published(clock: FakeClock, lifetime: float = 300.0) -> tuple[MemoryStore, str]:
    store = MemoryStore("sm")
    token = make_token(clock.now(), lifetime, access_token="tok-MARKER-1")
    store.plant(encode(token, "json"))
    return store, token.access_token


def test_a_burst_of_401s_makes_at_most_one_read_per_interval(clock: FakeClock) -> None:
    store, value = published(clock)
    reader = TokenReader(store, clock=clock)
    reader.token()
    for _ in range(50):
        reader.refresh(rejected=value)
    assert reader.reads == 2  # the fill and one re-read; was 51: one store read per 401

    clock.advance(0.5)
    reader.refresh(rejected=value)
    assert reader.reads == 2
    clock.advance(0.5)  # the documented interval (1 s) later, one more read is allowed
    for _ in range(50):
        reader.refresh(rejected=value)
    assert reader.reads == 3


def test_store_outage_serves_the_still_valid_cached_token(clock: FakeClock) -> None:
    store, value = published(clock)
    reader = TokenReader(store, clock=clock)
    assert reader.token() == value
    clock.advance(280)  # past expires_at - leeway: the cache wants a re-read
    store.fail_next(StoreUnavailable("secretsmanager unreachable"), times=3)
    assert reader.token() == value
    assert reader.token() == value  # within the interval: no second store call
    assert reader.reads == 2


def test_store_outage_after_expiry_raises(clock: FakeClock) -> None:
    store, _ = published(clock)
    reader = TokenReader(store, clock=clock)
    reader.token()
    clock.advance(301)
    store.fail_next(StoreUnavailable("secretsmanager unreachable"))
    with pytest.raises(StoreUnavailable):
        reader.token()


def test_access_denied_is_not_hidden_by_the_cache(clock: FakeClock) -> None:
    store, _ = published(clock)
    reader = TokenReader(store, clock=clock)
    reader.token()
    clock.advance(280)
    store.fail_next(StoreAccessDenied("denied"))
    with pytest.raises((StoreAccessDenied, TokenUnavailable)):
        reader.token()


@pytest.mark.parametrize("service", ["secretsmanager", "ssm"])
def test_reader_clients_use_short_timeouts_and_one_attempt(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    client = reader_module._client(service, "eu-west-1")
    config = client.meta.config
    assert config.connect_timeout <= 5 and config.read_timeout <= 5
    assert config.retries["total_max_attempts"] == 1


def test_interval_is_the_constructor_setting(clock: FakeClock) -> None:
    store, value = published(clock)
    reader = TokenReader(store, clock=clock, min_reread_interval=timedelta(seconds=10))
    reader.token()
    reader.refresh(rejected=value)
    clock.advance(5)
    reader.refresh(rejected=value)
    assert reader.reads == 2
    clock.advance(5)
    reader.refresh(rejected=value)
    assert reader.reads == 3
