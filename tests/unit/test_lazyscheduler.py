"""LazyWakeScheduler: an added job wakes the scheduler's thread only if it is due before
the thread's planned wake-up, and every job still runs.

A real scheduler thread, real time: waits are hang budgets (30 s), never speed asserts.
The "far" job is an hour away, so a job whose wake-up was wrongly skipped would wait an
hour and fail its budget.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from rotator.lazyscheduler import LazyWakeScheduler

BUDGET = 30.0


class CountingEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


@pytest.fixture
def scheduler() -> Iterator[LazyWakeScheduler]:
    sched = LazyWakeScheduler(timezone=UTC)
    sched._event = CountingEvent()  # kept by start() as it is not set: counts wake-ups
    sched.start()
    yield sched
    sched.shutdown(wait=False)


def at(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def add(sched: LazyWakeScheduler, when: datetime, done: threading.Event) -> None:
    sched.add_job(done.set, trigger="date", run_date=when)


def settle(sched: LazyWakeScheduler) -> None:
    """Wait until the thread has planned its sleep (its wake-up is known)."""
    for _ in range(3000):
        if sched._wake_at is not None and not sched._event.is_set():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the scheduler thread never planned its sleep")


def test_later_jobs_do_not_wake_the_thread(scheduler: LazyWakeScheduler) -> None:
    add(scheduler, at(3600), threading.Event())
    settle(scheduler)
    event = scheduler._event
    assert isinstance(event, CountingEvent)
    before = event.sets
    for i in range(50):
        add(scheduler, at(3600 + i), threading.Event())
    assert event.sets == before
    assert len(scheduler.get_jobs()) == 51


def test_an_earlier_job_wakes_the_thread_and_runs(scheduler: LazyWakeScheduler) -> None:
    add(scheduler, at(3600), threading.Event())
    settle(scheduler)
    event = scheduler._event
    assert isinstance(event, CountingEvent)
    before = event.sets
    done = threading.Event()
    add(scheduler, at(0.05), done)
    assert event.sets == before + 1
    assert done.wait(BUDGET)  # without the wake-up it would wait for the hour-long job


def test_a_job_after_an_earlier_one_runs_when_the_thread_wakes(
    scheduler: LazyWakeScheduler,
) -> None:
    add(scheduler, at(3600), threading.Event())
    first, second = threading.Event(), threading.Event()
    add(scheduler, at(0.2), first)
    settle(scheduler)  # the thread now sleeps until `first`
    add(scheduler, at(0.3), second)  # no wake-up needed: after `first`
    assert first.wait(BUDGET)
    assert second.wait(BUDGET)


def test_modify_job_still_wakes_the_thread(scheduler: LazyWakeScheduler) -> None:
    done = threading.Event()
    job = scheduler.add_job(done.set, trigger="date", run_date=at(3600))
    settle(scheduler)
    scheduler.modify_job(job.id, next_run_time=datetime.now(UTC))
    assert done.wait(BUDGET)


def test_jobs_added_from_many_threads_while_it_plans_all_run(
    scheduler: LazyWakeScheduler,
) -> None:
    """Adds racing the thread's planning: a wrongly skipped wake-up leaves a job waiting
    for the hour-long one."""
    add(scheduler, at(3600), threading.Event())
    rng = random.Random(14)
    delays = [[rng.uniform(0.0, 0.5) for _ in range(40)] for _ in range(8)]
    events = [[threading.Event() for _ in row] for row in delays]

    def adder(row: list[float], done: list[threading.Event]) -> None:
        for delay, event in zip(row, done, strict=True):
            add(scheduler, at(delay), event)
            threading.Event().wait(delay / 20)

    threads = [
        threading.Thread(target=adder, args=(row, done))
        for row, done in zip(delays, events, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BUDGET)
    end = time.monotonic() + BUDGET  # one budget for all: a hang detector
    missed = [e for row in events for e in row if not e.wait(max(0.0, end - time.monotonic()))]
    assert missed == []


def test_a_shutdown_during_a_pass_ends_it_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    """shutdown() marks the scheduler stopped while its thread removes a date job that ran;
    APScheduler then raises JobLookupError in that thread (a traceback at SIGTERM)."""
    from apscheduler.jobstores.base import JobLookupError
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.base import STATE_RUNNING, STATE_STOPPED

    def lost(self: object) -> float | None:
        raise JobLookupError("gone")

    monkeypatch.setattr(BackgroundScheduler, "_process_jobs", lost)
    sched = LazyWakeScheduler(timezone=UTC)
    sched.state = STATE_STOPPED
    assert sched._process_jobs() is None
    sched.state = STATE_RUNNING  # while running it is a real error, not hidden
    with pytest.raises(JobLookupError):
        sched._process_jobs()


# -- the wake-up grid


@pytest.mark.parametrize("now", [0.0, 12.345, 1e6 + 0.0999, 7.05])
@pytest.mark.parametrize("wait", [0.0, 0.001, 0.05, 0.0999, 0.1, 3.0, 3600.0])
def test_a_sleep_ends_at_its_slots_end_never_sooner_nor_a_slot_later(
    now: float, wait: float
) -> None:
    from rotator.lazyscheduler import SLACK_SECONDS, slot_end

    stretched = slot_end(wait, now)
    assert wait <= stretched <= wait + SLACK_SECONDS + 1e-9
    end = now + stretched
    assert abs(end / SLACK_SECONDS - round(end / SLACK_SECONDS)) < 1e-6  # on the grid


def test_jobs_due_in_one_slot_share_its_end() -> None:
    from rotator.lazyscheduler import slot_end

    now = 500.0
    ends = {round(now + slot_end(due - now, now), 6) for due in (500.21, 500.25, 500.29)}
    assert ends == {500.3}
    assert round(now + slot_end(0.31, now), 6) == 500.4  # the next slot's


class Added:
    def __init__(self, run_at: datetime) -> None:
        self.next_run_time = run_at


def wakes(sched: LazyWakeScheduler, wake_at: datetime | None, run_at: datetime) -> bool:
    """Whether adding a job due at `run_at` wakes a thread that sleeps until `wake_at`."""
    event = CountingEvent()
    sched._event = event
    sched._wake_at, sched._adding = wake_at, Added(run_at)
    try:
        sched.wakeup()
    finally:
        sched._adding = None
    return event.sets == 1


def test_an_added_job_wakes_the_thread_only_if_due_before_the_slot_it_sleeps_for() -> None:
    from rotator.lazyscheduler import SLACK_SECONDS

    sched = LazyWakeScheduler(timezone=UTC)
    wake_at = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    slack = timedelta(seconds=SLACK_SECONDS)
    tick = timedelta(milliseconds=1)
    assert not wakes(sched, wake_at, wake_at + timedelta(hours=1))  # later: seen then
    assert not wakes(sched, wake_at, wake_at)
    assert not wakes(sched, wake_at, wake_at - slack)  # in the slot: at most a slot late
    assert wakes(sched, wake_at, wake_at - slack - tick)  # before it: would be too late
    assert wakes(sched, None, wake_at)  # a thread waiting for a wake-up always wakes
    sched._event = CountingEvent()
    sched._wake_at, sched._adding = wake_at, None
    sched.wakeup()  # not an add (modify_job, resume...): always
    assert isinstance(sched._event, CountingEvent) and sched._event.sets == 1


def test_the_thread_sleeps_to_a_slots_end(scheduler: LazyWakeScheduler) -> None:
    from rotator.lazyscheduler import SLACK_SECONDS

    add(scheduler, at(3600.0123), threading.Event())
    settle(scheduler)
    before = time.monotonic()
    wait = scheduler._process_jobs()  # a pass, as the thread makes one
    after = time.monotonic()
    assert wait is not None and 3600.0123 - 1 < wait <= 3600.0123 + SLACK_SECONDS
    off = (before + wait) % SLACK_SECONDS  # the grid point lies within [before, after]
    assert min(off, SLACK_SECONDS - off) <= (after - before) + 1e-6
