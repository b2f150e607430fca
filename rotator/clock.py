"""Time, injected: every instant is an aware UTC datetime."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, aware, in UTC."""
        ...

    def wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        """Sleep up to `seconds`; return True early if `event` is set."""
        ...


class SystemClock:
    """The real clock; waits are interruptible by an event (shutdown)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        if seconds <= 0:
            return event.is_set() if event else False
        if event is None:
            event = threading.Event()
        return event.wait(seconds)


def utc(dt: datetime) -> datetime:
    """Normalise to aware UTC, refusing naive datetimes."""
    if dt.tzinfo is None:
        msg = f"naive datetime is not allowed: {dt.isoformat()}"
        raise ValueError(msg)
    return dt.astimezone(UTC)


def format_instant(dt: datetime) -> str:
    """RFC 3339 in UTC with a 'Z', whole seconds: 2026-11-28T22:30:00Z."""
    # isoformat, not strftime: half the cost, and several calls per rotation
    return utc(dt).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def parse_instant(text: str) -> datetime:
    """Parse RFC 3339 (with 'Z' or an offset); the result is aware UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        msg = f"instant has no time zone: {text!r}"
        raise ValueError(msg)
    return dt.astimezone(UTC)
