"""Graceful shutdown: SIGTERM during a back-off ends the daemon at once; during a slow
publish it lets the publish complete, in ``run`` and in ``once``."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from rotator.testing import FaultProxy, KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.fixtures.faults import rotator_env
from tests.harness.config import (
    SECRET_ID,
    credential,
    file_target,
    write_config,
)
from tests.harness.factories import ProxyFactory, Spawn, StubFactory
from tests.harness.history import secretsmanager_reader, token_of
from tests.harness.process import run_once, wait_until

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------- graceful shutdown


def test_sigterm_during_a_back_off_ends_the_daemon_at_once(
    tmp_path: Path, make_stub: StubFactory, spawn: Spawn
) -> None:
    kc = make_stub(access_token_lifespan=60)
    # A back-off of 10 minutes: a daemon that waited it out would outlive every wait below.
    kc.enqueue(429, "", headers={"Retry-After": "600"})
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [file_target(path)], max_retry_wait_seconds=900.0)],
    )
    daemon = spawn("run", "--config", config, env=rotator_env())
    daemon.wait_for(r"rotation failed credential=oms attempt=1 .*retry_in=600.0s", timeout=60)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    daemon.wait_for(r"daemon stopped", timeout=10)
    assert kc.count() == 1


def _slow_publish_setup(
    tmp_path: Path, aws: AwsEnv, make_stub: StubFactory, make_proxy: ProxyFactory, slow: float
) -> tuple[KeycloakStub, FaultProxy, Path, str | None]:
    """A secret holding a first token; every later PutSecretValue takes ``slow`` seconds
    (the new version is then promoted to AWSCURRENT by UpdateSecretVersionStage)."""
    kc = make_stub(access_token_lifespan=60)
    proxy = make_proxy(aws.endpoint)
    aws.secretsmanager.create_secret(Name=SECRET_ID)  # no value yet: the write is a Put
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [{"type": "secretsmanager", "secret_id": SECRET_ID}])],
    )
    assert run_once(config, rotator_env(proxy.url)).returncode == 0
    first = token_of(secretsmanager_reader(aws.secretsmanager, SECRET_ID)())
    kc.set_access_token_lifespan(90)  # a later token, so the next one must be written
    proxy.add_latency(slow, target="PutSecretValue")
    return kc, proxy, config, first


def _when_put_in_flight(proxy: FaultProxy) -> None:
    """Return once a slowed PutSecretValue is in flight."""

    def slowed() -> bool:
        return any(
            r.target and "PutSecretValue" in r.target and r.fault == "latency"
            for r in proxy.requests()
        )

    wait_until(slowed, 10, "a slowed PutSecretValue")
    time.sleep(0.3)


def test_sigterm_during_a_slow_publish_lets_it_complete(
    tmp_path: Path, aws: AwsEnv, make_stub: StubFactory, make_proxy: ProxyFactory, spawn: Spawn
) -> None:
    slow = 2.5
    kc, proxy, config, _ = _slow_publish_setup(tmp_path, aws, make_stub, make_proxy, slow)
    aws.secretsmanager.delete_secret(SecretId=SECRET_ID, ForceDeleteWithoutRecovery=True)
    aws.secretsmanager.create_secret(Name=SECRET_ID)  # empty again: the daemon must write
    daemon = spawn("run", "--config", config, env=rotator_env(proxy.url))
    _when_put_in_flight(proxy)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0, daemon.log()  # a hang detector: the publish takes 2.5 s
    log = daemon.log()
    order = [
        log.index("received SIGTERM"),
        log.index("published credential=oms target=secretsmanager:"),
        log.index("daemon stopped"),
    ]
    assert order == sorted(order), log
    held = token_of(secretsmanager_reader(aws.secretsmanager, SECRET_ID)())
    assert held in kc.issued_tokens()
    # Counts, not the time it took: after the signal nothing new was started, neither a
    # token request nor another write (the set-up's and the daemon's one PutSecretValue).
    assert kc.count() == 2
    puts = [r for r in proxy.requests() if r.target and "PutSecretValue" in r.target]
    assert len(puts) == 2, puts


def test_sigterm_during_a_slow_publish_in_once_lets_it_complete(
    tmp_path: Path, aws: AwsEnv, make_stub: StubFactory, make_proxy: ProxyFactory, spawn: Spawn
) -> None:
    slow = 2.5
    kc, proxy, config, first = _slow_publish_setup(tmp_path, aws, make_stub, make_proxy, slow)
    once = spawn("once", "--force", "--config", config, env=rotator_env(proxy.url))
    _when_put_in_flight(proxy)
    once.signal(signal.SIGTERM)
    code = once.wait(10)
    time.sleep(slow)  # let the proxy finish forwarding whatever it was given
    held = token_of(secretsmanager_reader(aws.secretsmanager, SECRET_ID)())
    assert kc.count() == 2
    # the publish completed: the second token is AWSCURRENT, and the run says so
    assert (code, held != first, held in kc.issued_tokens()) == (0, True, True), once.log()
