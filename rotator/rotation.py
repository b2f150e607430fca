"""One rotation step for one credential (when it is due: ``rotator.schedule``).

A step reads every target first: a token that another replica (or an earlier
run of this process) published and that is not yet due is adopted instead of
fetching a new one. A fetched token is kept in memory until every target has
it, so a failed publish is retried without asking the token endpoint again.
"""

from __future__ import annotations

import logging
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
from rotator.schedule import Schedule, missed_run_advice
from rotator.secret import scrub
from rotator.stores.base import Reading, TokenStore
from rotator.token import Token

# Schedule and missed_run_advice (now in rotator.schedule) keep their old import path.
__all__ = [
    "CredentialRotator",
    "Fetcher",
    "Held",
    "NullObserver",
    "Observer",
    "PublishFailed",
    "Schedule",
    "StepResult",
    "WriteGate",
    "describe_error",
    "missed_run_advice",
]

log = logging.getLogger("rotator")


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

    def adopt_seeded(self) -> StepResult | None:
        """The step ``rotate()`` would take now, when the seeded readings decide it without
        a call: every target was read in the batch, their newest token is not due, and
        every target holds it already. That token is adopted (the same effects as the
        step); None otherwise, and nothing changes (the next step reads and decides)."""
        with self._lock:
            seeded = self._seeded
            if self._pending is not None or self._revoked is not None:
                return None
            if not seeded or any(store.name not in seeded for store in self.stores):
                return None
            readings = list(seeded.values())
            best = _newest(reading.token for reading in readings)
            if best is None or self.schedule.is_due(best, self._clock.now()):
                return None
            if any(r.token is None or r.token.expires_at < best.expires_at for r in readings):
                return None  # a target is behind: the step writes to it
            self._seeded = {}
            return self._adopt(best, dict(seeded))

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
