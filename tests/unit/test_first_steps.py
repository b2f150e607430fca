"""The start-up queue: first steps due at start are taken from one queue by up to
``max_workers`` jobs instead of a job each; each step then goes on as a job's would."""

from __future__ import annotations

import logging
import threading

import pytest

from rotator.scheduler import FIRST_STEPS, Daemon
from tests.fakes import FakeClock, FakeFetcher, FakeScheduler, memory_daemon
from tests.unit.test_fire_overdue import StoreScheduler


def started(clock: FakeClock, count: int, *, workers: int = 16) -> tuple[Daemon, FakeScheduler]:
    daemon, _ = memory_daemon(clock, count)
    daemon._max_workers = workers
    scheduler = FakeScheduler()
    daemon._scheduler = scheduler
    daemon._start_chains()  # nothing seeded: every credential's first step is queued
    return daemon, scheduler


def fetcher(daemon: Daemon, name: str) -> FakeFetcher:
    found = daemon._current[name]._fetcher
    assert isinstance(found, FakeFetcher)
    return found


def test_one_taker_runs_every_queued_step_and_each_chain_goes_on(clock: FakeClock) -> None:
    daemon, scheduler = started(clock, 5)
    takers = list(scheduler.jobs)
    assert len(takers) == 5 and all(job.func == daemon._take_first_steps for job in takers)
    assert all(job.id in daemon._deadlines for job in takers)  # watched, as a run is

    first = takers[0]
    first.func(*first.args)
    assert [fetcher(daemon, f"c{k}").calls for k in range(5)] == [1] * 5
    assert not daemon._first_steps
    assert first.id not in daemon._deadlines
    chains = scheduler.jobs[5:]
    assert [job.args[0].name for job in chains] == [f"c{k}" for k in range(5)]
    assert all(job.func == daemon._run for job in chains)
    for job in chains:  # each credential's next run is its refresh, as after any step
        assert daemon.states[job.args[0].name].next_run_at == job.run_date > clock.now()

    for job in takers[1:]:  # the others find the queue empty
        job.func(*job.args)
    assert [fetcher(daemon, f"c{k}").calls for k in range(5)] == [1] * 5
    assert len(scheduler.jobs) == 10


def test_takers_are_no_more_than_the_workers(clock: FakeClock) -> None:
    daemon, scheduler = started(clock, 40, workers=3)
    assert len(scheduler.jobs) == 3
    assert len(daemon._first_steps) == 40
    assert all(daemon.states[f"c{k}"].next_run_at == clock.now() for k in range(40))


def test_a_hanging_step_holds_one_taker_and_the_others_go_on(clock: FakeClock) -> None:
    daemon, scheduler = started(clock, 4, workers=2)
    entered, release = threading.Event(), threading.Event()

    def hang() -> None:
        entered.set()
        assert release.wait(10)

    fetcher(daemon, "c0").on_fetch = hang
    one, two = scheduler.jobs
    stuck = threading.Thread(target=one.func, args=one.args)
    stuck.start()
    try:
        assert entered.wait(10)
        two.func(*two.args)  # c0 hangs in the other taker: this one takes the rest
        assert [fetcher(daemon, f"c{k}").calls for k in range(1, 4)] == [1, 1, 1]
        assert daemon.states["c0"].running_since is not None
    finally:
        release.set()
        stuck.join(10)
    assert not stuck.is_alive()
    assert fetcher(daemon, "c0").calls == 1
    assert daemon.states["c0"].last_success_at is not None


def test_a_stopping_daemon_takes_no_more_steps(clock: FakeClock) -> None:
    daemon, scheduler = started(clock, 3)
    daemon.stop_event.set()
    for job in list(scheduler.jobs):
        job.func(*job.args)
    assert [fetcher(daemon, f"c{k}").calls for k in range(3)] == [0, 0, 0]
    assert len(scheduler.jobs) == 3  # no chain went on


def test_a_credential_removed_while_queued_never_runs(clock: FakeClock) -> None:
    daemon, scheduler = started(clock, 3)
    removed = fetcher(daemon, "c1")
    daemon.apply(remove=["c1"])  # a reload, before the takers ran
    job = scheduler.jobs[0]
    job.func(*job.args)
    assert removed.calls == 0
    assert fetcher(daemon, "c0").calls == fetcher(daemon, "c2").calls == 1
    assert sorted(j.args[0].name for j in scheduler.jobs[3:]) == ["c0", "c2"]


def test_nothing_queued_no_taker(clock: FakeClock) -> None:
    daemon, scheduler = started(clock, 0)
    assert scheduler.jobs == [] and not daemon._first_steps


def test_a_taker_the_wall_clock_holds_back_is_fired(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    daemon, _ = memory_daemon(clock, 3)
    scheduler = StoreScheduler()
    daemon._scheduler = scheduler
    daemon._start_chains()
    held, handed, also_held = (job.id for job in scheduler.jobs)
    scheduler.submitted = {handed}  # already with the executor: not fired
    with caplog.at_level(logging.WARNING, logger="rotator"):
        assert daemon.fire_overdue(grace=-1.0) == 2
    assert [job_id for job_id, _ in scheduler.modified] == [held, also_held]
    assert [r.getMessage() for r in caplog.records] == [
        f"wall clock held back {FIRST_STEPS}: running it now"
    ] * 2
    assert daemon.fire_overdue(grace=-1.0) == 0  # each looked at once
