"""Factories for the integration tests: token stubs, fault proxies, rotator processes.

Each factory starts what it is asked for and stops all of it after the test. The moto
server and the ``aws`` fixture come from ``tests/fixtures/aws.py``, the Node peer from
``tests/fixtures/oidc.py`` (both loaded by ``tests/conftest.py``); processes, config,
environment and watchers are plain code in ``tests/harness/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.testing import AwsLimitsProxy, FaultProxy, KeycloakStub
from tests.harness.cli import CLIENT_ID, STUB_SECRET, closed_port
from tests.harness.env import rotator_env
from tests.harness.factories import ProxyFactory, Spawn, StubFactory
from tests.harness.health import GOOD_SECRET, SECRET_ENV
from tests.harness.leaks import CLIENT_ID as LEAK_CLIENT_ID
from tests.harness.leaks import SECRET as LEAK_SECRET
from tests.harness.leaks import RecordingStub
from tests.harness.process import Daemon, RotatorProcess


@pytest.fixture
def make_stub() -> Iterator[StubFactory]:
    """``make_stub(**kwargs)``: a started ``KeycloakStub``; all are stopped after the test."""
    stubs: list[KeycloakStub] = []

    def make(**kwargs: Any) -> KeycloakStub:
        stub = KeycloakStub(**kwargs)
        stubs.append(stub)
        return stub.start()

    yield make
    for stub in stubs:
        stub.stop()


@pytest.fixture
def stub(make_stub: StubFactory) -> KeycloakStub:
    """A started ``KeycloakStub`` with its defaults (client ``oms-client``/``oms-secret``)."""
    return make_stub()


@pytest.fixture
def start_daemon(tmp_path: Path, moto_server: Any) -> Iterator[Callable[..., Daemon]]:
    """``start_daemon(config_text, secret=...)``: ``rotator run`` with that TOML file, its
    health server on a free port (``daemon.get(path)``), the client secret in
    ``OMS_CLIENT_SECRET``; returned once /healthz answers; every daemon killed after."""
    started: list[Daemon] = []

    def start(config: str, *, secret: str = GOOD_SECRET) -> Daemon:
        n = len(started)
        config_path = tmp_path / f"rotator-{n}.toml"
        config_path.write_text(config)
        env = rotator_env(
            moto_server.endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            ROTATOR_CONFIG=str(config_path),
            **{SECRET_ENV: secret},
        )
        daemon = Daemon(env, tmp_path, name=f"daemon-{n}", metrics_port=closed_port())
        started.append(daemon)
        daemon.wait_for("the health server", lambda: daemon.get("/healthz").ok)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def make_proxy() -> Iterator[ProxyFactory]:
    """``make_proxy(upstream, **kwargs)``: a started ``FaultProxy`` that also enforces AWS's
    limits on AWS calls (``AwsLimitsProxy``); all stopped after."""
    proxies: list[FaultProxy] = []

    def make(upstream: str, **kwargs: Any) -> FaultProxy:
        proxy = AwsLimitsProxy(upstream, **kwargs)
        proxies.append(proxy)
        return proxy.start()

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """``spawn(*args, env=...)``: ``python -m rotator ARGS`` in the background, log in
    memory; every process is stopped (SIGTERM, then SIGKILL) after the test."""
    procs: list[RotatorProcess] = []

    def start(*args: str | Path, env: dict[str, str]) -> RotatorProcess:
        proc = RotatorProcess([str(a) for a in args], env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def keycloak(make_stub: StubFactory) -> StubFactory:
    """``keycloak(**kwargs)``: ``make_stub`` with the CLI tests' client (``CLIENT_ID`` /
    ``STUB_SECRET``) unless told otherwise."""

    def make(**kwargs: Any) -> KeycloakStub:
        kwargs.setdefault("clients", {CLIENT_ID: STUB_SECRET})
        return make_stub(**kwargs)

    return make


@pytest.fixture
def kc(keycloak: StubFactory) -> KeycloakStub:
    """A stub with Keycloak's default 300 s lifespan: a published token stays fresh."""
    return keycloak(access_token_lifespan=300)


@pytest.fixture
def leak_stub() -> Iterator[RecordingStub]:
    """A stub that records refresh tokens, knowing the leak tests' client and secret."""
    with RecordingStub(
        clients={LEAK_CLIENT_ID: LEAK_SECRET}, access_token_lifespan=30, use_refresh_tokens=True
    ) as keycloak:
        yield keycloak
