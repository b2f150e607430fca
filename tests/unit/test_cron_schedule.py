"""Cron mode survives one missed run (issue 15, point 2).

The rule: a run of ``once --interval I`` rotates when the published token would
have less than ``2 * I + margin`` left at its start. A schedule survives a missed
run only when a fresh token lives at least ``2 * I + margin``. Checked on the pure
Schedule and by simulating cron runs against in-memory stores on the injected clock.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from rotator.rotation import CredentialRotator, Schedule, missed_run_advice
from rotator.stores.memory import MemoryStore
from tests.fakes import T0, FakeClock, FakeFetcher, make_token

S = timedelta(seconds=1)


def test_a_run_rotates_once_less_than_two_intervals_and_the_margin_remain() -> None:
    schedule = Schedule()  # margin 30 s
    token = make_token(T0, 600)
    interval = 120 * S
    # 2 * 120 + 30 = 270 s: due from 330 s of age on (600 - 270).
    assert not schedule.is_due(token, T0 + 329 * S, interval)
    assert schedule.is_due(token, T0 + 330 * S, interval)
    # without an interval only the ordinary refresh point (70 % of 600 s) counts
    assert not schedule.is_due(token, T0 + 330 * S)
    assert schedule.is_due(token, T0 + 420 * S)


@pytest.mark.parametrize(
    ("lifetime", "interval", "survives"),
    [
        (300, 120, True),  # 2 * 120 + 30 = 270 <= 300
        (270, 120, True),  # exactly enough
        (269, 120, False),
        (180, 120, False),  # the old template minimum with the shipped schedule
        (180, 75, True),
        (60, 20, True),  # margin is a quarter of the lifetime: 15 s
        (60, 30, False),
        (3600, 300, True),
    ],
)
def test_survives_missed_run(lifetime: float, interval: float, survives: bool) -> None:
    assert Schedule().survives_missed_run(lifetime * S, interval * S) is survives


@pytest.mark.parametrize(
    ("lifetime", "longest"), [(300, 135), (270, 120), (180, 75), (60, 22), (3600, 1785)]
)
def test_longest_interval(lifetime: float, longest: float) -> None:
    schedule = Schedule()
    assert schedule.longest_interval(lifetime * S) == longest * S
    assert schedule.survives_missed_run(lifetime * S, longest * S)
    assert not schedule.survives_missed_run(lifetime * S, (longest + 1) * S)


def test_advice_names_an_interval_that_works() -> None:
    schedule = Schedule()
    assert missed_run_advice(schedule, 300 * S, 120 * S) is None
    assert missed_run_advice(schedule, 180 * S, 0 * S) is None  # no interval: nothing to judge
    advice = missed_run_advice(schedule, 180 * S, 120 * S)
    assert advice is not None
    assert "every 120s" in advice and "180s token" in advice
    assert "--interval 75 or less" in advice
    assert "every 1 minute with --interval 60" in advice
    short = missed_run_advice(schedule, 60 * S, 60 * S)
    assert short is not None
    assert "--interval 22 or less" in short and "rotator run" in short


# ---------------------------------------------------------------- simulated cron runs


def _simulate(
    lifetime: float, interval: float, *, missed: int, late: float, runs: int = 12
) -> list[float]:
    """Cron runs every `interval`, run number `missed` lost and the next one `late`.

    Returns the seconds the published token had left at the start of each run
    that took place (before that run did anything)."""
    clock = FakeClock()
    store = MemoryStore("memory")
    fetcher = FakeFetcher(clock, lifetime=lifetime)
    rotator = CredentialRotator("c", fetcher=fetcher, stores=[store], clock=clock, rng=lambda: 0.0)
    horizon = interval * S
    left: list[float] = []
    for run in range(runs):
        clock.set(T0 + (run * interval + (late if run == missed + 1 else 0.0)) * S)
        if run == missed:
            continue
        published = store.get().token
        if published is not None:
            left.append((published.expires_at - clock.now()).total_seconds())
        rotator.rotate(horizon=horizon)
    return left


@pytest.mark.parametrize(("lifetime", "interval"), [(300, 120), (270, 120), (600, 120), (180, 75)])
@pytest.mark.parametrize("missed", range(1, 9))
def test_a_schedule_that_survives_keeps_the_margin_across_any_missed_run(
    lifetime: float, interval: float, missed: int
) -> None:
    assert Schedule().survives_missed_run(lifetime * S, interval * S)
    margin = Schedule().margin_for(lifetime * S).total_seconds()
    for late in (0.0, margin - 1):
        left = _simulate(lifetime, interval, missed=missed, late=late)
        # every run after the first found a valid token: at least the margin left by
        # the nominal schedule, less the late start of the run after the missed one
        assert left and min(left) >= margin - late > 0, (late, left)


def test_a_schedule_too_long_for_the_token_lets_it_lapse_after_a_missed_run() -> None:
    # 180 s token, every 120 s (the old template minimum): the rule is not enough.
    assert not Schedule().survives_missed_run(180 * S, 120 * S)
    left = _simulate(180, 120, missed=2, late=0.0)
    assert min(left) <= 0


def test_steady_state_rotations_of_the_shipped_schedule() -> None:
    # 300 s tokens every 120 s: every run rotates (a fresh token has 180 s < 270 s left
    # at the next run); 600 s tokens every third run, 900 s tokens every sixth.
    for lifetime, every in ((300, 1), (600, 3), (900, 6)):
        clock = FakeClock()
        fetcher = FakeFetcher(clock, lifetime=lifetime)
        rotator = CredentialRotator(
            "c", fetcher=fetcher, stores=[MemoryStore()], clock=clock, rng=lambda: 0.0
        )
        for run in range(12):
            clock.set(T0 + run * 120 * S)
            rotator.rotate(horizon=120 * S)
        assert fetcher.calls == 12 // every, lifetime
