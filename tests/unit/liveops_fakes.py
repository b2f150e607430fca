"""Fakes for the probe and reload tests: a scheduler that also modifies and removes jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apscheduler.jobstores.base import JobLookupError

from tests.fakes import FakeScheduler, ScheduledJob


class JobScheduler(FakeScheduler):
    """FakeScheduler plus ``modify_job`` and ``remove_job`` (what run_now and reload use)."""

    def __init__(self) -> None:
        super().__init__()
        self.removed: list[str] = []

    def pending(self, prefix: str = "") -> list[ScheduledJob]:
        """Jobs added and not yet taken (by ``take``) or removed."""
        return [j for j in self.jobs if j.id.startswith(prefix) and j.id not in self.removed]

    def take(self, job: ScheduledJob) -> Any:
        """Run a job as the scheduler would: it leaves the store, then runs."""
        self.removed.append(job.id)
        return job.func(*job.args)

    def modify_job(self, job_id: str, *, next_run_time: datetime) -> None:
        for index, job in enumerate(self.jobs):
            if job.id == job_id and job_id not in self.removed:
                self.jobs[index] = ScheduledJob(job.func, next_run_time, job.args, job.id)
                return
        raise JobLookupError(job_id)

    def remove_job(self, job_id: str) -> None:
        if job_id in self.removed or all(j.id != job_id for j in self.jobs):
            raise JobLookupError(job_id)
        self.removed.append(job_id)
