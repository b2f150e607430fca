"""Building many rotators does per credential only what differs per credential: the
token URL's check (two URL parsers and an address parse) once per URL, and the Secrets
Manager write quota looked up in the environment only for credentials that have such a
target."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from rotator import oauth
from rotator.app import build
from rotator.config import from_mapping
from rotator.errors import ConfigError
from rotator.schedule import Schedule
from rotator.stores.quota import ENV_KEY, gate_for
from tests.fakes import FakeClock, FakeSession


def _cred(k: int, target: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": f"c{k}",
        "token_url": "https://kc.example/realms/r/token",
        "client_id": "oms-client",
        "client_secret_env": "OMS_SECRET",
        "targets": [target or {"type": "ssm", "parameter": f"/p/{k}", "region": "eu-west-1"}],
    }


class CountingEnv(Mapping[str, str]):
    """An environment that counts the lookups of one variable."""

    def __init__(self, data: dict[str, str], watched: str) -> None:
        self._data = data
        self._watched = watched
        self.lookups = 0

    def __getitem__(self, key: str) -> str:
        if key == self._watched:
            self.lookups += 1
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_a_token_url_is_checked_once_for_every_credential(clock: FakeClock) -> None:
    settings = from_mapping({"credentials": [_cred(k) for k in range(50)]})
    app = build(settings, clock=clock, session=FakeSession(), env={"OMS_SECRET": "x"})
    oauth.check_http_url.cache_clear()
    for credential in settings.credentials:
        app.token_client(credential)
    info = oauth.check_http_url.cache_info()
    assert (info.misses, info.hits) == (1, 49)


def test_a_refused_url_is_refused_every_time_naming_where() -> None:
    for where in ("token_url", "verify_url"):
        with pytest.raises(ConfigError, match=f"^{where}: plain http:// is refused"):
            oauth.check_http_url("http://kc.example/token", where)
    with pytest.raises(ConfigError, match="^probe_url is not a valid URL$"):
        oauth.check_http_url("https://[::1/token", "probe_url")
    oauth.check_http_url("http://127.0.0.1:8080/token", "token_url")  # loopback: accepted


def test_the_quota_variable_is_read_only_for_secrets_manager_targets(clock: FakeClock) -> None:
    sm = {"type": "secretsmanager", "secret_id": "s", "region": "eu-west-1"}
    settings = from_mapping({"credentials": [_cred(0), _cred(1, sm)]})
    ssm_only, with_sm = settings.credentials
    env = CountingEnv({ENV_KEY: "50"}, ENV_KEY)
    schedule = Schedule()
    assert gate_for(ssm_only, schedule, clock, env) is None
    assert env.lookups == 0
    gate = gate_for(with_sm, schedule, clock, env)
    assert gate is not None and env.lookups == 1
