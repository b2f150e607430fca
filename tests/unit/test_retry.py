"""The retry policy: back-off waits, caps, budget, and what is not retried."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from rotator.errors import (
    CredentialsRejected,
    InvalidTokenResponse,
    StoreAccessDenied,
    StoreUnavailable,
    TokenEndpointUnavailable,
)
from rotator.retry import Backoff, call_with_retries, is_transient
from tests.fakes import FakeClock


class Flaky:
    """Raises the scripted errors in order, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def unavailable(retry_after: float | None = None) -> TokenEndpointUnavailable:
    return TokenEndpointUnavailable("token endpoint answered HTTP 503", retry_after=retry_after)


def test_waits_grow_exponentially_without_jitter() -> None:
    backoff = Backoff(initial=1.0, cap=30.0, jitter=0.0)
    assert [backoff.wait(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_jitter_stays_within_its_band_and_under_the_cap() -> None:
    backoff = Backoff(initial=1.0, cap=30.0, jitter=1.0)
    for attempt in range(1, 12):
        base = min(2.0 ** (attempt - 1), 30.0)
        for _ in range(50):
            wait = backoff.wait(attempt)
            assert base <= wait <= min(base + 1.0, 30.0)


def test_retry_after_is_honoured_and_capped() -> None:
    backoff = Backoff(initial=1.0, cap=30.0, jitter=0.0)
    assert backoff.wait(1, unavailable(retry_after=12.0)) == 12.0
    assert backoff.wait(5, unavailable(retry_after=0.0)) == 16.0  # never below the back-off
    assert backoff.wait(1, unavailable(retry_after=600.0)) == 30.0
    assert backoff.wait(3, unavailable(retry_after=None)) == 4.0


def test_capped_by_a_quarter_of_the_lifetime() -> None:
    backoff = Backoff(initial=1.0, cap=30.0, jitter=1.0)
    short = backoff.capped(timedelta(seconds=40))
    assert short.cap == 10.0
    for attempt in range(1, 10):
        assert backoff.capped(timedelta(seconds=40)).wait(attempt) <= 10.0
    assert short.wait(1, unavailable(retry_after=60.0)) == 10.0
    tiny = backoff.capped(timedelta(seconds=2))
    assert tiny.cap == 0.5
    assert all(tiny.wait(n) <= 0.5 for n in range(1, 6))
    # a long-lived token keeps the configured cap; no lifetime known keeps it too
    assert backoff.capped(timedelta(hours=1)) == backoff
    assert backoff.capped(None) == backoff
    assert backoff.capped(timedelta(0)) == backoff


def test_is_transient() -> None:
    assert is_transient(unavailable())
    assert is_transient(StoreUnavailable("throttled"))
    assert not is_transient(CredentialsRejected("no"))
    assert not is_transient(StoreAccessDenied("no"))
    assert not is_transient(RuntimeError("boom"))
    assert not is_transient(None)


def run(
    fn: Flaky,
    clock: FakeClock,
    *,
    budget: float = 60.0,
    backoff: Backoff | None = None,
    stop_event: threading.Event | None = None,
) -> str:
    return call_with_retries(
        fn,
        backoff=backoff or Backoff(initial=1.0, cap=30.0, jitter=0.0),
        clock=clock,
        budget=timedelta(seconds=budget),
        stop_event=stop_event,
    )


def test_retries_transient_errors_with_recorded_waits(clock: FakeClock) -> None:
    fn = Flaky(unavailable(), unavailable(), unavailable())
    retries: list[tuple[int, float]] = []
    result = call_with_retries(
        fn,
        backoff=Backoff(initial=1.0, cap=30.0, jitter=0.0),
        clock=clock,
        budget=timedelta(seconds=60),
        on_retry=lambda attempt, exc, wait: retries.append((attempt, wait)),
    )
    assert result == "ok"
    assert fn.calls == 4
    assert clock.waits == [1.0, 2.0, 4.0]
    assert retries == [(1, 1.0), (2, 2.0), (3, 4.0)]


def test_retry_after_drives_the_wait(clock: FakeClock) -> None:
    fn = Flaky(unavailable(retry_after=7), unavailable(retry_after=500))
    assert run(fn, clock) == "ok"
    assert clock.waits == [7.0, 30.0]


def test_stops_at_the_budget_and_reraises_the_last_error(clock: FakeClock) -> None:
    errors = [unavailable() for _ in range(50)]
    fn = Flaky(*errors)
    with pytest.raises(TokenEndpointUnavailable) as info:
        run(fn, clock, budget=60.0)
    # 1+2+4+8+16 = 31 s slept; the next 30 s wait would end past the 60 s budget
    assert clock.waits == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert sum(clock.waits) <= 60.0
    assert fn.calls == 6
    assert info.value is errors[5]


def test_budget_counts_the_time_attempts_take(clock: FakeClock) -> None:
    def slow() -> str:
        clock.advance(25)
        raise unavailable()

    with pytest.raises(TokenEndpointUnavailable):
        call_with_retries(
            slow,
            backoff=Backoff(initial=1.0, cap=30.0, jitter=0.0),
            clock=clock,
            budget=timedelta(seconds=60),
        )
    # 25 (call) + 1 + 25 (call) + 2 + 25 (call) = 78 > 60 - stop before the 3rd wait
    assert clock.waits == [1.0, 2.0]


@pytest.mark.parametrize(
    "error",
    [
        CredentialsRejected("rejected"),
        InvalidTokenResponse("HTML body"),
        StoreAccessDenied("denied"),
        ValueError("a bug"),
    ],
)
def test_non_transient_errors_are_not_retried(clock: FakeClock, error: Exception) -> None:
    fn = Flaky(error)
    with pytest.raises(type(error)) as info:
        run(fn, clock)
    assert info.value is error
    assert fn.calls == 1
    assert clock.waits == []


def test_a_set_stop_event_ends_it_at_once(clock: FakeClock) -> None:
    event = threading.Event()
    event.set()
    first = unavailable()
    fn = Flaky(first, unavailable())
    with pytest.raises(TokenEndpointUnavailable) as info:
        run(fn, clock, stop_event=event)
    assert info.value is first
    assert fn.calls == 1
    assert clock.waits == []


def test_stop_during_a_back_off_makes_no_further_attempt(clock: FakeClock) -> None:
    event = threading.Event()
    clock.on_wait = lambda _seconds: event.set()  # SIGTERM arrives while we wait
    first = unavailable()
    fn = Flaky(first, unavailable(), unavailable())
    with pytest.raises(TokenEndpointUnavailable) as info:
        run(fn, clock, stop_event=event)
    assert fn.calls == 1
    assert clock.waits == [1.0]
    assert info.value is first
