"""An in-memory token store for tests, with the same semantics as the real ones.

``put`` is a compare-and-set under a lock: a token that expires later is never
replaced. Test seams are public: ``fail_next`` makes the next calls raise,
``plant`` stores an arbitrary value (as another writer or a human would),
``writes`` and ``values`` record what ``put`` wrote.
"""

from __future__ import annotations

import threading

from rotator.errors import StoreError
from rotator.stores.base import PutResult, Reading, decode_reading
from rotator.token import Token, encode

__all__ = ["MemoryStore"]


class MemoryStore:
    """A thread-safe in-memory TokenStore."""

    def __init__(self, name: str = "memory", fmt: str = "json") -> None:
        self._name = name
        self._fmt = fmt
        self._lock = threading.Lock()
        self._value: str | None = None
        self._version = 0
        self._failures: list[StoreError] = []
        self.writes = 0
        self.values: list[str] = []

    def __repr__(self) -> str:
        return f"MemoryStore({self._name!r}, fmt={self._fmt!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def format(self) -> str:
        return self._fmt

    @property
    def value(self) -> str | None:
        """What the store holds now (None when nothing was published)."""
        with self._lock:
            return self._value

    def fail_next(self, exc: StoreError, times: int = 1) -> None:
        """Make the next ``times`` calls of get() or put() raise ``exc``."""
        if times < 1:
            raise ValueError(f"times must be at least 1: {times!r}")
        with self._lock:
            self._failures.extend([exc] * times)

    def plant(self, value: str) -> None:
        """Store ``value`` as is, bypassing the compare (not counted in writes)."""
        with self._lock:
            self._value = value
            self._version += 1

    def get(self) -> Reading:
        with self._lock:
            self._raise_if_failing()
            return self._reading()

    def put(self, token: Token, basis: Reading | None = None) -> PutResult:
        # Under the lock the current value is authoritative: `basis` is not needed.
        del basis
        value = encode(token, self._fmt)
        with self._lock:
            self._raise_if_failing()
            current = self._reading()
            if current.holds_later(token):
                return current.kept()
            self._value = value
            self._version += 1
            self.writes += 1
            self.values.append(value)
            return PutResult(token, is_ours=True, version=str(self._version))

    def ping(self) -> None:
        return None

    def _raise_if_failing(self) -> None:
        if self._failures:
            raise self._failures.pop(0)

    def _reading(self) -> Reading:
        if self._value is None:
            return Reading()
        return decode_reading(self._value, self._fmt, str(self._version))
