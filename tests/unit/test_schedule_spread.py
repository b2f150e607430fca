"""A fleet started together does not refresh together: at a daemon's start, the first
refresh of a token the daemon fetched itself is drawn over the second half of the planned
interval, not just the 5 % jitter; adopted tokens keep their own schedule."""

from __future__ import annotations

import random
from datetime import timedelta

from rotator.rotation import CredentialRotator, Schedule
from rotator.stores.memory import MemoryStore
from rotator.token import encode
from tests.fakes import T0, FakeClock, FakeFetcher, make_token

S = timedelta(seconds=1)
FLEET = 200


def fleet(clock: FakeClock, *, spread: bool) -> list[CredentialRotator]:
    rng = random.Random(9).random
    rotators = [
        CredentialRotator(
            f"c{k}",
            fetcher=FakeFetcher(clock),
            stores=[MemoryStore(f"m{k}")],
            clock=clock,
            rng=rng,
        )
        for k in range(FLEET)
    ]
    if spread:
        for rotator in rotators:
            rotator.spread_first_refresh()
    return rotators


def first_runs(clock: FakeClock, rotators: list[CredentialRotator]) -> list[float]:
    """Every credential fetches at T0 (a cold start); seconds from T0 to its next run."""
    runs = []
    for rotator in rotators:
        assert rotator.rotate().action == "rotated"
        at = rotator.next_run_at(clock.now())
        assert at is not None
        runs.append((at - T0) / S)
    return runs


def test_cold_start_fleet_is_spread_over_half_the_interval(clock: FakeClock) -> None:
    runs = first_runs(clock, fleet(clock, spread=True))
    # 300 s tokens: planned refresh at 225 s, spread from 112.5 s
    assert min(runs) >= 112.5 and max(runs) <= 225
    assert max(runs) - min(runs) > 100  # not the 15 s jitter window
    # evenly: every 25 s slice of the window holds some credentials
    slices = {int((r - 112.5) // 25) for r in runs}
    assert slices == {0, 1, 2, 3, 4}


def test_without_the_spread_a_cold_start_fleet_bunches_in_the_jitter(clock: FakeClock) -> None:
    runs = first_runs(clock, fleet(clock, spread=False))
    assert min(runs) >= 210 and max(runs) <= 225


def test_only_the_first_refresh_is_spread(clock: FakeClock) -> None:
    (rotator,) = fleet(clock, spread=True)[:1]
    first_runs(clock, [rotator])
    clock.advance(230)
    assert rotator.rotate().action == "rotated"
    at = rotator.next_run_at(clock.now())
    assert at is not None
    issued = rotator.token.issued_at if rotator.token else T0
    assert issued + 210 * S <= at <= issued + 225 * S


def test_an_adopted_token_keeps_its_schedule(clock: FakeClock) -> None:
    store = MemoryStore("m")
    published = make_token(T0 - 100 * S, 300)
    store.plant(encode(published, store.format))
    rotator = CredentialRotator(
        "c", fetcher=FakeFetcher(clock), stores=[store], clock=clock, rng=lambda: 0.0
    )
    rotator.spread_first_refresh()
    assert rotator.rotate().action == "adopted"
    assert rotator.next_run_at(clock.now()) == T0 + 125 * S  # its own 225 s, not earlier


def test_spread_run_is_never_in_the_past_nor_after_the_plan() -> None:
    schedule = Schedule()
    token = make_token(T0, 300)
    late = T0 + 200 * S
    for rand in (0.0, 0.5, 0.999):
        at = schedule.spread_run_at(token, late, rand)
        assert late <= at <= T0 + 225 * S
    overdue = T0 + 260 * S
    assert schedule.spread_run_at(token, overdue, 0.5) == overdue
