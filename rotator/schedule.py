"""When a credential's next rotation is due: the pure policy, no I/O and no clock.

``Schedule`` plans a token's refresh (ratio of its lifetime, jitter, safety margin, the
spread first refresh after a daemon's start, cron mode's horizon); ``missed_run_advice``
says whether a cron interval survives one missed run. ``rotator.rotation`` runs the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from rotator.token import Token

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
