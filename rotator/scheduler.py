"""APScheduler wiring: one job chain per credential, rescheduled after every step.

Each run is a one-off date job; its last act is to schedule the next one, from
the published token's real lifetime after a success or on back-off after a
failure. A job never sleeps, so a stuck credential holds one worker for at most
its HTTP timeouts and never delays the others' schedules. Job ids are unique per
run, so a job that reschedules itself can never collide with its own instance.

Instants come from the injected clock, but APScheduler fires by the wall clock:
each run is handed over as a delay from now, and a watchdog on the monotonic
clock fires any job the wall clock has held back (a clock set backwards would
otherwise delay every run by the size of the jump).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rotator.clock import Clock, format_instant
from rotator.errors import RotatorError
from rotator.retry import Backoff
from rotator.rotation import CredentialRotator, Observer, describe_error
from rotator.token import Token

log = logging.getLogger("rotator")

# How far past its deadline a job may run before liveness calls it stuck.
STUCK_MARGIN = timedelta(seconds=60)

# The shortest gap between two runs of one credential: a schedule that keeps
# saying "now" (a token that is due as soon as it is issued) cannot spin.
MIN_GAP_SECONDS = 0.2


def _ms(at: datetime) -> str:
    """An instant for logs, to the millisecond (a planned run is not whole seconds)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class JobState:
    """What the daemon knows of one credential, for health and status."""

    next_run_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    running_since: datetime | None = None


class Daemon:
    """Runs every credential's rotation chain on a BackgroundScheduler."""

    def __init__(
        self,
        rotators: Sequence[CredentialRotator],
        *,
        clock: Clock,
        backoff: Backoff | Mapping[str, Backoff],
        observer: Observer,
        stop_event: threading.Event | None = None,
        max_workers: int = 16,
        advise: Callable[[str, Token], str | None] | None = None,
        scheduler_now: Callable[[], datetime] = lambda: datetime.now(UTC),
        job_deadlines: Mapping[str, timedelta] | None = None,
    ) -> None:
        self.rotators = list(rotators)
        self.states = {r.name: JobState() for r in self.rotators}
        self.stop_event = stop_event or threading.Event()
        self._clock = clock
        # Each credential's own back-off policy (one policy for all is accepted too).
        self._backoffs: dict[str, Backoff] = {
            r.name: backoff if isinstance(backoff, Backoff) else backoff[r.name]
            for r in self.rotators
        }
        self._job_deadlines = dict(job_deadlines or {})
        self._observer = observer
        self._seq = itertools.count()
        self._max_workers = max(1, min(max_workers, len(self.rotators)))
        self._scheduler: Any = None
        self._started = threading.Event()
        self._deadlines: dict[str, tuple[str, float]] = {}  # name -> (job id, monotonic)
        self._scheduler_now = scheduler_now  # the frame APScheduler fires in
        self._advise = advise
        self._advised: set[str] = set()

    @property
    def is_alive(self) -> bool:
        sched = self._scheduler
        return bool(sched is not None and getattr(sched, "running", False))

    def stuck(self, now: datetime | None = None) -> list[str]:
        """Credentials whose running job has overrun its deadline plus STUCK_MARGIN."""
        now = now or self._clock.now()
        names = []
        for name, state in self.states.items():
            since = state.running_since
            deadline = self._job_deadlines.get(name)
            if since is not None and deadline is not None and now - since > deadline + STUCK_MARGIN:
                names.append(name)
        return sorted(names)

    def start(self) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor

        from rotator.lazyscheduler import LazyWakeScheduler

        scheduler = LazyWakeScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=self._max_workers)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone=UTC,
        )
        self._scheduler = scheduler
        scheduler.start()
        now = self._clock.now()
        for rotator in self.rotators:
            self._schedule(rotator, now)
        self._started.set()

    def run_until_stopped(self, poll: float = 1.0) -> None:
        """Block until the stop event is set, then finish in-flight work and stop."""
        if not self._started.is_set():
            self.start()
        while not self.stop_event.wait(poll):
            self.fire_overdue()
        self.shutdown()

    def fire_overdue(self, grace: float = 1.0) -> int:
        """Run now any job whose monotonic deadline passed `grace` seconds ago."""
        from apscheduler.jobstores.base import JobLookupError

        now = time.monotonic()
        overdue = [
            (name, job_id)
            for name, (job_id, deadline) in list(self._deadlines.items())
            if now > deadline + grace
        ]
        if not overdue:
            return 0
        # Only a job still in the job store can be held back by the wall clock; one that
        # was submitted waits for a worker (a burst of them at start-up): skip it here
        # rather than pay a JobLookupError for each, every second.
        waiting = {job.id for job in self._scheduler.get_jobs()}
        fired = 0
        for name, job_id in overdue:
            if job_id not in waiting:
                continue
            try:
                self._scheduler.modify_job(job_id, next_run_time=self._scheduler_now())
            except JobLookupError:
                continue  # it is running or has run
            log.warning("wall clock held back the run of credential=%s: running it now", name)
            fired += 1
        return fired

    def shutdown(self) -> None:
        self.stop_event.set()
        scheduler = self._scheduler
        if scheduler is not None and getattr(scheduler, "running", False):
            scheduler.shutdown(wait=True)

    # -- the job

    def _schedule(self, rotator: CredentialRotator, at: datetime) -> None:
        if self.stop_event.is_set():
            return
        state = self.states[rotator.name]
        state.next_run_at = at
        self._observer.scheduled(rotator.name, at)
        delay = max((at - self._clock.now()).total_seconds(), MIN_GAP_SECONDS)
        job_id = f"{rotator.name}#{next(self._seq)}"
        self._deadlines[rotator.name] = (job_id, time.monotonic() + delay)
        self._scheduler.add_job(
            self._run,
            trigger="date",
            run_date=self._scheduler_now() + timedelta(seconds=delay),
            args=(rotator,),
            id=job_id,
            name=f"rotate {rotator.name}",
        )

    def _run(self, rotator: CredentialRotator) -> None:
        self._deadlines.pop(rotator.name, None)
        state = self.states[rotator.name]
        next_at: datetime | None = None
        started = self._clock.now()
        state.running_since = started
        try:
            result = rotator.rotate()
            now = self._clock.now()
            next_at = rotator.next_run_at(now)
            state.last_success_at = now
            state.last_error = None
            state.consecutive_failures = 0
            if self._advise is not None and rotator.name not in self._advised:
                self._advised.add(rotator.name)
                advice = self._advise(rotator.name, result.token)
                if advice:
                    log.warning("%s", advice)
            log.info(
                "%s credential=%s expires_at=%s next_run=%s duration_ms=%d",
                result.action,
                rotator.name,
                format_instant(result.token.expires_at),
                _ms(next_at) if next_at else "-",
                (now - started).total_seconds() * 1000,
            )
        except Exception as exc:  # a job must never break its chain
            state.consecutive_failures += 1
            state.last_error = describe_error(exc)
            self._observer.retry(rotator.name, exc)
            if isinstance(exc, RotatorError):
                self._observer.rotation(rotator.name, "error")
            else:
                self._observer.rotation(rotator.name, "internal_error")
            backoff = self._backoffs[rotator.name].capped(rotator.lifetime())
            wait = backoff.wait(state.consecutive_failures, exc)
            next_at = self._clock.now() + timedelta(seconds=wait)
            log.error(
                "rotation failed credential=%s attempt=%d error=%s retry_in=%.1fs",
                rotator.name,
                state.consecutive_failures,
                describe_error(exc),
                wait,
            )
        finally:
            state.running_since = None
            if next_at is None:
                next_at = self._clock.now() + timedelta(seconds=self._backoffs[rotator.name].cap)
            self._schedule(rotator, next_at)
