"""rotator.pacing: the spacing of one pacer, with a hand clock (no sleeping)."""

from __future__ import annotations

import threading

import pytest

from rotator.errors import ConfigError
from rotator.pacing import DEFAULT_RATES, Pacer, Pacers, Pacing


class HandClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)


def test_calls_are_spaced_one_interval_apart() -> None:
    clock = HandClock()
    pacer = Pacer(4.0, clock=clock, sleep=clock.sleep)
    waits = [pacer.wait() for _ in range(4)]
    assert waits == [0.0, 0.25, 0.5, 0.75]
    clock.now += 10.0  # idle time is not saved up: no burst afterwards
    assert [pacer.wait(), pacer.wait()] == [0.0, 0.25]


def test_concurrent_callers_get_distinct_slots() -> None:
    clock = HandClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    threads = [threading.Thread(target=pacer.wait) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(round(s, 6) for s in clock.slept) == [round(n / 10, 6) for n in range(1, 20)]


def test_rates_from_env() -> None:
    assert Pacing.from_env({}).rates == DEFAULT_RATES
    pacing = Pacing.from_env(
        {"ROTATOR_SSM_WRITES_PER_SECOND": "2.5", "ROTATOR_SSM_READS_PER_SECOND": "0"}
    )
    assert pacing.rates["ssm:write"] == 2.5
    assert pacing.rates["ssm:read"] is None
    assert Pacers(pacing).pacer("ssm:read", "us-east-1") is None
    for bad in ("-1", "fast", "²", "1e3"):
        with pytest.raises(ConfigError, match="ROTATOR_SSM_WRITES_PER_SECOND"):
            Pacing.from_env({"ROTATOR_SSM_WRITES_PER_SECOND": bad})


def test_one_pacer_per_group_and_region() -> None:
    pacers = Pacers()
    east = pacers.pacer("ssm:write", "us-east-1")
    assert east is pacers.pacer("ssm:write", "us-east-1")
    assert east is not pacers.pacer("ssm:write", "eu-west-1")
    assert east is not pacers.pacer("ssm:read", "us-east-1")


def test_capacity_line_says_when_a_region_cannot_be_sustained() -> None:
    from rotator.config import Client, Credential, Target
    from rotator.pacing import capacity_lines

    def cred(k: int, target: Target) -> Credential:
        return Credential(f"c{k}", (target,), Client("http://127.0.0.1/t", "id", None))

    ssm = [cred(k, Target("ssm", f"/p{k}")) for k in range(1000)]
    west = [cred(1000 + k, Target("ssm", f"/w{k}", region="eu-west-1")) for k in range(3)]
    lifetimes = {c.name: 300.0 for c in ssm + west}
    lines = capacity_lines(ssm + west, lifetimes, Pacing.from_env({}), "us-east-1")
    assert lines == [
        "ssm eu-west-1: 3 target(s) with a known lifetime, 0.01 writes/s projected "
        "against a pace of 2/s: ok",
        "ssm us-east-1: 1000 target(s) with a known lifetime, 4.44 writes/s projected "
        "against a pace of 2/s: CANNOT be sustained (writes queue up and tokens are "
        "published late); use longer-lived tokens, fewer credentials per region, or a "
        "higher pace if AWS allows it",
    ]


def test_a_burst_goes_back_to_back_then_the_pace_holds() -> None:
    clock = HandClock()
    pacer = Pacer(4.0, burst=2, clock=clock, sleep=clock.sleep)
    assert [pacer.wait() for _ in range(5)] == [0.0, 0.0, 0.25, 0.5, 0.75]
    clock.now += 10.0  # idle time saves up one burst, no more
    assert [pacer.wait() for _ in range(3)] == [0.0, 0.0, 0.25]
    clock.now += 0.25  # the third call's slot: the pace has not caught up yet
    assert pacer.wait() == 0.25
    clock.now += 0.75  # two intervals after that slot (110.5): the burst is whole again
    assert [pacer.wait() for _ in range(3)] == [0.0, 0.0, 0.25]


def test_over_any_window_no_more_than_the_burst_plus_the_pace() -> None:
    clock = HandClock()
    pacer = Pacer(10.0, burst=2, clock=clock, sleep=clock.sleep)
    starts = []
    for step in [0.0, 0.01, 0.0, 0.3, 0.0, 0.0, 0.0, 0.05, 0.0, 1.0, 0.0, 0.0, 0.0]:
        clock.now += step
        starts.append(clock.now + pacer.wait())
    for a in starts:  # every window of 1 s: at most 2 + 10 * 1 calls, and never 3 at once
        assert sum(1 for b in starts if a <= b < a + 1.0) <= 12
        assert sum(1 for b in starts if a <= b < a + 1e-9) <= 2


def test_secrets_manager_writes_burst_two_the_others_none() -> None:
    from rotator.pacing import BURSTS

    pacers = Pacers()
    sm = pacers.pacer("secretsmanager:write", "us-east-1")
    ssm = pacers.pacer("ssm:write", "us-east-1")
    assert sm is not None and ssm is not None
    assert (sm.burst, ssm.burst) == (2, 1) == (BURSTS["secretsmanager:write"], 1)
    with pytest.raises(ValueError):
        Pacer(1.0, burst=0)
