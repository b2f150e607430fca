"""rotator.stores.quota: the projection, the refusal and the hold, with a FakeClock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rotator.errors import StoreQuotaExceeded, StoreUnavailable
from rotator.rotation import Schedule
from rotator.stores.quota import (
    VersionQuotaGate,
    lifespan_needed,
    projected_writes_per_day,
)
from rotator.token import Token
from tests.fakes import FakeClock

SM = "secretsmanager:oms/token"


def token(clock: FakeClock, lifetime: float) -> Token:
    now = clock.now()
    return Token("at-quota", "Bearer", now, now + timedelta(seconds=lifetime))


def test_projection_uses_the_earliest_refresh() -> None:
    clock = FakeClock()
    schedule = Schedule()
    assert projected_writes_per_day(token(clock, 300), schedule) == pytest.approx(411.4, 0.01)
    assert lifespan_needed(schedule, 90) == 1372
    assert projected_writes_per_day(token(clock, 1372), schedule) <= 90
    assert projected_writes_per_day(token(clock, 1371), schedule) > 90


def test_gate_refuses_over_the_limit_and_holds_after_a_quota_error() -> None:
    clock = FakeClock()
    gate = VersionQuotaGate("c", {SM: 90}, schedule=Schedule(), clock=clock)
    refused = gate.check(SM, token(clock, 300))
    assert refused is not None and refused.exit_code == 2
    assert "411 versions/day" in refused.reason and "1372 s" in refused.reason
    assert gate.check("ssm:/x", token(clock, 300)) is None  # other targets never held
    long = token(clock, 3600)
    assert gate.check(SM, long) is None
    assert gate.failed(SM, StoreUnavailable("x")) is None  # only quota errors hold
    held = gate.failed(SM, StoreQuotaExceeded("LimitExceededException"))
    assert held is not None and held.exit_code == 1
    clock.advance(3599)
    assert gate.check(SM, long) is held
    clock.advance(1)
    assert gate.check(SM, long) is None  # the hold is over: one write is tried again
