"""The fault plan of ``FaultProxy``: which faults are armed, and which one a request gets.

A ``Fault`` is one armed fault (latency, stall, reset, a canned answer, a truncated
body) for the next ``remaining`` matching requests (None: until cleared), limited to a
path prefix and/or an ``X-Amz-Target`` substring. ``FaultPlan`` keeps them oldest first
and hands a request the oldest matching latency and the oldest matching other fault.
Neither does I/O or locking: ``rotator.testing.proxy.FaultProxy`` calls the plan under
its own lock and serves what it says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rotator.testing._http import error_page

__all__ = ["Fault", "FaultPlan"]


@dataclass
class Fault:
    """One armed fault; build it with the class methods, which check their arguments."""

    kind: str  # latency, stall, reset, fail or truncate
    remaining: int | None
    path_prefix: str | None
    target: str | None
    seconds: float = 0.0
    status: int = 503
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    keep_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.remaining is not None and self.remaining < 1:
            raise ValueError("times must be None or >= 1")

    def matches(self, path: str, target: str | None) -> bool:
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        return self.target is None or (target is not None and self.target in target)

    @classmethod
    def latency(
        cls, seconds: float, *, times: int | None, path_prefix: str | None, target: str | None
    ) -> Fault:
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("latency", times, path_prefix, target, seconds=seconds)

    @classmethod
    def canned(
        cls,
        status: int,
        body: bytes | str | None,
        headers: Mapping[str, str] | None,
        *,
        times: int | None,
        path_prefix: str | None,
        target: str | None,
    ) -> Fault:
        """A ``fail`` fault: ``body`` defaults to a proxy-style HTML error page, the
        Content-Type to ``text/html``; any Content-Length given is dropped (the proxy sets
        the body's)."""
        data = error_page(status) if body is None else body
        if isinstance(data, str):
            data = data.encode("utf-8")
        items = [(n, v) for n, v in (headers or {}).items() if n.lower() != "content-length"]
        if not any(name.lower() == "content-type" for name, _ in items):
            items.insert(0, ("Content-Type", "text/html"))
        return cls(
            "fail", times, path_prefix, target, status=status, body=data, headers=tuple(items)
        )

    @classmethod
    def truncation(
        cls,
        keep_bytes: int | None,
        *,
        times: int | None,
        path_prefix: str | None,
        target: str | None,
    ) -> Fault:
        if keep_bytes is not None and keep_bytes < 0:
            raise ValueError("keep_bytes must be >= 0")
        return cls("truncate", times, path_prefix, target, keep_bytes=keep_bytes)


class FaultPlan:
    """The armed faults, oldest first. Not thread-safe: the caller holds its own lock."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def take(self, path: str, target: str | None) -> tuple[Fault | None, Fault | None]:
        """The oldest matching latency and the oldest matching other fault, each counted
        as used once (a fault used up is dropped)."""
        latency: Fault | None = None
        fault: Fault | None = None
        for rule in self._faults:
            if rule.kind == "latency":
                if latency is None and rule.matches(path, target):
                    latency = rule
            elif fault is None and rule.matches(path, target):
                fault = rule
        for taken in (latency, fault):
            if taken is not None and taken.remaining is not None:
                taken.remaining -= 1
        self._faults = [rule for rule in self._faults if rule.remaining != 0]
        return latency, fault
