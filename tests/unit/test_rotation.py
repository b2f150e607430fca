"""When the next refresh is due, and one rotation step against in-memory stores."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from rotator.errors import (
    CredentialsRejected,
    StoreAccessDenied,
    StoreUnavailable,
    VerificationFailed,
)
from rotator.oauth import Grant
from rotator.rotation import CredentialRotator, PublishFailed, Schedule, describe_error
from rotator.stores.memory import MemoryStore
from rotator.token import Token, decode, encode
from tests.fakes import T0, FakeClock, FakeFetcher, FlakyStore, RecordingObserver, make_token

S = timedelta(seconds=1)


# ---------------------------------------------------------------- Schedule


def test_next_run_at_75_percent_minus_jitter() -> None:
    schedule = Schedule(ratio=0.75, jitter_ratio=0.05, safety_margin=30 * S)
    token = make_token(T0, 300)
    assert schedule.next_run_at(token, T0, 0.0) == T0 + 225 * S
    assert schedule.next_run_at(token, T0, 0.5) == T0 + 217.5 * S
    assert schedule.next_run_at(token, T0, 0.999999) - (T0 + 210 * S) < timedelta(milliseconds=1)
    for rand in (0.0, 0.1, 0.5, 0.9, 0.999):
        at = schedule.next_run_at(token, T0, rand)
        assert T0 + 210 * S <= at <= T0 + 225 * S


def test_due_at_and_is_due() -> None:
    schedule = Schedule()
    token = make_token(T0, 300)
    assert schedule.due_at(token) == T0 + 210 * S
    assert not schedule.is_due(token, T0 + 209 * S)
    assert schedule.is_due(token, T0 + 210 * S)
    assert schedule.is_due(token, T0 + 10_000 * S)


@pytest.mark.parametrize(
    ("ratio", "jitter", "margin", "lifetime"),
    [
        (0.9, 0.05, 60, 300),
        (0.95, 0.0, 30, 300),
        (0.75, 0.05, 30, 300),
        (0.75, 0.05, 300, 3600),
        (0.8, 0.1, 120, 600),
    ],
)
def test_never_later_than_the_safety_margin_before_expiry(
    ratio: float, jitter: float, margin: float, lifetime: float
) -> None:
    schedule = Schedule(ratio=ratio, jitter_ratio=jitter, safety_margin=margin * S)
    token = make_token(T0, lifetime)
    assert margin <= lifetime / 4  # the margin applies in full
    for rand in (0.0, 0.3, 0.7, 0.999):
        at = schedule.next_run_at(token, T0, rand)
        assert at <= token.expires_at - margin * S
        assert at >= T0 + lifetime * (ratio - jitter) * S - margin * S
        assert schedule.is_due(token, at)


def test_a_margin_larger_than_the_token_is_capped_to_a_quarter() -> None:
    schedule = Schedule(safety_margin=30 * S)
    token = make_token(T0, 15)  # the demo's 15 s token
    for rand in (0.0, 0.5, 0.999):
        at = schedule.next_run_at(token, T0, rand)
        assert T0 < at <= token.expires_at - 3.75 * S
    # planned at 90 % (13.5 s), so the capped margin alone decides: exactly 15 s / 4 before
    late = Schedule(ratio=0.9, jitter_ratio=0.0, safety_margin=30 * S)
    assert late.next_run_at(token, T0, 0.5) == T0 + 11.25 * S
    assert not late.is_due(token, T0 + 11.24 * S)
    assert late.is_due(token, T0 + 11.25 * S)


def test_a_margin_under_a_quarter_applies_in_full() -> None:
    schedule = Schedule(ratio=0.9, jitter_ratio=0.0, safety_margin=2 * S)
    token = make_token(T0, 15)
    assert schedule.next_run_at(token, T0, 0.5) == T0 + 13 * S


def test_clock_jumped_backwards_is_at_most_one_interval_away() -> None:
    schedule = Schedule()
    token = make_token(T0, 300)
    now = T0 - timedelta(days=1)
    at = schedule.next_run_at(token, now, 0.0)
    assert now < at <= now + 225 * S


def test_clock_jumped_forwards_runs_now() -> None:
    schedule = Schedule()
    token = make_token(T0, 300)
    for now in (T0 + 226 * S, T0 + 400 * S, T0 + timedelta(days=2)):
        assert schedule.next_run_at(token, now, 0.5) == now


def test_next_run_is_never_in_the_past() -> None:
    schedule = Schedule()
    token = make_token(T0, 300)
    for offset in range(-600, 900, 37):
        now = T0 + offset * S
        for rand in (0.0, 0.5, 0.99):
            at = schedule.next_run_at(token, now, rand)
            assert now <= at <= now + 225 * S


# ---------------------------------------------------------------- the step


def rotator(
    clock: FakeClock,
    *stores: MemoryStore,
    fetcher: FakeFetcher | None = None,
    **kw: object,
) -> tuple[CredentialRotator, FakeFetcher]:
    fetcher = fetcher or FakeFetcher(clock)
    rot = CredentialRotator(
        "oms",
        fetcher=fetcher,
        stores=list(stores),
        clock=clock,
        rng=lambda: 0.5,
        **kw,  # type: ignore[arg-type]
    )
    return rot, fetcher


def held(store: MemoryStore) -> Token | None:
    value = store.value
    return None if value is None else decode(value, store.format)


def plant(store: MemoryStore, token: Token) -> None:
    store.plant(encode(token, store.format))


def test_first_step_fetches_and_publishes_everywhere(clock: FakeClock) -> None:
    sm, ssm, raw = MemoryStore("sm"), MemoryStore("ssm"), MemoryStore("raw", fmt="raw")
    observer = RecordingObserver()
    rot, fetcher = rotator(clock, sm, ssm, raw, observer=observer)
    result = rot.rotate()
    assert fetcher.calls == 1
    token = fetcher.issued[0].token
    assert result.action == "rotated"
    assert result.token == token
    assert result.targets == ("sm", "ssm", "raw")
    assert held(sm) == held(ssm) == token
    assert raw.value == token.access_token
    assert json.loads(sm.value or "")["access_token"] == token.access_token
    assert rot.token == token
    assert rot.next_run_at() == T0 + 217.5 * S
    assert observer.of("publish") == [("oms", n, "ok") for n in ("sm", "ssm", "raw")]
    assert observer.of("rotation") == [("oms", "rotated")]


def test_a_fresh_published_token_is_adopted_without_fetching(clock: FakeClock) -> None:
    sm, ssm = MemoryStore("sm"), MemoryStore("ssm")
    published = make_token(T0 - 100 * S, 300, access_token="access-token-MARKER-other")
    plant(sm, published)
    plant(ssm, published)
    observer = RecordingObserver()
    rot, fetcher = rotator(clock, sm, ssm, observer=observer)
    result = rot.rotate()
    assert (result.action, result.token) == ("adopted", published)
    assert fetcher.calls == 0
    assert sm.writes == ssm.writes == 0
    assert rot.token == published
    assert rot.next_run_at() == T0 + (217.5 - 100) * S
    assert observer.of("rotation") == [("oms", "adopted")]


def test_crash_loop_does_not_hammer_the_token_endpoint(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    fetchers = []
    for _ in range(20):  # twenty restarts, one second apart
        rot, fetcher = rotator(clock, store)
        rot.rotate()
        fetchers.append(fetcher)
        clock.advance(1)
    assert sum(f.calls for f in fetchers) == 1
    assert store.writes == 1


def test_adopted_token_is_copied_to_targets_that_lack_it(clock: FakeClock) -> None:
    full, empty, older, garbled = (MemoryStore(n) for n in ("full", "empty", "older", "garbled"))
    published = make_token(T0 - 60 * S, 300, access_token="access-token-MARKER-pub")
    plant(full, published)
    plant(older, make_token(T0 - 400 * S, 300, access_token="access-token-MARKER-old"))
    garbled.plant("{not json")
    rot, fetcher = rotator(clock, full, empty, older, garbled)
    result = rot.rotate()
    assert result.action == "adopted"
    assert fetcher.calls == 0
    assert result.targets == ("empty", "older", "garbled")
    assert held(empty) == held(older) == held(garbled) == published
    assert full.writes == 0


def test_a_due_token_is_replaced(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    plant(store, make_token(T0 - 210 * S, 300, access_token="access-token-MARKER-due"))
    rot, fetcher = rotator(clock, store)
    result = rot.rotate()
    assert result.action == "rotated"
    assert fetcher.calls == 1
    assert held(store) == fetcher.issued[0].token


def test_a_token_just_before_due_is_kept(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    plant(store, make_token(T0 - 209 * S, 300))
    rot, fetcher = rotator(clock, store)
    assert rot.rotate().action == "adopted"
    assert fetcher.calls == 0


def test_force_fetches_even_when_fresh(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    plant(store, make_token(T0 - 10 * S, 300))
    rot, fetcher = rotator(clock, store)
    result = rot.rotate(force=True)
    assert result.action == "rotated"
    assert fetcher.calls == 1
    assert held(store) == fetcher.issued[0].token


def test_failed_publish_is_retried_from_memory_without_a_second_fetch(clock: FakeClock) -> None:
    good, flaky = MemoryStore("good"), FlakyStore("flaky")
    flaky.fail_puts(StoreUnavailable("ssm throttled", target="flaky", action="ssm:PutParameter"))
    observer = RecordingObserver()
    rot, fetcher = rotator(clock, good, flaky, observer=observer)

    with pytest.raises(PublishFailed) as info:
        rot.rotate()
    assert info.value.is_transient
    assert [name for name, _ in info.value.failures] == ["flaky"]
    token = fetcher.issued[0].token
    assert held(good) == token
    assert flaky.value is None

    clock.advance(5)
    result = rot.rotate()
    assert result.action == "published"
    assert result.targets == ("flaky",)
    assert fetcher.calls == 1
    assert held(flaky) == token
    assert good.writes == 1  # the target that had it is not written again
    assert ("oms", "flaky", "error") in observer.of("publish")


def test_failed_publish_everywhere_still_keeps_the_token(clock: FakeClock) -> None:
    a, b = FlakyStore("a"), FlakyStore("b")
    a.fail_puts(StoreUnavailable("down"), times=2)
    b.fail_puts(StoreUnavailable("down"), times=2)
    rot, fetcher = rotator(clock, a, b)
    for _ in range(2):
        with pytest.raises(PublishFailed):
            rot.rotate()
        clock.advance(10)
    assert rot.token is None
    assert rot.next_run_at() is None
    result = rot.rotate()
    assert result.action == "published"
    assert fetcher.calls == 1
    assert held(a) == held(b) == fetcher.issued[0].token


def test_a_pending_token_that_became_due_is_replaced(clock: FakeClock) -> None:
    flaky = FlakyStore("flaky")
    flaky.fail_puts(StoreUnavailable("down"))
    rot, fetcher = rotator(clock, flaky)
    with pytest.raises(PublishFailed):
        rot.rotate()
    clock.advance(250)  # past due (210 s) while the store was down
    result = rot.rotate()
    assert result.action == "rotated"
    assert fetcher.calls == 2
    assert held(flaky) == fetcher.issued[1].token


def test_one_target_failing_does_not_stop_the_others(clock: FakeClock) -> None:
    denied, ok, slow = FlakyStore("denied"), MemoryStore("ok"), FlakyStore("slow")
    denied.fail_puts(StoreAccessDenied("AccessDenied secretsmanager:PutSecretValue on oms/token"))
    slow.fail_puts(StoreUnavailable("throttled"))
    rot, fetcher = rotator(clock, denied, ok, slow)
    with pytest.raises(PublishFailed) as info:
        rot.rotate()
    err = info.value
    assert [name for name, _ in err.failures] == ["denied", "slow"]
    assert not err.is_transient  # AccessDenied is not worth a retry
    assert "secretsmanager:PutSecretValue" in str(err)
    assert "2 target(s)" in str(err)
    assert held(ok) == fetcher.issued[0].token
    assert rot.token == fetcher.issued[0].token


def test_publish_failed_is_transient_iff_all_failures_are() -> None:
    assert PublishFailed([("a", StoreUnavailable("x")), ("b", StoreUnavailable("y"))]).is_transient
    assert not PublishFailed(
        [("a", StoreUnavailable("x")), ("b", StoreAccessDenied("y"))]
    ).is_transient


def test_a_later_token_in_a_store_is_never_overwritten(clock: FakeClock) -> None:
    store, other = MemoryStore("sm"), MemoryStore("ssm")
    later = make_token(T0, 3600, access_token="access-token-MARKER-later")
    plant(store, later)
    observer = RecordingObserver()
    rot, fetcher = rotator(clock, store, other, observer=observer)
    result = rot.rotate(force=True)
    assert fetcher.calls == 1
    assert held(store) == later
    assert store.writes == 0
    assert held(other) == fetcher.issued[0].token
    assert result.token == later
    assert rot.token == later
    assert observer.of("publish") == [("oms", "sm", "kept_newer"), ("oms", "ssm", "ok")]


def test_a_replica_that_wins_the_race_is_kept(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    plant(store, make_token(T0 - 250 * S, 300))  # due
    winner = make_token(T0, 300 + 1, access_token="access-token-MARKER-winner")
    rot, fetcher = rotator(clock, store)
    fetcher.on_fetch = lambda: plant(store, winner)  # another replica publishes meanwhile
    result = rot.rotate()
    assert held(store) == winner
    assert result.token == winner


def test_verification_failure_publishes_nothing(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    previous = make_token(T0 - 250 * S, 300, access_token="access-token-MARKER-prev")
    plant(store, previous)
    checked: list[Token] = []

    def verify(token: Token) -> None:
        checked.append(token)
        raise VerificationFailed("verify_url https://oms.example.com/ refused: HTTP 401")

    rot, fetcher = rotator(clock, store, verify=verify)
    with pytest.raises(VerificationFailed):
        rot.rotate()
    assert checked == [fetcher.issued[0].token]
    assert held(store) == previous
    assert store.writes == 0
    with pytest.raises(VerificationFailed):
        rot.rotate()
    assert fetcher.calls == 2  # nothing was kept in memory for publishing


def test_verification_success_publishes(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    checked: list[Token] = []
    rot, fetcher = rotator(clock, store, verify=checked.append)
    rot.rotate()
    assert checked == [fetcher.issued[0].token] == [held(store)]


def test_the_previous_grant_is_handed_to_the_fetcher(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    fetcher = FakeFetcher(clock, refresh_token="refresh-token-MARKER")
    rot, _ = rotator(clock, store, fetcher=fetcher)
    rot.rotate()
    clock.advance(220)
    rot.rotate()
    clock.advance(220)
    rot.rotate()
    assert fetcher.previous == [None, fetcher.issued[0], fetcher.issued[1]]
    assert isinstance(fetcher.previous[1], Grant)


def test_fetch_errors_propagate_and_publish_nothing(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    rot, fetcher = rotator(clock, store)
    fetcher.queue(CredentialsRejected("rejected the client credentials (unauthorized_client)"))
    with pytest.raises(CredentialsRejected):
        rot.rotate()
    assert store.value is None
    assert rot.rotate().action == "rotated"


def test_an_unreadable_target_does_not_block_rotation(clock: FakeClock) -> None:
    broken, ok = MemoryStore("broken"), MemoryStore("ok")
    broken.fail_next(StoreUnavailable("read timed out"))
    rot, fetcher = rotator(clock, broken, ok)
    result = rot.rotate()
    assert result.action == "rotated"
    assert held(broken) == held(ok) == fetcher.issued[0].token


def test_clock_jump_forwards_rotates_once_not_in_a_burst(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    rot, fetcher = rotator(clock, store)
    rot.rotate()
    clock.advance(timedelta(hours=6))
    assert rot.next_run_at() == clock.now()
    rot.rotate()
    assert fetcher.calls == 2
    next_at = rot.next_run_at()
    assert next_at is not None and next_at > clock.now() + 200 * S
    for _ in range(5):
        rot.rotate()
    assert fetcher.calls == 2


def test_clock_jump_backwards_does_not_cause_a_storm(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    rot, fetcher = rotator(clock, store)
    rot.rotate()
    clock.set(T0 - timedelta(hours=6))
    next_at = rot.next_run_at()
    assert next_at is not None
    assert clock.now() < next_at <= clock.now() + 225 * S
    # The old token now looks issued in the future: its age cannot be judged, so
    # exactly one refresh follows (no missed rotation), then no more (no storm).
    for _ in range(5):
        rot.rotate()
    assert fetcher.calls == 2
    assert rot.token is not None and rot.token.issued_at == clock.now()


def test_small_clock_skew_between_replicas_is_tolerated(clock: FakeClock) -> None:
    store = MemoryStore("sm")
    rot, fetcher = rotator(clock, store)
    rot.rotate()
    clock.set(T0 - 3 * S)  # a replica whose clock is 3 s behind reads the same store
    rot.rotate()
    assert fetcher.calls == 1


def test_a_rotator_needs_a_target(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="at least one target"):
        rotator(clock)


def test_repr_and_describe_error(clock: FakeClock) -> None:
    rot, _ = rotator(clock, MemoryStore("sm"))
    assert repr(rot) == "CredentialRotator('oms', targets=['sm'])"
    assert describe_error(StoreUnavailable("throttled")) == "throttled"
    assert describe_error(KeyError("access-token-MARKER")) == "internal error (KeyError)"
