"""Reading.holds_later: the one rule every store applies before writing."""

from datetime import UTC, datetime, timedelta

from rotator.stores.base import Reading
from rotator.token import Token

T0 = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
LIFE = timedelta(seconds=300)


def token(issued_at: datetime, life: timedelta = LIFE) -> Token:
    return Token("t", "Bearer", issued_at, issued_at + life)


def test_a_later_token_is_kept() -> None:
    held = Reading(value="x", token=token(T0 + timedelta(seconds=5)))
    assert held.holds_later(token(T0))


def test_an_earlier_token_is_replaced() -> None:
    held = Reading(value="x", token=token(T0))
    assert not held.holds_later(token(T0 + timedelta(seconds=5)))


def test_an_equal_expiry_is_replaced() -> None:
    # a forced rotation in the same (whole) second must still publish its token
    held = Reading(value="x", token=token(T0))
    assert not held.holds_later(token(T0))


def test_a_token_stamped_by_a_clock_since_set_back_is_replaced() -> None:
    # issued 6 h after ours: no racing writer could have done that; our clock went back
    held = Reading(value="x", token=token(T0 + timedelta(hours=6)))
    assert not held.holds_later(token(T0))


def test_nothing_held_is_replaced() -> None:
    assert not Reading().holds_later(token(T0))


def test_a_longer_lived_token_issued_earlier_is_kept() -> None:
    # the rule compares expiries, not issue times: lifetimes differ here
    held = Reading(value="x", token=token(T0, timedelta(seconds=600)))
    assert held.holds_later(token(T0 + timedelta(seconds=5)))


def test_a_shorter_lived_token_issued_later_is_replaced() -> None:
    held = Reading(value="x", token=token(T0 + timedelta(seconds=5), timedelta(seconds=60)))
    assert not held.holds_later(token(T0))
