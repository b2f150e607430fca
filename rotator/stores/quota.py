"""The Secrets Manager version quota, as a gate in front of each Secrets Manager target.

Every PutSecretValue creates a secret version, and AWS refuses new versions of a secret
past 100 created within 24 hours (``LimitExceededException``). A token refreshed every
225 s (a 300 s Keycloak token at 75 %) creates 384 versions a day and runs into the
quota after about six hours. So, per Secrets Manager target:

* **before any write**, the versions a day the target would get are projected from the
  token's real lifetime and the schedule (one version per rotation, at the earliest
  refresh the schedule allows). More than the target's ``max_writes_per_day`` (default
  90, leaving room for replicas' and operators' writes) and the target is refused: no
  write at all, one line naming the target, the projection and the two fixes;
* a ``LimitExceededException`` that happens anyway (operators' writes, several
  rotators) holds the target for ``QUOTA_HOLD`` (one hour; versions age out of the
  24-hour window one by one): no write is attempted meanwhile, the credential's other
  targets keep going.

``max_writes_per_day`` above the quota is allowed (moto and LocalStack have no quota)
with a warning.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from rotator.clock import Clock, format_instant
from rotator.errors import EXIT_FAILED, EXIT_USAGE, ConfigError, StoreError, StoreQuotaExceeded
from rotator.rotation import Held
from rotator.schedule import Schedule
from rotator.stores.base import Reading, TokenStore
from rotator.token import Token

if TYPE_CHECKING:
    from rotator.config import Credential

__all__ = [
    "DEFAULT_MAX_WRITES_PER_DAY",
    "QUOTA_HOLD",
    "SM_VERSION_QUOTA",
    "VersionQuotaGate",
    "gate_for",
    "projected_writes_per_day",
    "versions_created",
    "versions_line",
    "write_rate_advice",
]

log = logging.getLogger("rotator")

SM_VERSION_QUOTA = 100
ENV_KEY = "ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY"
DEFAULT_MAX_WRITES_PER_DAY = 90
QUOTA_HOLD = timedelta(hours=1)
# AWS's quotas page: writing more than about once every 10 minutes sustained piles up
# versions toward the quota (advice; the gate below is what refuses).
SM_ADVISED_WRITE_INTERVAL_SECONDS = 600.0
_DAY_SECONDS = 86_400.0


def projected_writes_per_day(token: Token, schedule: Schedule) -> float:
    """Versions a day a target gets when ``token``'s lifetime sets the pace: one per
    rotation, rotations at the earliest instant the schedule allows (the worst case)."""
    interval = (schedule.due_at(token) - token.issued_at).total_seconds()
    return _DAY_SECONDS / max(interval, 1.0)


def lifespan_needed(schedule: Schedule, max_writes_per_day: int) -> int:
    """The shortest access-token lifespan (s) that stays within ``max_writes_per_day``."""
    earliest = schedule.ratio - schedule.jitter_ratio
    return math.ceil(_DAY_SECONDS / max_writes_per_day / earliest)


class VersionQuotaGate:
    """Says, per target of one credential, whether a write may go ahead now.

    ``limits`` maps a store name (``secretsmanager:<id>``) to its ``max_writes_per_day``;
    targets not in it (SSM, files) are never held."""

    def __init__(
        self,
        credential: str,
        limits: Mapping[str, int],
        *,
        schedule: Schedule,
        clock: Clock,
        hold: timedelta = QUOTA_HOLD,
    ) -> None:
        self.credential = credential
        self.limits = dict(limits)
        self._schedule = schedule
        self._clock = clock
        self._hold = hold
        self._lock = threading.Lock()
        self._exceeded: dict[str, Held] = {}
        for name, limit in self.limits.items():
            if limit > SM_VERSION_QUOTA:
                log.warning(
                    "credential=%s target=%s max_writes_per_day=%d is above AWS's quota of "
                    "%d versions a secret in 24 h: AWS will refuse writes once it is reached "
                    "(only for moto, LocalStack or a raised quota)",
                    credential,
                    name,
                    limit,
                    SM_VERSION_QUOTA,
                )

    def check(self, store: str, token: Token) -> Held | None:
        """The reason not to write ``token`` to ``store`` now, or None."""
        limit = self.limits.get(store)
        if limit is None:
            return None
        with self._lock:
            held = self._exceeded.get(store)
            if held is not None and held.until is not None:
                if self._clock.now() < held.until:
                    return held
                del self._exceeded[store]
        per_day = projected_writes_per_day(token, self._schedule)
        if per_day <= limit:
            return None
        lifetime = token.lifetime.total_seconds()
        needed = lifespan_needed(self._schedule, limit)
        return Held(
            f"credential={self.credential} target={store} refused before any write: "
            f"{per_day:.0f} versions/day projected (token lifetime {lifetime:.0f} s, "
            f"refreshed at {self._schedule.ratio:.0%}) > max_writes_per_day {limit} "
            f"(AWS refuses new versions past {SM_VERSION_QUOTA} in 24 h). Fix: publish this "
            "token to an ssm target instead, or raise this client's access token lifespan in "
            f"Keycloak (a per-client setting) to at least {needed} s",
            EXIT_USAGE,
        )

    def failed(self, store: str, error: StoreError) -> Held | None:
        """A write to ``store`` failed: hold the target when a quota refused it."""
        if store not in self.limits or not isinstance(error, StoreQuotaExceeded):
            return None
        until = self._clock.now() + self._hold
        held = Held(
            f"credential={self.credential} target={store} refused by the Secrets Manager "
            f"version quota (at most {SM_VERSION_QUOTA} versions a secret in 24 h): no write "
            f"until {format_instant(until)}. Fix: publish this token to an ssm target "
            "instead, or raise this client's access token lifespan in Keycloak (a per-client "
            f"setting) to at least {lifespan_needed(self._schedule, self.limits[store])} s",
            EXIT_FAILED,
            until,
        )
        with self._lock:
            self._exceeded[store] = held
        return held


def gate_for(
    credential: Credential, schedule: Schedule, clock: Clock, env: Mapping[str, str]
) -> VersionQuotaGate | None:
    """The gate of a credential's Secrets Manager targets (None when it has none).

    A target's own ``max_writes_per_day`` wins; else ``ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY``
    (in both configuration modes); else 90."""
    targets = [target for target in credential.targets if target.type == "secretsmanager"]
    if not targets:
        return None  # before the environment is read: 5,000 SSM credentials, 5,000 reads
    default = _env_limit(env)
    limits = {target.label: target.max_writes_per_day or default for target in targets}
    return VersionQuotaGate(credential.name, limits, schedule=schedule, clock=clock)


def _env_limit(env: Mapping[str, str]) -> int:
    raw = (env.get(ENV_KEY) or "").strip()
    if not raw:
        return DEFAULT_MAX_WRITES_PER_DAY
    if not re.fullmatch(r"[0-9]{1,9}", raw) or int(raw) < 1:
        raise ConfigError(f"{ENV_KEY} must be a whole number >= 1: {raw!r}")
    return int(raw)


def versions_created(store: TokenStore, now: datetime, reading: Reading) -> int | None:
    """Versions of a Secrets Manager store's secret created in the 24 h before ``now``
    (None for other stores); ``reading`` is what the store holds (missing: 0)."""
    count_since = getattr(store, "versions_created_since", None)
    if count_since is None:
        return None
    if reading.is_missing:
        return 0
    return int(count_since(now - timedelta(days=1)))


def versions_line(store: TokenStore, now: datetime) -> str | None:
    """``"N of 100 versions created in the last 24 h"`` for a Secrets Manager store."""
    if not hasattr(store, "versions_created_since"):
        return None
    count = versions_created(store, now, store.get())
    if count is None:
        return None
    return f"{count} of {SM_VERSION_QUOTA} versions created in the last 24 h"


def write_rate_advice(credential: Credential, token: Token) -> str | None:
    """A warning when a Secrets Manager target would be written faster than AWS advises."""
    sm_targets = [t.ref for t in credential.targets if t.type == "secretsmanager"]
    if not sm_targets:
        return None
    interval = token.lifetime.total_seconds() * credential.refresh.ratio
    advised_lifespan = SM_ADVISED_WRITE_INTERVAL_SECONDS / credential.refresh.ratio
    if interval >= SM_ADVISED_WRITE_INTERVAL_SECONDS:
        return None
    return (
        f"credential={credential.name} secretsmanager target(s) {', '.join(sm_targets)} "
        f"will be written every ~{interval:.0f} s; AWS advises at most one PutSecretValue "
        f"per ~{SM_ADVISED_WRITE_INTERVAL_SECONDS:.0f} s sustained (versions pile up toward "
        "the quota). Use an ssm target for short-lived tokens, or raise the client's access "
        f"token lifespan to at least {advised_lifespan:.0f} s"
    )
