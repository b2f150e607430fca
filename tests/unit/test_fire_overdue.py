"""fire_overdue: a job the wall clock holds back is run now; one already handed to the
executor (waiting for a worker in a start-up burst) is left alone, without a lookup."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.fakes import FakeClock, FakeScheduler, memory_daemon


class StoreScheduler(FakeScheduler):
    """A FakeScheduler whose added jobs stay in a job store until `submit` takes them."""

    def __init__(self) -> None:
        super().__init__()
        self.submitted: set[str] = set()
        self.modified: list[tuple[str, datetime]] = []
        self.lookups = 0

    def get_jobs(self) -> list[Any]:
        return [job for job in self.jobs if job.id not in self.submitted]

    def modify_job(self, job_id: str, **changes: Any) -> None:
        from apscheduler.jobstores.base import JobLookupError

        self.lookups += 1
        if job_id in self.submitted:
            raise JobLookupError(job_id)
        self.modified.append((job_id, changes["next_run_time"]))


def test_only_jobs_still_in_the_store_are_fired(clock: FakeClock) -> None:
    daemon, rotators = memory_daemon(clock, 3)
    scheduler = StoreScheduler()
    daemon._scheduler = scheduler
    for rot in rotators:
        daemon._schedule(rot, clock.now())  # due in MIN_GAP_SECONDS (monotonic)
    held, queued, also_held = (job.id for job in scheduler.jobs)
    scheduler.submitted = {queued}  # handed to the executor, waiting for a worker
    # grace -1 s: every monotonic deadline counts as passed, without waiting for it
    assert daemon.fire_overdue(grace=-1.0) == 2
    assert [job_id for job_id, _ in scheduler.modified] == [held, also_held]
    assert scheduler.lookups == 2  # the queued job cost no lookup
    assert daemon.fire_overdue(grace=3600.0) == 0
