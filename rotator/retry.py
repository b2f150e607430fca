"""The retry policy: what is transient, how long to wait, when to give up.

tenacity runs the retry loop with exponential back-off and jitter; we add Retry-After
and a cap tied to the token's lifetime. The same ``Backoff`` serves the daemon
(which reschedules instead of sleeping) and ``once`` (a tenacity loop whose
sleep waits on the shutdown event, so SIGTERM cuts a back-off short).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from rotator.clock import Clock
from rotator.errors import RotatorError

if TYPE_CHECKING:
    import tenacity

T = TypeVar("T")


def is_transient(exc: BaseException | None) -> bool:
    return isinstance(exc, RotatorError) and exc.is_transient


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with jitter, capped; a longer Retry-After lengthens a wait."""

    initial: float = 1.0
    cap: float = 30.0
    jitter: float = 1.0

    def capped(self, lifetime: timedelta | None) -> Backoff:
        """This policy with its cap lowered to a quarter of a token's lifetime."""
        if lifetime is None or lifetime <= timedelta(0):
            return self
        quarter = lifetime.total_seconds() / 4
        if quarter >= self.cap:
            return self
        return Backoff(
            initial=min(self.initial, quarter), cap=quarter, jitter=min(self.jitter, quarter)
        )

    def wait(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        # tenacity's wait_exponential_jitter formula, written out: the daemon asks for a
        # wait by attempt number outside any tenacity loop, so there is no RetryCallState.
        try:
            wait = self.initial * 2.0 ** (max(1, attempt) - 1) + random.uniform(0, self.jitter)  # noqa: S311
        except OverflowError:
            wait = self.cap
        wait = max(0.0, min(wait, self.cap))
        # Retry-After can only lengthen the wait: a "Retry-After: 0" (or a date in
        # the past) must not remove the back-off and turn retries into a spin.
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, int | float) and retry_after > wait:
            wait = float(retry_after)
        return min(wait, self.cap)


def call_with_retries(
    fn: Callable[[], T],
    *,
    backoff: Backoff,
    clock: Clock,
    budget: timedelta,
    stop_event: threading.Event | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Call `fn` until it succeeds, a non-transient error, or the budget runs out.

    The last error is re-raised unchanged. Waits go through `clock.wait` so
    tests record them and a set `stop_event` ends them at once. The first
    attempt runs before tenacity is even imported: most calls succeed.
    """
    started = clock.now()
    event = stop_event or threading.Event()
    try:
        return fn()
    except Exception as exc:
        if not is_transient(exc):
            raise
        first = exc
    return _retry_after_first_failure(
        fn,
        first,
        backoff=backoff,
        clock=clock,
        budget=budget,
        event=event,
        started=started,
        on_retry=on_retry,
    )


def _retry_after_first_failure(
    fn: Callable[[], T],
    first: BaseException,
    *,
    backoff: Backoff,
    clock: Clock,
    budget: timedelta,
    event: threading.Event,
    started: datetime,
    on_retry: Callable[[int, BaseException, float], None] | None,
) -> T:
    import tenacity

    delay = backoff.wait(1, first)
    elapsed = (clock.now() - started).total_seconds()
    if event.is_set() or elapsed + delay > budget.total_seconds():
        raise first
    if on_retry is not None:
        on_retry(1, first, delay)
    if clock.wait(delay, event) or event.is_set():
        raise first
    offset = 1  # tenacity counts from the second attempt here
    last_error: list[BaseException] = []

    def attempt() -> T:
        # A stop that arrived during the back-off ends it here: no further call
        # goes out; the error that led to the back-off is re-raised (the stop
        # check below then ends the loop).
        if event.is_set() and last_error:
            raise last_error[-1]
        try:
            return fn()
        except BaseException as exc:
            last_error[:] = [exc]
            raise

    def stop(state: tenacity.RetryCallState) -> bool:
        if event.is_set():
            return True
        elapsed = (clock.now() - started).total_seconds()
        return elapsed + state.upcoming_sleep > budget.total_seconds()

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return backoff.wait(state.attempt_number + offset, exc)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(state.attempt_number + offset, exc, state.upcoming_sleep)

    def sleep(seconds: float) -> None:
        clock.wait(seconds, event)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        wait=wait,
        stop=stop,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(attempt)
