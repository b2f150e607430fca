"""Issue 8, point 3: Retry-After can lengthen a back-off, never remove it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rotator.errors import TokenEndpointUnavailable
from rotator.retry import Backoff, call_with_retries
from tests.fakes import FakeClock


def unavailable(retry_after: float | None) -> TokenEndpointUnavailable:
    return TokenEndpointUnavailable("token endpoint answered HTTP 503", retry_after=retry_after)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4])
def test_retry_after_zero_keeps_the_exponential_backoff(attempt: int) -> None:
    backoff = Backoff(initial=1.0, cap=30.0, jitter=0.0)
    assert backoff.wait(attempt, unavailable(0.0)) == backoff.wait(attempt)
    assert backoff.wait(attempt, unavailable(0.0)) >= 1.0


def test_longer_retry_after_wins_and_stays_capped() -> None:
    backoff = Backoff(initial=1.0, cap=30.0, jitter=0.0)
    assert backoff.wait(1, unavailable(7.0)) == 7.0
    assert backoff.wait(1, unavailable(900.0)) == 30.0


def test_once_with_retry_after_zero_does_not_spin(clock: FakeClock) -> None:
    calls = 0

    def always_503() -> None:
        nonlocal calls
        calls += 1
        if calls > 50:  # without a back-off the fake clock never moves: stop the spin
            raise RuntimeError("spinning: Retry-After 0 removed the back-off")
        raise unavailable(0.0)

    with pytest.raises(TokenEndpointUnavailable):
        call_with_retries(
            always_503,
            backoff=Backoff(initial=1.0, cap=30.0, jitter=0.0),
            clock=clock,
            budget=timedelta(seconds=60),
        )
    # 1 + 2 + 4 + 8 + 16 = 31 s of waits fit the 60 s budget; 32 more do not.
    assert clock.waits == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert calls == 6
