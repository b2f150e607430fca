"""The types of the factory fixtures in ``tests/integration/conftest.py``."""

from __future__ import annotations

from collections.abc import Callable

from rotator.testing import FaultProxy, KeycloakStub
from tests.harness.process import RotatorProcess

StubFactory = Callable[..., KeycloakStub]  # make_stub(**KeycloakStub kwargs), started
ProxyFactory = Callable[..., FaultProxy]  # make_proxy(upstream, **kwargs), started
Spawn = Callable[..., RotatorProcess]  # spawn(*args, env=...): python -m rotator ARGS
