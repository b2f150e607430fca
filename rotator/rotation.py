"""One rotation step for one credential, and the pure function that says when
the next one is due.

A step reads every target first: a token that another replica (or an earlier
run of this process) published and that is not yet due is adopted instead of
fetching a new one. A fetched token is kept in memory until every target has
it, so a failed publish is retried without asking the token endpoint again.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from rotator.clock import Clock, format_instant
from rotator.errors import PublishFailed, RotatorError, StoreError, VerificationFailed
from rotator.oauth import Grant
from rotator.probe import Probe
from rotator.secret import scrub
from rotator.stores.base import Reading, TokenStore
from rotator.token import Token

log = logging.getLogger("rotator")


# ---------------------------------------------------------------- the pure policy

# How far a token's issued_at may lie ahead of our clock (replicas' clock skew)
# before we conclude that our wall clock jumped backwards.
CLOCK_TOLERANCE = timedelta(seconds=5)


@dataclass(frozen=True)
class Schedule:
    """When to refresh: at `ratio` of the lifetime minus up to `jitter_ratio` of it,
    never later than `safety_margin` (at most a quarter of the lifetime) before expiry."""

    ratio: float = 0.75
    jitter_ratio: float = 0.05
    safety_margin: timedelta = timedelta(seconds=30)

    def margin_for(self, lifetime: timedelta) -> timedelta:
        # At most a quarter of the lifetime, so a short token is not refreshed at
        # once. (Capping at lifetime * (1 - ratio) would make the margin a no-op.)
        return min(self.safety_margin, lifetime / 4)

    def _margin(self, token: Token) -> timedelta:
        return self.margin_for(token.lifetime)

    # Cron mode. A run of `once --interval I` rotates when the token would have less
    # than 2 * I + margin left at its start, i.e. when it would reach its safety margin
    # before the run after next. So a run that does not rotate leaves at least I +
    # margin for the next run, and still the margin for the one after it should the
    # next run be missed, fail or give up: one lost run is survived, with the margin
    # left for a late start and the run's own time. That holds only if a fresh token
    # lives at least 2 * I + margin (`survives_missed_run`); below that even a run
    # that rotates every time leaves less than the margin after a missed run.

    def survives_missed_run(self, lifetime: timedelta, interval: timedelta) -> bool:
        """A cron schedule every `interval` keeps a `lifetime` token valid across one missed run."""
        return 2 * interval + self.margin_for(lifetime) <= lifetime

    def longest_interval(self, lifetime: timedelta) -> timedelta:
        """The longest cron interval (whole seconds) that survives one missed run."""
        spare = (lifetime - self.margin_for(lifetime)) / 2
        return timedelta(seconds=max(0, math.floor(spare.total_seconds())))

    def _latest(self, token: Token) -> datetime:
        planned = token.issued_at + token.lifetime * self.ratio
        return min(planned, token.expires_at - self._margin(token))

    def due_at(self, token: Token) -> datetime:
        """The earliest instant a planned refresh may happen: from then on the token is due."""
        earliest = token.issued_at + token.lifetime * (self.ratio - self.jitter_ratio)
        return min(earliest, self._latest(token))

    def is_due(self, token: Token, now: datetime, horizon: timedelta = timedelta(0)) -> bool:
        """Due now; or, with a `horizon` (a cron job's interval), due when the token would
        have less than the safety margin left at the run after next (see above)."""
        if now >= self.due_at(token) or now < token.issued_at - CLOCK_TOLERANCE:
            # A token issued "in the future" means the wall clock went back: its age
            # cannot be judged, so refresh once rather than risk missing its expiry.
            return True
        if horizon <= timedelta(0):
            return False
        return now + 2 * horizon + self._margin(token) >= token.expires_at

    def next_run_at(self, token: Token, now: datetime, rand: float) -> datetime:
        """The planned refresh of `token`, `rand` in [0, 1) drawing the jitter.

        Measured against `now` so that a clock that jumped backwards never
        pushes the run beyond one planned interval, and one that jumped
        forwards runs it once, now, rather than in a burst.
        """
        jitter = token.lifetime * (self.jitter_ratio * rand)
        planned = max(self.due_at(token), self._latest(token) - jitter)
        longest = token.lifetime * self.ratio
        if planned - now > longest:
            planned = now + longest
        return max(planned, now)

    def spread_run_at(self, token: Token, now: datetime, rand: float) -> datetime:
        """The first refresh of a token fetched at a daemon's start, `rand` in [0, 1) drawing
        it uniformly between half the planned interval and the latest planned refresh.

        A daemon that starts with nothing published (or everything due) fetches every
        credential's token at once; refreshed only within the jitter (5 % of a lifetime)
        they would stay bunched for many cycles. Spread over the second half of the
        interval once, each credential then keeps its own phase. Costs at most one early
        refresh per credential per start."""
        latest = self._latest(token)
        earliest = max(now, token.issued_at + token.lifetime * (self.ratio / 2))
        if latest <= earliest:
            return self.next_run_at(token, now, rand)
        return earliest + (latest - earliest) * rand


def missed_run_advice(schedule: Schedule, lifetime: timedelta, interval: timedelta) -> str | None:
    """None when a cron schedule every `interval` survives one missed run of a token
    living `lifetime`; else one line saying so and naming an interval that would."""
    if interval <= timedelta(0) or schedule.survives_missed_run(lifetime, interval):
        return None
    life = lifetime.total_seconds()
    margin = schedule.margin_for(lifetime).total_seconds()
    longest = schedule.longest_interval(lifetime).total_seconds()
    minutes = int(longest // 60)
    if minutes:
        plural = "s" if minutes > 1 else ""
        how = f"e.g. a schedule every {minutes} minute{plural} with --interval {minutes * 60}"
    else:
        how = "shorter than any cron schedule of whole minutes: run the daemon (rotator run)"
    # Worse than a missed run: with interval + margin >= lifetime the token lapses
    # between two runs that both happen.
    lapse = (
        "; it even lets the token lapse between runs"
        if interval.total_seconds() + margin >= life
        else ""
    )
    return (
        f"a cron schedule every {interval.total_seconds():g}s cannot survive a missed run of "
        f"a {life:g}s token (it needs 2 x interval + {margin:g}s safety margin <= lifetime)"
        f"{lapse}: use --interval {longest:g} or less, {how}"
    )


# ---------------------------------------------------------------- observation


class Observer(Protocol):
    """Receives what happens, for metrics and health; must never raise."""

    def token_request(self, credential: str, grant: str, outcome: str) -> None: ...
    def publish(self, credential: str, target: str, outcome: str) -> None: ...
    def rotation(self, credential: str, result: str) -> None: ...
    def published(self, credential: str, token: Token) -> None: ...
    def scheduled(self, credential: str, at: datetime) -> None: ...
    def retry(self, credential: str, error: BaseException) -> None: ...


class NullObserver:
    def token_request(self, credential: str, grant: str, outcome: str) -> None:
        pass

    def publish(self, credential: str, target: str, outcome: str) -> None:
        pass

    def rotation(self, credential: str, result: str) -> None:
        pass

    def published(self, credential: str, token: Token) -> None:
        pass

    def scheduled(self, credential: str, at: datetime) -> None:
        pass

    def retry(self, credential: str, error: BaseException) -> None:
        pass


# ---------------------------------------------------------------- the step


@dataclass(frozen=True)
class Held:
    """Why a target is not written now (e.g. it would run into a quota); ``exit_code`` is
    what ``once`` and ``check`` exit with for it."""

    reason: str
    exit_code: int
    until: datetime | None = None


class WriteGate(Protocol):
    """Decides whether a target may be written (rotator.stores.quota has one)."""

    def check(self, store: str, token: Token) -> Held | None: ...
    def failed(self, store: str, error: StoreError) -> Held | None: ...


class Fetcher(Protocol):
    def fetch(self, previous: Grant | None = None) -> Grant: ...


@dataclass(frozen=True)
class StepResult:
    """What a step did: 'rotated' (fetched and published), 'adopted' (a fresh
    published token was found), or 'published' (an in-memory token reached
    the targets that had missed it)."""

    action: str
    token: Token
    targets: tuple[str, ...] = field(default=())
    reason: str = ""  # "revoked": the published token was refused before its expiry


class CredentialRotator:
    """Keeps one credential's token fresh in its targets."""

    def __init__(
        self,
        name: str,
        *,
        fetcher: Fetcher,
        stores: Sequence[TokenStore],
        clock: Clock,
        schedule: Schedule | None = None,
        verify: Callable[[Token], None] | None = None,
        observer: Observer | None = None,
        rng: Callable[[], float] = random.random,
        gate: WriteGate | None = None,
        probe: Probe | None = None,
    ) -> None:
        if not stores:
            raise ValueError("a credential needs at least one target")
        self.name = name
        self.stores = tuple(stores)
        self.schedule = schedule or Schedule()
        self._fetcher = fetcher
        self._clock = clock
        self._verify = verify
        self._observer: Observer = observer or NullObserver()
        self._rng = rng
        self._gate = gate
        self.held: dict[str, Held] = {}  # targets not written now, and why
        self._seeded: dict[str, Reading] = {}  # readings taken for us (a batched read)
        self._lock = threading.Lock()
        self._grant: Grant | None = None
        self._pending: tuple[Token, frozenset[str]] | None = None
        self.token: Token | None = None  # the newest token known to be published
        self.probe = probe  # asks whether a published token is still accepted
        self._revoked: Token | None = None  # a published token found refused early
        self._spread = False  # see spread_first_refresh
        self._fetched_last = False  # the last successful step fetched its token

    def __repr__(self) -> str:
        return f"CredentialRotator({self.name!r}, targets={[s.name for s in self.stores]})"

    def next_run_at(self, now: datetime | None = None) -> datetime | None:
        if self.token is None:
            return None
        now = now or self._clock.now()
        if self._spread:
            self._spread = False
            if self._fetched_last:
                return self.schedule.spread_run_at(self.token, now, self._rng())
        return self.schedule.next_run_at(self.token, now, self._rng())

    def spread_first_refresh(self) -> None:
        """At a daemon's start: if the first successful step fetches a token (nothing fresh
        was published), its first refresh is spread wider (``Schedule.spread_run_at``), so a
        fleet that fetched together does not refresh together. An adopted token keeps its
        own schedule (it is not re-fetched early: a crash loop stays cheap)."""
        self._spread = True

    @property
    def pending_targets(self) -> frozenset[str]:
        """Targets that missed the newest fetched token (a publish to them failed)."""
        pending = self._pending
        return frozenset() if pending is None else pending[1]

    def seed(self, readings: Mapping[str, Reading]) -> None:
        """Readings of this rotator's targets taken moments ago in a batch: the next step
        uses them instead of reading those targets again."""
        # by this rotator's stores, not by all the readings: the daemon seeds every rotator
        # from one batch, and a scan of it per rotator is quadratic in the credentials
        self._seeded = {s.name: readings[s.name] for s in self.stores if s.name in readings}

    def would_hold(self, store: str, token: Token) -> Held | None:
        """Whether a write of ``token`` to ``store`` would be held back now (for `check`)."""
        return None if self._gate is None else self._gate.check(store, token)

    @property
    def is_revoked(self) -> bool:
        """The published token was found refused and is not replaced yet."""
        return self._revoked is not None

    def mark_revoked(self, token: Token) -> bool:
        """The probe found `token` refused: the next step replaces it (or adopts a newer
        token another replica published). False when a newer token is known already."""
        known = self.token
        if known is not None and known.access_token != token.access_token:
            return False
        self._revoked = token
        return True

    def lifetime(self) -> timedelta | None:
        return None if self.token is None else self.token.lifetime

    def rotate(self, *, force: bool = False, horizon: timedelta = timedelta(0)) -> StepResult:
        """One step; raises RotatorError when the token could not be published everywhere.

        `horizon` is how long until the next chance to rotate (a cron interval):
        a token that would be too close to expiry by then counts as due now.
        """
        with self._lock:
            return self._step(force=force, horizon=horizon)

    # -- internals

    def _step(self, *, force: bool, horizon: timedelta) -> StepResult:
        now = self._clock.now()
        pending = self._pending
        revoked = self._revoked
        if pending is not None:
            token, names = pending
            if not self.schedule.is_due(token, now) and not _same(token, revoked):
                stores = [s for s in self.stores if s.name in names]
                return self._publish(token, stores, {}, action="published")
            self._pending = None
        readings = self._read_all()
        best = _newest(r.token for r in readings.values() if r is not None)
        if revoked is not None:
            return self._replace_revoked(revoked, best, readings, now)
        if best is not None and not force and not self.schedule.is_due(best, now, horizon):
            return self._adopt(best, readings)
        grant = self._fetcher.fetch(self._grant)
        self._grant = grant
        token = grant.token
        if self._verify is not None:
            self._verify(token)
        return self._publish(token, list(self.stores), readings, action="rotated")

    def _adopt(
        self, best: Token, readings: dict[str, Reading | None], reason: str = ""
    ) -> StepResult:
        self.token = best
        behind = [
            s
            for s in self.stores
            if (r := readings.get(s.name)) is not None
            and (r.token is None or r.token.expires_at < best.expires_at)
        ]
        if behind:
            return self._publish(best, behind, readings, action="adopted", reason=reason)
        self._observer.published(self.name, best)
        self._observer.rotation(self.name, "adopted")
        self._fetched_last = False
        return StepResult("adopted", best, reason=reason)

    def _replacement(self, candidate: Token | None, revoked: Token, now: datetime) -> bool:
        """`candidate` (read from a target) replaces the revoked token: another replica
        published it, it is not due, and the probe does not refuse it too."""
        if candidate is None or _same(candidate, revoked) or self.schedule.is_due(candidate, now):
            return False
        return self.probe is None or not self.probe(candidate).is_revoked

    def _replace_revoked(
        self,
        revoked: Token,
        best: Token | None,
        readings: dict[str, Reading | None],
        now: datetime,
    ) -> StepResult:
        """Replace a token refused before its expiry: adopt a newer published one (a
        replica got there first), else fetch, check and publish a new one at once."""
        if self._replacement(best, revoked, now):
            assert best is not None
            self._revoked = None
            return self._adopt(best, readings, reason="revoked")
        # client_credentials: a revoked session's refresh token is dead too, and
        # trying it first would cost a second token request.
        grant = self._fetcher.fetch(None)
        self._grant = grant
        token = grant.token
        if self._verify is not None:
            self._verify(token)
        elif self.probe is not None:
            verdict = self.probe(token)
            if verdict.is_revoked:
                raise VerificationFailed(f"the replacement token is refused too: {verdict.detail}")
        # Replicas that saw the same revocation race here: read again, and take a
        # token another one published meanwhile instead of writing a second one.
        again = self._read_all()
        other = _newest(r.token for r in again.values() if r is not None)
        if (
            other is not None
            and not _same(other, token)
            and self._replacement(other, revoked, self._clock.now())
        ):
            self._revoked = None
            return self._adopt(other, again, reason="revoked")
        result = self._publish(token, list(self.stores), again, action="rotated", reason="revoked")
        self._revoked = None
        return result

    def _read_all(self) -> dict[str, Reading | None]:
        readings: dict[str, Reading | None] = {}
        seeded, self._seeded = self._seeded, {}
        for store in self.stores:
            if store.name in seeded:
                readings[store.name] = seeded[store.name]
                continue
            try:
                reading = store.get()
            except StoreError as exc:
                log.warning(
                    "read failed credential=%s target=%s error=%s", self.name, store.name, exc
                )
                readings[store.name] = None
                continue
            if reading.problem:
                log.warning(
                    "unreadable token credential=%s target=%s problem=%s",
                    self.name,
                    store.name,
                    reading.problem,
                )
            readings[store.name] = reading
        return readings

    def _publish(
        self,
        token: Token,
        stores: Sequence[TokenStore],
        readings: dict[str, Reading | None],
        *,
        action: str,
        reason: str = "",
    ) -> StepResult:
        failures: list[tuple[str, StoreError]] = []
        newest = token
        done: list[str] = []
        for store in stores:
            if self._gate is not None and self._hold(
                store.name, self._gate.check(store.name, token)
            ):
                continue
            try:
                result = store.put(token, readings.get(store.name))
            except StoreError as exc:
                if self._gate is not None and self._hold(
                    store.name, self._gate.failed(store.name, exc)
                ):
                    continue
                failures.append((store.name, exc))
                self._observer.publish(self.name, store.name, "error")
                log.error(
                    "publish failed credential=%s target=%s error=%s", self.name, store.name, exc
                )
                continue
            done.append(store.name)
            self.held.pop(store.name, None)
            outcome = "ok" if result.is_ours else "kept_newer"
            self._observer.publish(self.name, store.name, outcome)
            if result.published.expires_at > newest.expires_at:
                newest = result.published
            log.info(
                "%s credential=%s target=%s expires_at=%s",
                "published" if result.is_ours else "kept newer token",
                self.name,
                store.name,
                format_instant(result.published.expires_at),
            )
        if failures:
            self._pending = (token, frozenset(name for name, _ in failures))
            if done:
                self._remember(newest)
            raise PublishFailed(failures)
        self._pending = None
        self._remember(newest)
        self._fetched_last = action == "rotated" and newest == token
        self._observer.rotation(self.name, action)
        return StepResult(action, newest, tuple(done), reason=reason)

    def _hold(self, store: str, held: Held | None) -> bool:
        """Record that ``store`` is not written now (logged once per reason)."""
        if held is None:
            return False
        if self.held.get(store) != held:
            log.error("%s", held.reason)
        self.held[store] = held
        outcome = "refused" if held.until is None else "quota_exceeded"
        self._observer.publish(self.name, store, outcome)
        return True

    def _remember(self, token: Token) -> None:
        if self.token is None or token.expires_at >= self.token.expires_at:
            self.token = token
        self._observer.published(self.name, self.token)


def _same(token: Token, other: Token | None) -> bool:
    return other is not None and token.access_token == other.access_token


def _newest(tokens: Iterable[Token | None]) -> Token | None:
    best: Token | None = None
    for token in tokens:
        if token is not None and (best is None or token.expires_at > best.expires_at):
            best = token
    return best


def describe_error(exc: BaseException) -> str:
    """One readable line for an error, never a traceback."""
    if isinstance(exc, RotatorError):
        return scrub(str(exc))
    return f"internal error ({type(exc).__name__})"
