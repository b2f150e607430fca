"""A daemon's start: a credential whose batch-read (seeded) readings hold a fresh token in
every target is adopted right there, with a job's effects (state, metrics, the `adopted`
log line, its next run scheduled), without a job of its own first; any other credential
(due, missing, behind, never seeded) has its first step queued for the start-up jobs
(tests/unit/test_first_steps.py), which run it as a job would."""

from __future__ import annotations

import logging
import re

import pytest

from rotator.retry import Backoff
from rotator.rotation import CredentialRotator
from rotator.scheduler import FIRST_STEPS, Daemon
from rotator.stores.base import Reading, TokenStore
from rotator.stores.memory import MemoryStore
from rotator.token import Token, encode
from tests.fakes import (
    T0,
    FakeClock,
    FakeFetcher,
    FakeScheduler,
    RecordingObserver,
    make_token,
    seconds,
)


class CountingStore(MemoryStore):
    """A MemoryStore that counts its reads."""

    reads = 0

    def get(self) -> Reading:
        self.reads += 1
        return super().get()


def reading(store: TokenStore, token: Token | None) -> Reading:
    if token is None:
        return Reading()
    return Reading(value=encode(token, store.format), token=token)


def fleet(
    clock: FakeClock, observer: RecordingObserver, **held: list[Token | None]
) -> tuple[Daemon, FakeScheduler, dict[str, CredentialRotator], dict[str, FakeFetcher]]:
    """One rotator per keyword: its targets' seeded tokens (the stores hold them too)."""
    rotators, fetchers = {}, {}
    for name, tokens in held.items():
        stores = [CountingStore(f"{name}-{k}") for k in range(len(tokens))]
        for store, token in zip(stores, tokens, strict=True):
            if token is not None:
                store.plant(encode(token, store.format))
        fetchers[name] = FakeFetcher(clock)
        rotator = CredentialRotator(
            name,
            fetcher=fetchers[name],
            stores=stores,
            clock=clock,
            observer=observer,
            rng=lambda: 0.0,
        )
        if name != "unseeded":
            rotator.seed({s.name: reading(s, t) for s, t in zip(stores, tokens, strict=True)})
        rotator.spread_first_refresh()
        rotators[name] = rotator
    daemon = Daemon(
        list(rotators.values()),
        clock=clock,
        backoff=Backoff(initial=1.0, cap=30.0, jitter=0.0),
        observer=observer,
        scheduler_now=clock.now,
    )
    scheduler = FakeScheduler()
    daemon._scheduler = scheduler
    return daemon, scheduler, rotators, fetchers


def test_a_fresh_seeded_token_is_adopted_at_start_without_a_job(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = make_token(T0 - seconds(100), 300)  # refresh planned at T0 + 125 s (75 %, rng 0)
    due = make_token(T0 - seconds(280), 300)
    observer = RecordingObserver()
    daemon, scheduler, rotators, fetchers = fleet(
        clock,
        observer,
        fresh=[fresh, fresh],
        due=[due],
        behind=[fresh, None],  # the step copies it to the empty target: a job does that
        unseeded=[fresh],  # never batch-read (e.g. a file target): its job reads it
    )
    with caplog.at_level(logging.INFO, logger="rotator"):
        daemon._start_chains()

    # the adopted one's job is its refresh; the others' first steps wait in the queue,
    # due now, for one start-up job each (three of them: fewer than the workers)
    refresh, *takers = scheduler.jobs
    assert refresh.func == daemon._run and refresh.args == (rotators["fresh"],)
    assert refresh.run_date == T0 + seconds(125)  # its own schedule, not spread
    assert [n.name for n in daemon._first_steps] == ["due", "behind", "unseeded"]  # as configured
    assert len(takers) == 3
    assert all(job.func == daemon._take_first_steps for job in takers)
    assert all(job.run_date == T0 and job.args == (job.id,) for job in takers)
    assert all(job.id.startswith(f"{FIRST_STEPS}#") for job in takers)
    for name in ("behind", "due", "unseeded"):
        assert daemon.states[name].next_run_at == T0
        assert (name, T0) in observer.of("scheduled")

    # the adoption's effects, as a job would have had them; no call made
    assert rotators["fresh"].token == fresh
    assert daemon.states["fresh"].last_success_at == T0
    assert daemon.states["fresh"].next_run_at == T0 + seconds(125)
    assert ("fresh", "adopted") in observer.of("rotation")
    assert ("fresh", fresh) in observer.of("published")
    assert [s.reads for s in rotators["fresh"].stores] == [0, 0]  # type: ignore[attr-defined]
    assert fetchers["fresh"].previous == []
    lines = [r.getMessage() for r in caplog.records if "credential=fresh" in r.getMessage()]
    assert len(lines) == 1
    assert re.fullmatch(
        r"adopted credential=fresh expires_at=\S+Z next_run=\S+Z duration_ms=\d+", lines[0]
    )
    # the others did nothing yet: their jobs decide
    for name in ("behind", "due", "unseeded"):
        assert daemon.states[name].last_success_at is None
        assert rotators[name].token is None
    assert {name for name, _ in observer.of("rotation")} == {"fresh"}


def test_the_other_first_steps_run_as_before(clock: FakeClock) -> None:
    fresh = make_token(T0 - seconds(100), 300)
    due = make_token(T0 - seconds(280), 300)
    observer = RecordingObserver()
    daemon, scheduler, rotators, fetchers = fleet(
        clock, observer, due=[due], behind=[fresh, None], unseeded=[fresh]
    )
    daemon._start_chains()
    for job in list(scheduler.jobs):
        job.func(*job.args)
    assert dict(observer.of("rotation")) == {
        "due": "rotated",
        "behind": "adopted",
        "unseeded": "adopted",
    }
    assert len(fetchers["due"].previous) == 1  # a due token is fetched anew
    assert rotators["behind"].stores[1].value is not None  # type: ignore[attr-defined]
    assert rotators["unseeded"].stores[0].reads == 1  # type: ignore[attr-defined]
    # a fetched first token's refresh is spread (37.5-75 %), rng 0: the earliest
    due_token = rotators["due"].token
    assert due_token is not None
    assert daemon.states["due"].next_run_at == due_token.issued_at + seconds(112.5)


def test_a_revoked_or_pending_rotator_is_not_adopted_from_its_seed(clock: FakeClock) -> None:
    fresh = make_token(T0 - seconds(100), 300)
    store = MemoryStore("m")
    rotator = CredentialRotator("c", fetcher=FakeFetcher(clock), stores=[store], clock=clock)
    rotator.seed({"m": reading(store, fresh)})
    rotator.mark_revoked(fresh)
    assert rotator.adopt_seeded() is None
    assert rotator.token is None
    assert rotator._seeded  # left for the step, which reads and decides
