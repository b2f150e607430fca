"""APScheduler wiring: one job chain per credential, rescheduled after every step.

Each run is a one-off date job; its last act is to schedule the next one, from
the published token's real lifetime after a success or on back-off after a
failure. A job never sleeps, so a stuck credential holds one worker for at most
its HTTP timeouts and never delays the others' schedules. Job ids are unique per
run, so a job that reschedules itself can never collide with its own instance.

A credential with a probe has a second chain, its probe: every
``probe_interval`` it asks whether the published token is still accepted and,
when it is refused early, marks it revoked and runs the rotation chain now.

The set of credentials can change under a running daemon (``apply``, on reload):
a chain whose rotator was removed or replaced ends at its next step.

Instants come from the injected clock, but APScheduler fires by the wall clock:
each run is handed over as a delay from now, and a watchdog on the monotonic
clock fires any job the wall clock has held back (a clock set backwards would
otherwise delay every run by the size of the jump).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import inspect
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from rotator.clock import Clock, format_instant
from rotator.errors import RotatorError
from rotator.probe import ProbeResult
from rotator.retry import Backoff
from rotator.rotation import CredentialRotator, Observer, StepResult, describe_error
from rotator.token import Token

log = logging.getLogger("rotator")

# How far past its deadline a job may run before liveness calls it stuck.
STUCK_MARGIN = timedelta(seconds=60)

# The shortest gap between two runs of one credential: a schedule that keeps
# saying "now" (a token that is due as soon as it is issued) cannot spin.
MIN_GAP_SECONDS = 0.2

# The start-up jobs that take the queued first steps (see _queue_first_steps).
FIRST_STEPS = "first steps"

# Probes come up to this fraction of the interval early, at random (see _schedule_probe).
PROBE_JITTER = 0.2


def _ms(at: datetime) -> str:
    """An instant for logs, to the millisecond (a planned run is not whole seconds)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


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
        probe_intervals: Mapping[str, timedelta] | None = None,
        on_poll: Callable[[], None] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.rotators = list(rotators)
        # name -> the rotator whose chain is current: ``_is_current`` runs on every step, a
        # scan of ``rotators`` there made a start-up with 5,000 credentials quadratic
        self._current = {r.name: r for r in self.rotators}
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
        # Not capped at the credential count: probes share the pool, and a reload may add.
        self._max_workers = max(1, max_workers)
        self._scheduler: Any = None
        self._started = threading.Event()
        # name (or a start-up taker's job id) -> (job id, monotonic)
        self._deadlines: dict[str, tuple[str, float]] = {}
        # the same deadlines, earliest first (stale entries dropped as they surface): the
        # poll loop looks at the earliest only, not at every credential every second
        self._deadline_heap: list[tuple[float, str, str]] = []  # (monotonic, name, job id)
        self._probes: dict[str, tuple[str, float]] = {}  # name -> (probe job id, monotonic)
        self._running: set[str] = set()
        self._first_steps: collections.deque[CredentialRotator] = collections.deque()
        self._scheduler_now = scheduler_now  # the frame APScheduler fires in
        self._advise = advise
        self._advised: set[str] = set()
        self._probe_intervals = dict(probe_intervals or {})
        self._on_poll = on_poll
        self._rng = rng
        self._lock = threading.RLock()  # the set of rotators, against apply()

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
        self._start_chains()
        self._started.set()

    def _start_chains(self) -> None:
        """Every credential's first step (or its adoption, here) and first probe."""
        first: list[CredentialRotator] = []
        for rotator in self.rotators:
            # a fresh token in every target, read in the start-up batch: adopted here, not
            # by a job of its own (a job each cost ~0.4 ms of CPU: 2 s at 5,000 credentials)
            if not self._adopt_seeded(rotator):
                first.append(rotator)
            self._schedule_probe(rotator, first=True)
        self._queue_first_steps(first)

    def _queue_first_steps(self, rotators: Sequence[CredentialRotator]) -> None:
        """The first steps that are due now, taken from one queue by up to ``max_workers``
        jobs rather than given a job each: APScheduler spends ~0.6 ms of CPU on a job (add,
        submit, events), a fifth of a first step, and at start-up they all queue for the
        same workers anyway. A step that hangs holds one taker; the others go on. Each
        step schedules its credential's next run as a job's step does."""
        if not rotators:
            return
        now = self._clock.now()
        with self._lock:
            for rotator in rotators:
                self.states[rotator.name].next_run_at = now
                self._observer.scheduled(rotator.name, now)
            self._first_steps.extend(rotators)
            for _ in range(min(len(rotators), self._max_workers)):
                job_id = f"{FIRST_STEPS}#{next(self._seq)}"
                self._watch(job_id, job_id, 0.0)  # the watchdog's, as a run's
                self._scheduler.add_job(
                    self._take_first_steps,
                    trigger="date",
                    run_date=self._scheduler_now(),
                    args=(job_id,),
                    id=job_id,
                    name=FIRST_STEPS,
                )

    def _take_first_steps(self, job_id: str) -> None:
        """A start-up job: run queued first steps until none is left or the daemon stops."""
        self._deadlines.pop(job_id, None)
        queue = self._first_steps
        while not self.stop_event.is_set():
            try:
                rotator = queue.popleft()  # atomic: the takers share the queue unlocked
            except IndexError:
                return
            self._run(rotator)

    def run_until_stopped(self, poll: float = 1.0) -> None:
        """Block until the stop event is set, then finish in-flight work and stop."""
        if not self._started.is_set():
            self.start()
        while not self.stop_event.wait(poll):
            self.fire_overdue()
            if self._on_poll is not None:
                try:
                    self._on_poll()
                except Exception as exc:  # a reload must never end the daemon
                    log.error("reload failed: %s", describe_error(exc))
        self.shutdown()

    def fire_overdue(self, grace: float = 1.0) -> int:
        """Run now any job whose monotonic deadline passed `grace` seconds ago (each job is
        looked at once, when its deadline has passed: nothing else is walked)."""
        from apscheduler.jobstores.base import JobLookupError

        now = time.monotonic()
        overdue = []
        with self._lock:
            heap = self._deadline_heap
            while heap and now > heap[0][0] + grace:
                deadline, name, job_id = heapq.heappop(heap)
                if self._deadlines.get(name) == (job_id, deadline):  # not run nor replaced
                    overdue.append((name, job_id))
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
            what = FIRST_STEPS if name == job_id else f"the run of credential={name}"
            log.warning("wall clock held back %s: running it now", what)
            fired += 1
        return fired

    def shutdown(self) -> None:
        self.stop_event.set()
        scheduler = self._scheduler
        if scheduler is not None and getattr(scheduler, "running", False):
            scheduler.shutdown(wait=True)

    def set_poll(self, on_poll: Callable[[], None] | None) -> None:
        """A callable run on every tick of the poll loop (the configuration reload)."""
        self._on_poll = on_poll

    def run_now(self, rotator: CredentialRotator) -> bool:
        """Run `rotator`'s next step now (a revoked token); False if it is running."""
        from apscheduler.jobstores.base import JobLookupError

        entry = self._deadlines.get(rotator.name)
        if entry is None:
            return False
        try:
            self._scheduler.modify_job(entry[0], next_run_time=self._scheduler_now())
        except JobLookupError:
            return False  # running: it sees the revocation when it finishes
        return True

    # -- reload

    def apply(
        self,
        *,
        add: Sequence[CredentialRotator] = (),
        remove: Sequence[str] = (),
        backoffs: Mapping[str, Backoff] | None = None,
        job_deadlines: Mapping[str, timedelta] | None = None,
        probe_intervals: Mapping[str, timedelta] | None = None,
    ) -> None:
        """Stop the chains of `remove` (their published tokens stay) and start those of
        `add` (a changed credential is removed and added: it starts from what is
        published). A job of a removed chain that is running finishes and ends there."""
        with self._lock:
            for name in remove:
                self._stop_chain(name)
            self._backoffs.update(backoffs or {})
            self._job_deadlines.update(job_deadlines or {})
            self._probe_intervals.update(probe_intervals or {})
            now = self._clock.now()
            for rotator in add:
                # new containers, never mutated in place: health handlers iterate them
                self.rotators = [*self.rotators, rotator]
                self._current[rotator.name] = rotator
                self.states = {**self.states, rotator.name: JobState()}
                if self._started.is_set():
                    self._schedule(rotator, now)
                    self._schedule_probe(rotator, first=True)

    def _stop_chain(self, name: str) -> None:
        self.rotators = [r for r in self.rotators if r.name != name]
        self._current.pop(name, None)
        self.states = {k: v for k, v in self.states.items() if k != name}
        self._backoffs.pop(name, None)
        self._job_deadlines.pop(name, None)
        self._probe_intervals.pop(name, None)
        self._advised.discard(name)
        for entry in (self._deadlines.pop(name, None), self._probes.pop(name, None)):
            if entry is not None and self._scheduler is not None:
                self._remove_job(entry[0])

    def _remove_job(self, job_id: str) -> None:
        from apscheduler.jobstores.base import JobLookupError

        with contextlib.suppress(JobLookupError):  # running or done: _is_current ends it
            self._scheduler.remove_job(job_id)

    def _is_current(self, rotator: CredentialRotator) -> bool:
        return self._current.get(rotator.name) is rotator

    # -- the probe

    def _schedule_probe(self, rotator: CredentialRotator, *, first: bool = False) -> None:
        """The next probe: never later than the interval, and at a random phase (the
        first one anywhere within it, later ones 0-20 % early) so that replicas
        started together do not all probe, and all replace a revoked token, at once."""
        interval = self._probe_intervals.get(rotator.name)
        if rotator.probe is None or not interval or self.stop_event.is_set():
            return
        interval *= self._rng() if first else 1 - PROBE_JITTER * self._rng()
        with self._lock:
            if not self._is_current(rotator):
                return
            job_id = f"{rotator.name}#probe{next(self._seq)}"
            self._probes[rotator.name] = (job_id, time.monotonic() + interval.total_seconds())
            self._scheduler.add_job(
                self._probe,
                trigger="date",
                run_date=self._scheduler_now() + interval,
                args=(rotator,),
                id=job_id,
                name=f"probe {rotator.name}",
            )

    def _probe(self, rotator: CredentialRotator) -> None:
        try:
            self.probe_once(rotator)
        except Exception as exc:  # a probe must never break its chain
            log.error("probe failed credential=%s error=%s", rotator.name, describe_error(exc))
        finally:
            self._schedule_probe(rotator)

    def probe_once(self, rotator: CredentialRotator) -> ProbeResult | None:
        """Probe the published token once; on a revocation, replace it now.
        None when there is nothing to probe (no token yet, or one being replaced)."""
        token = rotator.token
        if rotator.probe is None or token is None or rotator.is_revoked:
            return None
        if token.is_expired(self._clock.now()) or rotator.name in self._running:
            return None  # the rotation chain is at work on it already
        result = rotator.probe(token)
        _notify(self._observer, "probe", rotator.name, result.outcome)
        if not result.is_revoked:
            if result.detail:
                log.debug("probe inconclusive credential=%s %s", rotator.name, result.detail)
            return result
        if not rotator.mark_revoked(token):
            return result  # a newer token was published meanwhile
        _notify(self._observer, "revocation", rotator.name)
        log.warning(
            "published token revoked credential=%s %s: replacing it now",
            rotator.name,
            result.detail,
        )
        self.run_now(rotator)
        return result

    # -- the job

    def _schedule(self, rotator: CredentialRotator, at: datetime) -> None:
        with self._lock:  # never beside an apply() that removes this chain
            if self.stop_event.is_set() or not self._is_current(rotator):
                return
            self._add_run(rotator, at)

    def _add_run(self, rotator: CredentialRotator, at: datetime) -> None:
        state = self.states[rotator.name]
        state.next_run_at = at
        self._observer.scheduled(rotator.name, at)
        delay = max((at - self._clock.now()).total_seconds(), MIN_GAP_SECONDS)
        job_id = f"{rotator.name}#{next(self._seq)}"
        self._watch(rotator.name, job_id, delay)
        self._scheduler.add_job(
            self._run,
            trigger="date",
            run_date=self._scheduler_now() + timedelta(seconds=delay),
            args=(rotator,),
            id=job_id,
            name=f"rotate {rotator.name}",
        )

    def _watch(self, key: str, job_id: str, delay: float) -> None:
        """Give job `job_id` (under `key`: its credential, or a start-up taker's own id) a
        monotonic deadline `delay` seconds from now, for fire_overdue."""
        deadline = time.monotonic() + delay
        self._deadlines[key] = (job_id, deadline)
        heapq.heappush(self._deadline_heap, (deadline, key, job_id))

    def _run(self, rotator: CredentialRotator) -> None:
        if not self._is_current(rotator):
            return  # removed or replaced by a reload
        self._deadlines.pop(rotator.name, None)
        state = self.states.get(rotator.name) or JobState()
        self._running.add(rotator.name)
        next_at: datetime | None = None
        started = self._clock.now()
        state.running_since = started
        try:
            next_at = self._succeeded(rotator, state, rotator.rotate(), started)
        except Exception as exc:  # a job must never break its chain
            state.consecutive_failures += 1
            state.last_error = describe_error(exc)
            self._observer.retry(rotator.name, exc)
            if isinstance(exc, RotatorError):
                self._observer.rotation(rotator.name, "error")
            else:
                self._observer.rotation(rotator.name, "internal_error")
            backoff = self._backoff_of(rotator).capped(rotator.lifetime())
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
            self._running.discard(rotator.name)
            if next_at is None:
                next_at = self._clock.now() + timedelta(seconds=self._backoff_of(rotator).cap)
            self._schedule(rotator, next_at)

    def _adopt_seeded(self, rotator: CredentialRotator) -> bool:
        """At start: the step of a credential whose seeded readings decide it (a fresh
        token everywhere: ``CredentialRotator.adopt_seeded``) taken here, with a job's
        effects (state, metrics, log line, its next run scheduled). False: not taken."""
        started = self._clock.now()
        result = rotator.adopt_seeded()
        if result is None:
            return False
        try:
            next_at = self._succeeded(rotator, self.states[rotator.name], result, started)
        except Exception as exc:  # as in a job: never break the chain (nor the start)
            log.error("step failed credential=%s error=%s", rotator.name, describe_error(exc))
            next_at = None
        if next_at is None:
            next_at = self._clock.now() + timedelta(seconds=self._backoff_of(rotator).cap)
        self._schedule(rotator, next_at)
        return True

    def _succeeded(
        self, rotator: CredentialRotator, state: JobState, result: StepResult, started: datetime
    ) -> datetime | None:
        """Record a successful step and log it; when its next run is due."""
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
        if rotator.is_revoked:
            next_at = now  # revoked while this step ran: replace it at once
        log.info(
            "%s credential=%s%s expires_at=%s next_run=%s duration_ms=%d",
            result.action,
            rotator.name,
            f" reason={result.reason}" if result.reason else "",
            format_instant(result.token.expires_at),
            _ms(next_at) if next_at else "-",
            (now - started).total_seconds() * 1000,
        )
        return next_at

    def _backoff_of(self, rotator: CredentialRotator) -> Backoff:
        return self._backoffs.get(rotator.name) or Backoff(initial=1.0, cap=30.0, jitter=1.0)


# APScheduler checks a job's callable against its arguments on every add_job, with
# inspect.signature: ~75 us for a bound method, ~20 us once the function carries its
# signature. Two jobs per credential at start-up: ~0.5 s of CPU at 5,000 credentials.
_jobs: tuple[Callable[..., None], ...] = (Daemon._run, Daemon._probe, Daemon._take_first_steps)
for _job in _jobs:
    _job.__signature__ = inspect.signature(_job)  # type: ignore[attr-defined]


def _notify(observer: object, event: str, *args: object) -> None:
    """Events only some observers record (probes, revocations): optional methods."""
    method = getattr(observer, event, None)
    if method is not None:
        method(*args)
