"""The TokenStore protocol every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from rotator.token import Token, decode


@dataclass(frozen=True)
class Reading:
    """What a store holds right now.

    ``value`` is the stored string (None: nothing published). ``token`` is the
    decoded token, None when missing, unreadable, or an opaque raw token whose
    expiry cannot be known. ``version`` identifies what was read, for a
    compare-and-set on backends that have one.
    """

    value: str | None = field(default=None, repr=False)
    token: Token | None = None
    version: str | None = None
    problem: str | None = None
    # When it was read (the store's monotonic clock, seconds), for stores that may use a
    # recent reading instead of reading again right before a write (SSM).
    read_at: float | None = field(default=None, compare=False)

    @property
    def is_missing(self) -> bool:
        return self.value is None

    @property
    def is_unreadable(self) -> bool:
        return self.problem is not None

    def holds_later(self, token: Token) -> bool:
        """True when this reading's token expires later than `token`: keep it.

        An equal expiry is replaced (expires_at does not go backwards), so a forced
        rotation within the same second as the last one still publishes.

        A stored token issued more than a whole lifetime after `token` cannot come
        from a writer racing us (that writer fetched before our publish, within
        seconds): it was stamped by a clock that has since been set back, and
        keeping it would pin a long-expired token in place. It is replaced.
        """
        held = self.token
        if held is None or held.expires_at <= token.expires_at:
            return False
        return held.issued_at <= token.issued_at + token.lifetime

    def kept(self) -> PutResult:
        """The PutResult of a publish that kept this reading's (later) token."""
        assert self.token is not None
        return PutResult(self.token, is_ours=False, version=self.version)


def decode_reading(
    value: str, fmt: str, version: str | None, *, read_at: float | None = None
) -> Reading:
    """The Reading of a stored string: its decoded token, or the problem that stops
    decoding it (named with the format, so a mismatched ``format`` setting shows)."""
    try:
        token = decode(value, fmt)
    except ValueError as exc:
        problem = f"{exc} ({fmt} format)"
        return Reading(value=value, version=version, problem=problem, read_at=read_at)
    return Reading(value=value, token=token, version=version, read_at=read_at)


@dataclass(frozen=True)
class PutResult:
    """The outcome of a publish: what the store holds after it."""

    published: Token
    is_ours: bool
    version: str | None = None


class TokenStore(Protocol):
    """A place a token is published to and read from."""

    @property
    def name(self) -> str:
        """Human, secret-free identity for logs: e.g. 'secretsmanager:oms/token'."""
        ...

    @property
    def format(self) -> str:
        """'json' (the document) or 'raw' (the bare access token)."""
        ...

    def get(self) -> Reading:
        """Read what is published. Missing is not an error; unreadable is reported
        in ``Reading.problem``; access and availability failures raise StoreError."""
        ...

    def put(self, token: Token, basis: Reading | None = None) -> PutResult:
        """Publish ``token`` unless the store already holds one that expires later.

        ``basis`` is a reading taken shortly before; backends with a
        compare-and-set use its version and, when another writer won, return
        that writer's token with ``is_ours=False`` instead of overwriting it.
        """
        ...

    def ping(self) -> None:
        """Confirm the target is reachable and accessible, writing nothing."""
        ...
