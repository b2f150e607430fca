"""Costs that must not grow with the number of credentials (found by the 5,000-credential
benchmark, ``tests/bench/bench_scale.py``: quadratic start-ups, idle CPU): a step, the
seeding of start-up readings and the write-rate advice look one credential up, never scan
them all; the poll loop looks at the earliest deadline only; batch reads keep several
calls in flight."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from rotator.app import build
from rotator.config import from_mapping
from rotator.retry import Backoff
from rotator.rotation import CredentialRotator, NullObserver
from rotator.scheduler import Daemon
from rotator.stores import batch
from rotator.stores.base import Reading
from rotator.stores.memory import MemoryStore
from tests.fakes import (
    FakeClock,
    FakeFetcher,
    FakeScheduler,
    FakeSession,
    make_token,
    memory_daemon,
)


class CountingList(list[Any]):
    """A list that counts how often it is walked."""

    walks = 0

    def __iter__(self) -> Iterator[Any]:
        type(self).walks += 1
        return super().__iter__()


class CountingTuple(tuple[Any, ...]):
    walks = 0

    def __iter__(self) -> Iterator[Any]:
        type(self).walks += 1
        return super().__iter__()


class Readings(Mapping[str, Reading]):
    """Readings that count every key looked at and every walk over them."""

    def __init__(self, data: dict[str, Reading]) -> None:
        self._data = data
        self.looked_up = 0
        self.walks = 0

    def __getitem__(self, key: str) -> Reading:
        self.looked_up += 1
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        self.looked_up += 1
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        self.walks += 1
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_seeding_looks_up_only_the_rotators_own_targets(clock: FakeClock) -> None:
    stores = [MemoryStore(f"ssm:/p/{k}") for k in range(1000)]
    readings = Readings({s.name: Reading(value=f"v{k}") for k, s in enumerate(stores)})
    rotator = CredentialRotator(
        "c7", fetcher=FakeFetcher(clock), stores=[stores[7]], clock=clock, rng=lambda: 0.5
    )
    rotator.seed(readings)
    assert rotator._seeded == {"ssm:/p/7": Reading(value="v7")}
    assert readings.walks == 0
    assert readings.looked_up <= 2  # its one target: `in`, then the item


def test_a_step_does_not_walk_every_chain(clock: FakeClock) -> None:
    daemon, rotators = memory_daemon(clock, 200)
    scheduler = FakeScheduler()
    daemon._scheduler = scheduler
    daemon.rotators = CountingList(daemon.rotators)
    CountingList.walks = 0
    for rotator in rotators:
        daemon._run(rotator)
    assert len(scheduler.jobs) == 200  # every chain went on
    assert CountingList.walks == 0
    # a chain removed by a reload still ends at its next step
    daemon._scheduler = None  # the fake has no remove_job: nothing to unschedule
    daemon.apply(remove=["c3"])
    daemon._scheduler = scheduler
    daemon._run(rotators[3])
    assert len(scheduler.jobs) == 200


class CountingDict(dict[str, Any]):
    walks = 0

    def items(self) -> Any:
        type(self).walks += 1
        return super().items()

    def __iter__(self) -> Iterator[str]:
        type(self).walks += 1
        return super().__iter__()


def test_the_poll_loop_does_not_walk_every_deadline(clock: FakeClock) -> None:
    daemon, rotators = memory_daemon(clock, 500)
    daemon._scheduler = FakeScheduler()
    for rotator in rotators:
        daemon._schedule(rotator, clock.now() + timedelta(hours=1))
    daemon._deadlines = CountingDict(daemon._deadlines)
    CountingDict.walks = 0
    for _ in range(10):  # ten idle seconds of the poll loop
        assert daemon.fire_overdue() == 0
    assert CountingDict.walks == 0


def _cred(k: int) -> dict[str, Any]:
    return {
        "name": f"c{k}",
        "token_url": "https://kc.example/token",
        "client_id": "oms-client",
        "client_secret_env": "OMS_SECRET",
        "targets": [{"type": "secretsmanager", "secret_id": f"s{k}", "max_writes_per_day": 500}],
    }


def test_write_rate_advice_finds_the_credential_by_name(clock: FakeClock) -> None:
    settings = from_mapping({"credentials": [_cred(k) for k in range(300)]})
    app = build(settings, clock=clock, session=FakeSession(), env={"OMS_SECRET": "x"})
    app.settings = dataclasses.replace(settings, credentials=CountingTuple(settings.credentials))
    CountingTuple.walks = 0
    advise = app.advise
    short = make_token(clock.now(), lifetime=300)  # 300 s: a version every 225 s
    advice = [advise(f"c{k}", short) for k in range(300)]
    assert all(a and f"c{k}" in a for k, a in enumerate(advice)), advice[:2]
    assert CountingTuple.walks == 1  # indexed once, then looked up
    # a reload replaces the credentials: the new ones are found, a removed one is not
    app.settings = dataclasses.replace(settings, credentials=settings.credentials[:1])
    assert advise("c0", short)
    assert advise("c5", short) is None


def test_batch_calls_are_in_flight_together() -> None:
    together = threading.Barrier(batch.IN_FLIGHT, timeout=30)
    seen: list[Sequence[int]] = []

    def call(chunk: Sequence[int]) -> int:
        seen.append(chunk)
        if len(seen) <= batch.IN_FLIGHT:
            together.wait()  # broken (and the test failed) unless IN_FLIGHT calls overlap
        return sum(chunk)

    items = list(range(95))
    results = batch.in_chunks(call, items, 10)
    assert results == [sum(items[k : k + 10]) for k in range(0, 95, 10)]  # in order
    assert sorted(len(c) for c in seen) == [5] + [10] * 9
    assert batch.IN_FLIGHT > 1


def test_a_failed_batch_call_raises_after_the_others() -> None:
    done: list[int] = []

    def call(chunk: Sequence[int]) -> int:
        if chunk[0] == 20:
            raise RuntimeError("third chunk failed")
        done.append(chunk[0])
        return chunk[0]

    with pytest.raises(RuntimeError, match="third chunk"):
        batch.in_chunks(call, list(range(60)), 10)
    assert sorted(done) == [0, 10, 30, 40, 50]
    assert batch.in_chunks(call, [1, 2], 10) == [1]  # one chunk: no pool
    assert batch.in_chunks(call, [], 10) == []


def test_job_callables_carry_a_signature_apscheduler_accepts(clock: FakeClock) -> None:
    from apscheduler.util import check_callable_args

    daemon = Daemon(
        [], clock=clock, backoff=Backoff(), observer=NullObserver(), scheduler_now=clock.now
    )
    for job in (daemon._run, daemon._probe):
        assert "__signature__" in vars(job.__func__)  # computed once, not per add_job
        check_callable_args(job, ("rotator",), {})  # one argument: accepted
        with pytest.raises(ValueError, match="arguments"):
            check_callable_args(job, (), {})
