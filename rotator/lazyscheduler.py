"""APScheduler's BackgroundScheduler, waking its thread only when a new job needs it.

APScheduler wakes its thread on every ``add_job`` so that it can recompute its sleep.
The daemon adds a job after every rotation, nearly always due far later than the job
the thread already sleeps for, so each add cost a thread hand-off for nothing (about a
tenth of the daemon's CPU at 1,000 credentials). Here an added job wakes the thread
only if it is due before the thread's planned wake-up.

Why no job can be late: ``_wake_at`` is set under the job stores' lock in the same
critical section in which the thread computed its sleep, and ``add_job`` adds the job
under that lock too. A job added before that section is seen by it; a job added after
it is compared with that section's own ``_wake_at``, and is skipped only if it is due
no earlier than the instant the thread will wake by anyway. ``None`` (the thread waits
for a wake-up: no jobs, or paused) always wakes it; so does every other wake-up
(``modify_job``, ``resume``...).

The thread also wakes on a grid of ``SLACK_SECONDS`` slots: its sleep is stretched to
the end of the slot in which the next job is due, so the jobs due in one slot are
submitted in one pass and one wake-up, not one each (at 1,000 credentials the refreshes
come ~33 a second). A job runs at most ``SLACK_SECONDS`` after its due time; a job added
that is due in the slot the thread already sleeps for does not wake it. ``modify_job``
(the daemon's revocations and watchdog) still wakes it at once.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED

__all__ = ["SLACK_SECONDS", "LazyWakeScheduler", "slot_end"]

# The wake-up grid: how late a job may run so that its neighbours share its wake-up.
SLACK_SECONDS = 0.1


def slot_end(wait: float, now: float, slack: float = SLACK_SECONDS) -> float:
    """`wait` (seconds from `now`, a monotonic instant) stretched to the end of its slot
    on a grid of `slack` seconds: never shorter, at most `slack` longer."""
    return wait + slack - (now + wait) % slack


_SLACK = timedelta(seconds=SLACK_SECONDS)


class LazyWakeScheduler(BackgroundScheduler):  # type: ignore[misc]
    """A BackgroundScheduler whose ``add_job`` wakes its thread only for an earlier job."""

    _wake_at: datetime | None = None  # when the thread wakes unbidden; None: never
    _adding: Any = None  # the job being added, while ``_real_add_job`` runs

    def _process_jobs(self) -> float | None:
        with self._jobstores_lock:  # a re-entrant lock: the same one the parent takes
            try:
                wait: float | None = super()._process_jobs()
                if wait is not None:
                    wait = slot_end(wait, time.monotonic())
            except JobLookupError:
                # APScheduler's own race: shutdown() marks the scheduler stopped while this
                # pass is removing a date job that has run, and remove_job then looks among
                # the pending jobs only. Stopping anyway: end the pass quietly.
                if self.state != STATE_STOPPED:
                    raise
                return None
            self._wake_at = (
                None if wait is None else datetime.now(self.timezone) + timedelta(seconds=wait)
            )
        return wait

    def _real_add_job(self, job: Any, jobstore_alias: str, replace_existing: bool) -> None:
        # add_job and start() call this holding the job stores' lock
        self._adding = job
        try:
            super()._real_add_job(job, jobstore_alias, replace_existing)
        finally:
            self._adding = None

    def wakeup(self) -> None:
        job, wake_at = self._adding, self._wake_at
        if job is not None and wake_at is not None:
            run_at = getattr(job, "next_run_time", None)
            if run_at is not None and run_at >= wake_at - _SLACK:
                return  # due in the slot the thread wakes at the end of: it sees it then
        super().wakeup()
