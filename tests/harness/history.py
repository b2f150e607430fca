"""Watch several stores at once and check what a consumer could have seen at each moment.

``HistoryWatcher(readers)`` polls every store from one thread; ``check(issued)`` asserts,
over every observation, that once something is published the store is never empty,
every value is a complete document of a token the server issued, ``expires_at`` never
goes backwards nor claims a longer life than the token has, and (outside the windows
where expiry is allowed) the token is active by the server's own rule.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.harness.poll import Poller, Reader


def jwt_exp(token: str) -> int:
    """The ``exp`` claim of a stub-issued JWT (whole seconds)."""
    part = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    exp = claims["exp"]
    assert isinstance(exp, int)
    return exp


def stub_active_at(token: str, at: float) -> bool:
    """Keycloak's (and the stub's) rule: active while ``floor(now) <= exp``."""
    return int(at // 1) <= jwt_exp(token)


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- the store watcher


@dataclass(frozen=True)
class Observation:
    """One read of one store: ``value`` None means nothing was published."""

    started: float
    ended: float
    store: str
    value: str | None
    error: str | None = None

    @property
    def time(self) -> float:
        return (self.started + self.ended) / 2


def file_reader(path: Path) -> Reader:
    def read() -> str | None:
        try:
            return path.read_text()
        except FileNotFoundError:
            return None

    return read


def secretsmanager_reader(client: Any, secret_id: str) -> Reader:
    def read() -> str | None:
        try:
            response = client.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
        except client.exceptions.ResourceNotFoundException:
            return None
        value = response.get("SecretString")
        assert isinstance(value, str)
        return value

    return read


def ssm_reader(client: Any, parameter: str) -> Reader:
    def read() -> str | None:
        try:
            response = client.get_parameter(Name=parameter, WithDecryption=True)
        except client.exceptions.ParameterNotFound:
            return None
        value = response["Parameter"]["Value"]
        assert isinstance(value, str)
        return value

    return read


@dataclass
class StoreHistory:
    """What one store held, in order: one entry per distinct value."""

    store: str
    reads: int = 0
    tokens: list[str] = field(default_factory=list)
    first_seen: dict[str, float] = field(default_factory=dict)
    expires_at: dict[str, float] = field(default_factory=dict)

    def first_published_at(self) -> float | None:
        return min(self.first_seen.values(), default=None)


class HistoryWatcher(Poller):
    """Polls every store in ``readers`` from one thread and keeps every observation.

    ``check()`` then asserts what a consumer could have seen at any moment:
    once something is published the store is never empty; every value is a
    complete document; every token was issued by the server; ``expires_at``
    never goes backwards and never claims a longer life than the token has;
    and, outside the windows where expiry is allowed (an outage longer than a
    token's lifetime), the token is active by the server's own rule.
    """

    def __init__(self, readers: Mapping[str, Reader], interval: float = 0.04) -> None:
        super().__init__(readers, interval=interval)
        self._lock = threading.Lock()
        self.observations: list[Observation] = []

    def record(self, store: str, started: float, ended: float, value: str | None) -> None:
        with self._lock:
            self.observations.append(Observation(started, ended, store, value))

    def record_error(self, store: str, started: float, ended: float, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"  # failed by check()
        with self._lock:
            self.observations.append(Observation(started, ended, store, None, error))

    def snapshot(self, store: str | None = None) -> list[Observation]:
        with self._lock:
            return [o for o in self.observations if store is None or o.store == store]

    def current(self, store: str) -> str | None:
        """The last value seen in ``store``."""
        seen = self.snapshot(store)
        return seen[-1].value if seen else None

    def wait_for(
        self,
        predicate: Callable[[Observation], bool],
        *,
        store: str | None = None,
        timeout: float = 10.0,
        after: float = 0.0,
    ) -> Observation:
        """The first observation after ``after`` (epoch) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for obs in self.snapshot(store):
                if obs.started >= after and predicate(obs):
                    return obs
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching observation of {store or 'any store'}")
            time.sleep(0.02)

    def wait_for_reads_after(self, after: float, *, timeout: float = 30.0) -> None:
        """Until every store was read once more by a read started after ``after`` (epoch):
        whatever was published before ``after`` has then been seen, however slow the
        machine (call it after stopping the writer, before stopping the watcher)."""
        for store in self.readers:
            self.wait_for(lambda _: True, store=store, after=after, timeout=timeout)

    def wait_for_token(
        self, store: str, *, other_than: Iterable[str | None] = (), timeout: float = 10.0
    ) -> Observation:
        """The first observation of ``store`` holding a token not in ``other_than``."""
        excluded = {_token_of(v) for v in other_than if v is not None}

        def fresh(obs: Observation) -> bool:
            return obs.value is not None and _token_of(obs.value) not in excluded

        return self.wait_for(fresh, store=store, timeout=timeout)

    def check(
        self,
        issued: Iterable[str],
        *,
        expiry_allowed: Sequence[tuple[float, float]] = (),
        until: float | None = None,
    ) -> dict[str, StoreHistory]:
        """Assert the invariants over every observation (up to ``until``); per store, what
        it held."""
        issued = set(issued)
        histories: dict[str, StoreHistory] = {}
        for name in self.readers:
            history = StoreHistory(name)
            histories[name] = history
            published = False
            last_expiry = float("-inf")
            for obs in self.snapshot(name):
                if until is not None and obs.started > until:
                    break
                history.reads += 1
                where = f"{name} at {obs.time:.3f}"
                assert obs.error is None, f"{where}: read failed: {obs.error}"
                if obs.value is None:
                    assert not published, f"{where}: the store was emptied after a publish"
                    continue
                published = True
                doc = _document(obs.value, where)
                token = doc["access_token"]
                assert token in issued, f"{where}: a token the server never issued"
                expires_at = parse_time(doc["expires_at"])
                issued_at = parse_time(doc["issued_at"])
                assert issued_at < expires_at, f"{where}: issued_at >= expires_at"
                assert expires_at >= last_expiry, (
                    f"{where}: expires_at went backwards ({doc['expires_at']})"
                )
                assert expires_at <= jwt_exp(token), (
                    f"{where}: published expires_at {doc['expires_at']} is later than "
                    f"the token's real expiry {jwt_exp(token)}"
                )
                last_expiry = expires_at
                if token not in history.first_seen:
                    history.tokens.append(token)
                    history.first_seen[token] = obs.time
                    history.expires_at[token] = expires_at
                allowed = any(start <= obs.started <= end for start, end in expiry_allowed)
                if not allowed:
                    assert stub_active_at(token, obs.ended), (
                        f"{where}: the published token had expired (exp {jwt_exp(token)})"
                    )
        return histories


def _token_of(value: str) -> str:
    try:
        doc = json.loads(value)
    except ValueError:
        return value
    return str(doc.get("access_token")) if isinstance(doc, dict) else value


def _document(value: str, where: str) -> dict[str, str]:
    try:
        doc = json.loads(value)
    except ValueError:
        raise AssertionError(f"{where}: not a JSON document") from None
    assert isinstance(doc, dict), f"{where}: not a JSON object"
    for key in ("access_token", "token_type", "expires_at", "issued_at"):
        assert isinstance(doc.get(key), str) and doc[key], f"{where}: no {key}"
    assert doc["token_type"] == "Bearer", f"{where}: token_type {doc['token_type']!r}"
    assert "refresh_token" not in doc, f"{where}: a refresh token was published"
    return doc


def token_of(value: str | None) -> str | None:
    return None if value is None else _token_of(value)


def aws_readers(
    aws: Any, secret_id: str = "oms/token", parameter: str = "/oms/token"
) -> dict[str, Any]:
    """Readers of the ``aws`` fixture's moto, straight, never through a fault proxy."""
    return {
        "secretsmanager": secretsmanager_reader(aws.client("secretsmanager"), secret_id),
        "ssm": ssm_reader(aws.client("ssm"), parameter),
    }
