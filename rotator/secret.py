"""A redacting wrapper for secret strings, and a process-wide redaction list.

Secrets are wrapped as soon as they are read, so no repr, str, f-string or
exception can show them. Every secret revealed to a request is also registered
with the log filter as a last line of defence.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

_REDACTED = "**********"


class Secret:
    """A string that will not show itself; call ``reveal()`` at the point of use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_REDACTED}')"

    def __str__(self) -> str:
        return _REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values cannot be pickled")


class _Registry:
    """Known secret strings, so that a log formatter can mask any that slip through."""

    def __init__(self, limit: int = 4096) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, None] = {}
        self._limit = limit

    def add(self, value: str) -> None:
        if len(value) < 6:  # too short to mask without mangling ordinary words
            return
        with self._lock:
            self._values.pop(value, None)
            self._values[value] = None
            while len(self._values) > self._limit:
                self._values.pop(next(iter(self._values)))

    def values(self) -> Iterable[str]:
        with self._lock:
            return list(self._values)

    def scrub(self, text: str) -> str:
        for value in self.values():
            if value in text:
                text = text.replace(value, _REDACTED)
        return text


REGISTRY = _Registry()


def register(value: str) -> None:
    REGISTRY.add(value)


def scrub(text: str) -> str:
    return REGISTRY.scrub(text)
