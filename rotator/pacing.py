"""One pacer per (AWS API group, region): calls spaced under AWS's shared request rates.

AWS's rates are per account and region, shared by every caller: SSM ``PutParameter``
answers ``ThrottlingException: Rate exceeded`` at about 3 calls a second, SSM reads at
40 a second, Secrets Manager write APIs at about 50. A fleet of credentials refreshing
together would go over, so every boto3 client rotator builds waits, before each call of
a paced API, for its (group, region) pacer: calls are spaced at least ``1 / rate``
seconds apart, except that a group may let ``burst`` calls through back to back (idle
time saves up no more than that): Secrets Manager's 2, the two writes of one
compare-and-set (PutSecretValue, then UpdateSecretVersionStage), so that one rotation
never waits for its own first write (a ``once`` run lost ~30 ms to it). Over any ``t``
seconds a group makes at most ``burst + rate * t`` calls. Defaults sit under AWS's
figures and can be changed per process with the environment:

=========================  ======================================  ===============  ==========
group                      calls                                   default (/s)     AWS (/s)
=========================  ======================================  ===============  ==========
``ssm:write``              PutParameter                            2                ~3
``ssm:read``               GetParameter, GetParameters             30               40
``secretsmanager:write``   PutSecretValue, UpdateSecretVersionStage,  25            ~50
                           CreateSecret, UpdateSecret
=========================  ======================================  ===============  ==========

``ROTATOR_SSM_WRITES_PER_SECOND``, ``ROTATOR_SSM_READS_PER_SECOND``,
``ROTATOR_SECRETSMANAGER_WRITES_PER_SECOND`` (``0`` turns a pacer off). The hook is
botocore's ``before-call`` event, so every call of those APIs is paced, whoever makes it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rotator.errors import ConfigError

if TYPE_CHECKING:
    from rotator.config import Credential

__all__ = [
    "BURSTS",
    "DEFAULT_RATES",
    "ENV_KEYS",
    "GROUPS",
    "Pacer",
    "Pacers",
    "Pacing",
    "capacity_lines",
]

# group -> (botocore service id, operations)
GROUPS: dict[str, tuple[str, frozenset[str]]] = {
    "ssm:write": ("ssm", frozenset({"PutParameter"})),
    "ssm:read": ("ssm", frozenset({"GetParameter", "GetParameters"})),
    "secretsmanager:write": (
        "secrets-manager",
        frozenset({"PutSecretValue", "UpdateSecretVersionStage", "CreateSecret", "UpdateSecret"}),
    ),
}
DEFAULT_RATES: dict[str, float] = {
    "ssm:write": 2.0,
    "ssm:read": 30.0,
    "secretsmanager:write": 25.0,
}
# calls a group lets through back to back (absent: 1, no burst)
BURSTS: dict[str, int] = {"secretsmanager:write": 2}
ENV_KEYS: dict[str, str] = {
    "ssm:write": "ROTATOR_SSM_WRITES_PER_SECOND",
    "ssm:read": "ROTATOR_SSM_READS_PER_SECOND",
    "secretsmanager:write": "ROTATOR_SECRETSMANAGER_WRITES_PER_SECOND",
}
_NUMBER = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")


class Pacer:
    """Spaces callers at least ``1 / rate`` seconds apart after up to ``burst`` back to
    back; thread-safe, first come first served (each caller reserves the next free slot,
    then sleeps outside the lock). The slots follow the virtual-scheduling form of a
    token bucket: ``_due`` is when the calls so far would all have been served at the
    pace, and a call may go up to ``burst - 1`` intervals ahead of it."""

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        self._ahead = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._due = float("-inf")

    def wait(self) -> float:
        """Block until this caller's slot; the seconds waited."""
        with self._lock:
            now = self._clock()
            due = max(self._due, now)
            slot = max(now, due - self._ahead)
            self._due = due + self._interval
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
        return delay


@dataclass(frozen=True)
class Pacing:
    """The configured rates (calls a second; None: not paced)."""

    rates: Mapping[str, float | None]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Pacing:
        rates: dict[str, float | None] = dict(DEFAULT_RATES)
        for group, key in ENV_KEYS.items():
            raw = (env.get(key) or "").strip()
            if not raw:
                continue
            if not _NUMBER.fullmatch(raw):
                raise ConfigError(f"{key} must be a number of calls a second (0: off): {raw!r}")
            value = float(raw)
            rates[group] = value if value > 0 else None
        return cls(rates)


class Pacers:
    """The pacers of one process, one per (group, region), made on first use."""

    def __init__(self, pacing: Pacing | None = None) -> None:
        self.pacing = pacing or Pacing(DEFAULT_RATES)
        self._lock = threading.Lock()
        self._pacers: dict[tuple[str, str], Pacer] = {}
        self.waited: dict[tuple[str, str], float] = {}  # seconds spent waiting, for tests

    def pacer(self, group: str, region: str) -> Pacer | None:
        rate = self.pacing.rates.get(group)
        if rate is None:
            return None
        with self._lock:
            key = (group, region)
            if key not in self._pacers:
                self._pacers[key] = Pacer(rate, burst=BURSTS.get(group, 1))
            return self._pacers[key]

    def install(self, client: Any, region: str) -> None:
        """Pace ``client``'s calls of the paced APIs (botocore ``before-call`` hook)."""
        service = client.meta.service_model.service_id.hyphenize()
        for group, (group_service, operations) in GROUPS.items():
            if group_service != service:
                continue
            for operation in operations:
                client.meta.events.register(
                    f"before-call.{service}.{operation}", self._hook(group, region)
                )

    def _hook(self, group: str, region: str) -> Callable[..., None]:
        def pace(**_: Any) -> None:
            pacer = self.pacer(group, region)
            if pacer is not None:
                waited = pacer.wait()
                with self._lock:
                    key = (group, region)
                    self.waited[key] = self.waited.get(key, 0.0) + waited

        return pace


_SERVICES = {"ssm": "ssm:write", "secretsmanager": "secretsmanager:write"}


def capacity_lines(
    credentials: Sequence[Credential],
    lifetimes: Mapping[str, float],
    pacing: Pacing,
    default_region: str | None,
) -> list[str]:
    """One line per (service, region) of AWS targets: credentials, projected writes a
    second (one write per target per refresh: lifetime * ratio) against the pace, and
    whether the pace can sustain them. ``lifetimes``: credential name -> token seconds."""
    load: dict[tuple[str, str], list[float]] = {}
    for credential in credentials:
        lifetime = lifetimes.get(credential.name)
        for target in credential.targets:
            if target.type not in _SERVICES:
                continue
            region = target.region or default_region or "-"
            rates = load.setdefault((target.type, region), [])
            if lifetime is not None and lifetime > 0:
                rates.append(1.0 / (lifetime * credential.refresh.ratio))
    lines = []
    for (service, region), rates in sorted(load.items()):
        need = sum(rates)
        pace = pacing.rates.get(_SERVICES[service])
        head = (
            f"{service} {region}: {len(rates)} target(s) with a known lifetime, "
            f"{need:.2f} writes/s projected"
        )
        if pace is None:
            lines.append(f"{head}, not paced")
        elif need <= pace:
            lines.append(f"{head} against a pace of {pace:g}/s: ok")
        else:
            lines.append(
                f"{head} against a pace of {pace:g}/s: CANNOT be sustained (writes queue up "
                "and tokens are published late); use longer-lived tokens, fewer credentials "
                "per region, or a higher pace if AWS allows it"
            )
    return lines
