"""The daemon's job chain, driven by hand: a fake scheduler records each run_date."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rotator.errors import CredentialsRejected, StoreUnavailable, TokenEndpointUnavailable
from rotator.retry import Backoff
from rotator.rotation import CredentialRotator, NullObserver, Observer
from rotator.scheduler import Daemon
from rotator.stores.memory import MemoryStore
from rotator.token import Token
from tests.fakes import FakeClock, FakeFetcher, FakeScheduler, FlakyStore, RecordingObserver

S = timedelta(seconds=1)


def setup(
    clock: FakeClock,
    *,
    lifetime: float = 300,
    store: MemoryStore | None = None,
    observer: Observer | None = None,
    cap: float = 30.0,
    advise: object = None,
) -> tuple[Daemon, CredentialRotator, FakeFetcher, FakeScheduler]:
    fetcher = FakeFetcher(clock, lifetime=lifetime)
    rot = CredentialRotator(
        "oms", fetcher=fetcher, stores=[store or MemoryStore("sm")], clock=clock, rng=lambda: 0.5
    )
    daemon = Daemon(
        [rot],
        clock=clock,
        backoff=Backoff(initial=1.0, cap=cap, jitter=0.0),
        observer=observer or NullObserver(),
        advise=advise,  # type: ignore[arg-type]
        scheduler_now=clock.now,
    )
    scheduler = FakeScheduler()
    daemon._scheduler = scheduler
    return daemon, rot, fetcher, scheduler


def test_success_schedules_the_next_run_from_the_token(clock: FakeClock) -> None:
    observer = RecordingObserver()
    daemon, rot, fetcher, scheduler = setup(clock, observer=observer)
    started = clock.now()
    daemon._run(rot)
    assert fetcher.calls == 1
    (job,) = scheduler.jobs
    assert job.run_date == started + 217.5 * S  # 75 % of 300 s minus half the 5 % jitter
    assert job.args == (rot,)
    assert job.func == daemon._run
    state = daemon.states["oms"]
    assert state.next_run_at == job.run_date
    assert state.last_success_at == started
    assert state.consecutive_failures == 0 and state.last_error is None
    assert observer.of("scheduled") == [("oms", job.run_date)]


def test_failures_back_off_and_the_chain_goes_on(clock: FakeClock) -> None:
    daemon, rot, fetcher, scheduler = setup(clock)
    fetcher.queue(*(TokenEndpointUnavailable("HTTP 503") for _ in range(7)))
    for _ in range(7):
        before = clock.now()
        daemon._run(rot)
        clock.set(scheduler.jobs[-1].run_date)
        assert scheduler.jobs[-1].run_date > before
    waits = [
        (b.run_date - a.run_date).total_seconds()
        for a, b in zip(scheduler.jobs, scheduler.jobs[1:], strict=False)
    ]
    assert waits == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    state = daemon.states["oms"]
    assert state.consecutive_failures == 7
    assert "HTTP 503" in (state.last_error or "")
    daemon._run(rot)  # the endpoint is back
    assert state.consecutive_failures == 0
    assert state.last_error is None
    assert scheduler.jobs[-1].run_date == clock.now() + 217.5 * S
    assert len({job.id for job in scheduler.jobs}) == len(scheduler.jobs)


def test_retry_after_is_honoured(clock: FakeClock) -> None:
    daemon, rot, fetcher, scheduler = setup(clock)
    fetcher.queue(TokenEndpointUnavailable("HTTP 429", retry_after=12.0))
    daemon._run(rot)
    assert scheduler.run_dates == [clock.now() + 12 * S]


def test_rejected_credentials_back_off_too(clock: FakeClock) -> None:
    observer = RecordingObserver()
    daemon, rot, fetcher, scheduler = setup(clock, observer=observer)
    fetcher.queue(CredentialsRejected("rejected the client credentials"))
    daemon._run(rot)
    assert scheduler.run_dates == [clock.now() + 1 * S]
    assert observer.of("rotation") == [("oms", "error")]
    assert [e[0] for e in observer.of("retry")] == ["oms"]


def test_back_off_is_capped_by_a_quarter_of_the_token_lifetime(clock: FakeClock) -> None:
    store = FlakyStore("flaky")
    daemon, rot, fetcher, scheduler = setup(clock, lifetime=40, store=store)
    daemon._run(rot)  # a 40 s token is published
    fetcher.queue(*(TokenEndpointUnavailable("HTTP 503") for _ in range(8)))
    clock.advance(30)  # past due
    for _ in range(8):
        daemon._run(rot)
        clock.set(scheduler.jobs[-1].run_date)
    waits = [
        (b.run_date - a.run_date).total_seconds()
        for a, b in zip(scheduler.jobs[1:], scheduler.jobs[2:], strict=False)
    ]
    assert max(waits) == 10.0
    assert all(w <= 10.0 for w in waits)


def test_publish_failure_is_retried_on_back_off_without_refetching(clock: FakeClock) -> None:
    store = FlakyStore("flaky")
    store.fail_puts(StoreUnavailable("throttled"), times=2)
    daemon, rot, fetcher, scheduler = setup(clock, store=store)
    for _ in range(3):
        daemon._run(rot)
        clock.set(scheduler.jobs[-1].run_date)
    assert fetcher.calls == 1
    assert store.value is not None
    assert daemon.states["oms"].consecutive_failures == 0


def test_an_unexpected_exception_never_breaks_the_chain(clock: FakeClock) -> None:
    observer = RecordingObserver()
    daemon, rot, fetcher, scheduler = setup(clock, observer=observer)
    fetcher.queue(RuntimeError("a bug with access-token-MARKER in it"))
    daemon._run(rot)
    assert scheduler.run_dates == [clock.now() + 1 * S]
    state = daemon.states["oms"]
    assert state.last_error == "internal error (RuntimeError)"
    assert observer.of("rotation") == [("oms", "internal_error")]


def test_the_chain_survives_a_failing_observer(clock: FakeClock) -> None:
    class Broken(RecordingObserver):
        def retry(self, credential: str, error: BaseException) -> None:
            raise ZeroDivisionError

    daemon, rot, fetcher, scheduler = setup(clock, observer=Broken())
    fetcher.queue(TokenEndpointUnavailable("HTTP 503"))
    with pytest.raises(ZeroDivisionError):
        daemon._run(rot)
    assert scheduler.run_dates == [clock.now() + 30 * S]  # the cap, as a last resort


def test_a_failing_advice_hook_is_a_failure_not_a_break(clock: FakeClock) -> None:
    def advise(name: str, token: Token) -> str | None:
        raise RuntimeError("boom")

    daemon, rot, fetcher, scheduler = setup(clock, advise=advise)
    started = clock.now()
    daemon._run(rot)
    state = daemon.states["oms"]
    assert state.consecutive_failures == 1
    assert state.last_error == "internal error (RuntimeError)"
    (job,) = scheduler.jobs
    assert job.run_date == started + 1 * S  # the first back-off step, not the next rotation


def test_advice_is_logged_once_per_credential(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def advise(name: str, token: Token) -> str | None:
        calls.append(name)
        return "write less often"

    daemon, rot, fetcher, scheduler = setup(clock, advise=advise)
    with caplog.at_level("INFO", logger="rotator"):
        daemon._run(rot)
        clock.set(scheduler.jobs[-1].run_date)
        daemon._run(rot)
    assert calls == ["oms"]
    assert [r.getMessage() for r in caplog.records].count("write less often") == 1


def test_nothing_is_scheduled_once_stopped(clock: FakeClock) -> None:
    daemon, rot, fetcher, scheduler = setup(clock)
    daemon.stop_event.set()
    daemon._run(rot)
    assert fetcher.calls == 1  # the in-flight step completes
    assert scheduler.jobs == []


def test_logs_are_one_line_and_never_show_the_token(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    daemon, rot, fetcher, scheduler = setup(clock)
    fetcher.queue(TokenEndpointUnavailable("token endpoint answered HTTP 503"))
    with caplog.at_level("DEBUG"):
        daemon._run(rot)
        clock.set(scheduler.jobs[-1].run_date)
        daemon._run(rot)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "rotation failed credential=oms attempt=1" in text
    assert "rotated credential=oms" in text
    assert "MARKER" not in text
    assert all("\n" not in r.getMessage() for r in caplog.records)
