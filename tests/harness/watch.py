"""Watch one store from a thread, as a consumer reads it, and check every value seen.

``StoreWatcher(name, read)`` reads one store in a loop until ``stop()`` and keeps every
observation; ``check(issued)`` verifies each read: a complete published document, a
token the server issued, ``expires_at`` never going backwards, and optionally never
expired when read. The readers (``file_reader``, ``secretsmanager_reader``,
``ssm_reader``) are independent of rotator's store classes on purpose.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.fixtures.aws import AwsEnv, client_config
from tests.harness.poll import Poller, Reader

INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def file_reader(path: Path) -> Reader:
    def read() -> str | None:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    return read


def secretsmanager_reader(aws: AwsEnv, secret_id: str) -> Reader:
    client = aws.client("secretsmanager", config=client_config())

    def read() -> str | None:
        try:
            response = client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
        except client.exceptions.ResourceNotFoundException:
            return None
        value: str | None = response.get("SecretString")
        return value if value is not None else "<SecretBinary>"

    return read


def ssm_reader(aws: AwsEnv, name: str) -> Reader:
    client = aws.client("ssm", config=client_config())

    def read() -> str | None:
        try:
            response = client.get_parameter(Name=name, WithDecryption=True)
        except client.exceptions.ParameterNotFound:
            return None
        value: str = response["Parameter"]["Value"]
        return value

    return read


# ---------------------------------------------------------------- the watcher


@dataclass(frozen=True)
class Observation:
    at: float  # time.time() when the read started
    value: str | None


@dataclass
class Verdict:
    reads: int
    tokens: list[str]  # distinct access tokens, in the order first seen
    problems: list[str] = field(default_factory=list)
    backwards: list[tuple[float, float]] = field(default_factory=list)  # (from, to) epoch s
    expired_reads: int = 0

    def problems_beyond_the_ssm_race(self, *, races: int) -> list[str]:
        """The problems, less at most ``races`` steps back of ``expires_at``: Parameter
        Store has no conditional write (``rotator/stores/ssm.py``), so replicas replacing
        one revoked token at once may leave the one that expires a second or two sooner
        (still valid) until the next rotation. More steps back than that stay problems."""
        if len(self.backwards) > races:
            return self.problems
        return [p for p in self.problems if "expires_at went backwards" not in p]


def parse_instant(text: Any) -> float:
    if not isinstance(text, str) or not INSTANT.match(text):
        raise ValueError(f"not an RFC 3339 UTC instant with Z: {text!r}")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


class StoreWatcher(Poller):
    """Reads one store in a loop until stop(); keeps every observation."""

    def __init__(self, name: str, read: Reader, *, interval: float = 0.01) -> None:
        super().__init__({name: read}, interval=interval, name=f"watch-{name}")
        self.store = name
        self.observations: list[Observation] = []
        self.errors: list[str] = []
        self._values: set[str] = set()  # distinct raw values, counted as they come

    def record(self, store: str, started: float, ended: float, value: str | None) -> None:
        self.observations.append(Observation(started, value))
        if value is not None:
            self._values.add(value)

    def record_error(self, store: str, started: float, ended: float, exc: Exception) -> None:
        self.errors.append(f"{started:.3f} {type(exc).__name__}: {exc}")

    @property
    def distinct_values(self) -> int:
        """How many different values were read so far (cheap: no parsing)."""
        return len(self._values)

    def revoked_reads_after_replacement(self, revoked: Collection[str]) -> int:
        """Reads of a token in ``revoked`` after the first read of one that is not."""
        replaced = False
        count = 0
        for obs in list(self.observations):
            if obs.value is None:
                continue
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                is_revoked = json.loads(obs.value)["access_token"] in revoked
                count += replaced and is_revoked
                replaced = replaced or not is_revoked
        return count

    def distinct_tokens(self) -> list[str]:
        seen: dict[str, None] = {}
        for obs in list(self.observations):
            if obs.value is None:
                continue
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                seen.setdefault(json.loads(obs.value)["access_token"], None)
        return list(seen)

    def check(self, issued: Iterable[str], *, fresh: bool = False) -> Verdict:
        """Every read a complete document of an issued token, ``expires_at`` monotonic;
        with ``fresh``, also never expired at the moment the read started."""
        issued_set = set(issued)
        verdict = Verdict(reads=len(self.observations), tokens=[])
        seen: dict[str, None] = {}
        present = False
        last_expiry: float | None = None
        for obs in list(self.observations):
            when = f"{self.store} read at {obs.at:.3f}"
            if obs.value is None:
                if present:
                    verdict.problems.append(f"{when}: missing after a publish")
                continue
            present = True
            try:
                doc = json.loads(obs.value)
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                token = doc["access_token"]
                if not isinstance(token, str) or not token:
                    raise ValueError("access_token is not a non-empty string")
                if doc.get("token_type") != "Bearer":
                    raise ValueError(f"token_type {doc.get('token_type')!r}")
                expires_at = parse_instant(doc["expires_at"])
                issued_at = parse_instant(doc["issued_at"])
                extra = set(doc) - {
                    "access_token",
                    "token_type",
                    "expires_at",
                    "issued_at",
                    "scope",
                }
                if extra:
                    raise ValueError(f"unexpected keys {sorted(extra)}")
            except (ValueError, KeyError) as exc:
                verdict.problems.append(f"{when}: incomplete document ({exc}): {obs.value[:80]!r}")
                continue
            if token not in issued_set:
                verdict.problems.append(f"{when}: a token the server never issued")
            if issued_at > expires_at:
                verdict.problems.append(f"{when}: issued_at after expires_at")
            if last_expiry is not None and expires_at < last_expiry:
                verdict.backwards.append((last_expiry, expires_at))
                verdict.problems.append(
                    f"{when}: expires_at went backwards by {last_expiry - expires_at:.0f}s"
                )
            last_expiry = expires_at if last_expiry is None else max(last_expiry, expires_at)
            if fresh and expires_at <= obs.at:
                verdict.expired_reads += 1
                ago = obs.at - expires_at
                verdict.problems.append(
                    f"{when}: expired {ago:.3f}s ago (expires_at {doc['expires_at']})"
                )
            seen.setdefault(token, None)
        verdict.tokens = list(seen)
        return verdict
