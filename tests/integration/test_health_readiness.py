"""The daemon's /healthz and /readyz when it is not ready: a client the token endpoint
rejects, a token shorter than the readiness margin, a rotation stuck on the network.
``start_daemon`` comes from ``tests/integration/conftest.py``; the healthy daemon is in
``test_health.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rotator.stores import FileStore
from rotator.testing import FaultProxy, KeycloakStub
from tests.harness.factories import StubFactory
from tests.harness.health import (
    CREDENTIAL,
    WRONG_SECRET,
    metrics,
    sample,
    toml_config,
)
from tests.harness.process import Daemon

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------------------------------
# a daemon that never gets a token
# ------------------------------------------------------------------------------------------


def test_never_ready_when_the_token_endpoint_rejects_the_client(
    stub: KeycloakStub, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    token_file = tmp_path / "token.json"
    daemon = start_daemon(
        toml_config(
            token_url=stub.token_url,
            targets=[{"type": "file", "path": str(token_file)}],
            refresh={"max_retry_wait_seconds": 1},
        ),
        secret=WRONG_SECRET,
    )
    rejected = {
        "credential": CREDENTIAL,
        "grant": "client_credentials",
        "outcome": "unauthorized_client",
    }
    seen_ready: list[int] = []

    def two_failed_attempts() -> bool:
        seen_ready.append(daemon.get("/readyz").status_code)
        value = sample(metrics(daemon), "rotator_token_requests_total", **rejected)
        return value is not None and value >= 2

    daemon.wait_for("two rejected token requests", two_failed_attempts)
    assert set(seen_ready) == {503}

    ready = daemon.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready"
    assert ready.json()["credentials"][CREDENTIAL] == {
        "ready": False,
        "seconds_left": None,
        "targets_behind": [],
    }
    for _ in range(100):  # between two attempts it says "failing"; during one "running"
        health = daemon.get("/healthz")
        assert health.status_code == 200  # alive: the scheduler keeps trying
        state = health.json()["credentials"][CREDENTIAL]
        if state["state"] != "running":
            break
        time.sleep(0.05)
    assert state["consecutive_failures"] >= 2
    assert state["state"] == "failing" and "last_error" not in state  # details: the log
    assert "Invalid client or Invalid client credentials" in daemon.stderr

    m = metrics(daemon)
    cred = {"credential": CREDENTIAL}
    requests_seen = sample(m, "rotator_token_requests_total", **rejected)
    errors = sample(m, "rotator_rotations_total", result="error", **cred)
    retries = sample(m, "rotator_retries_total", **cred)
    assert requests_seen is not None
    assert errors is not None
    assert retries is not None
    assert requests_seen >= 2
    assert errors >= 2
    assert retries >= 2
    assert abs(errors - retries) <= 1  # read while a step may be finishing
    assert sample(m, "rotator_credential_healthy", **cred) == 0
    assert sample(m, "rotator_token_expiry_timestamp_seconds", **cred) is None
    assert sample(m, "rotator_last_success_timestamp_seconds", **cred) is None
    assert sample(m, "rotator_rotations_total", result="rotated", **cred) is None
    assert not token_file.exists()

    assert daemon.terminate() == 0
    for text in (daemon.stderr, json.dumps(health.json()), json.dumps(ready.json())):
        assert WRONG_SECRET not in text


def test_not_ready_while_the_published_token_has_less_than_the_margin_left(
    start_daemon: Callable[..., Daemon], make_stub: StubFactory, tmp_path: Path
) -> None:
    token_file = tmp_path / "token.json"
    # A 20 s token against the 30 s readiness margin: published, never enough margin.
    short = make_stub(access_token_lifespan=20)
    daemon = start_daemon(
        toml_config(
            token_url=short.token_url,
            targets=[{"type": "file", "path": str(token_file)}],
        )
    )
    daemon.wait_for("a published token", lambda: FileStore(token_file).get().token is not None)
    rotated = {"credential": CREDENTIAL, "result": "rotated"}
    daemon.wait_for(
        "the rotation to be counted",
        lambda: sample(metrics(daemon), "rotator_rotations_total", **rotated) == 1,
    )
    ready = daemon.get("/readyz")
    assert ready.status_code == 503
    state = ready.json()["credentials"][CREDENTIAL]
    assert state["ready"] is False
    assert 0 < state["seconds_left"] <= 20
    assert daemon.get("/healthz").status_code == 200
    assert daemon.terminate() == 0


# ------------------------------------------------------------------------------------------
# probes while a rotation is stuck
# ------------------------------------------------------------------------------------------


def test_probes_answer_at_once_while_a_rotation_is_stuck(
    stub: KeycloakStub, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    token_file = tmp_path / "token.json"
    with FaultProxy(stub.base_url) as proxy:
        proxy.stall(times=None, path_prefix=stub.token_path)
        daemon = start_daemon(
            toml_config(
                token_url=proxy.url + stub.token_path,
                targets=[{"type": "file", "path": str(token_file)}],
                # a stall far longer than the test: every probe below is answered inside it
                refresh={"read_timeout_seconds": 600, "max_retry_wait_seconds": 1},
            )
        )
        daemon.wait_for(
            "the stuck token request", lambda: proxy.count(path_prefix=stub.token_path) >= 1
        )
        assert stub.count() == 0

        for _ in range(5):
            for path, status in (("/healthz", 200), ("/readyz", 503), ("/metrics", 200)):
                assert daemon.get(path).status_code == status, path
        # order, not speed: all fifteen answers came while the token request was still stuck
        [stuck] = proxy.requests()
        assert (stuck.fault, stuck.status) == ("stall", None)
        health = daemon.get("/healthz").json()["credentials"][CREDENTIAL]
        assert health["consecutive_failures"] == 0  # stuck, not failed
        assert proxy.count(path_prefix=stub.token_path) == 1
        assert stub.count() == 0

        # Release the stall: the stuck request fails, the next attempt gets a token.
        proxy.clear()
        daemon.wait_for("readiness", lambda: daemon.get("/readyz").status_code == 200)
        published = FileStore(token_file).get().token
        assert published is not None
        assert stub.is_active(published.access_token)
        m = metrics(daemon)
        cred = {"credential": CREDENTIAL}
        assert sample(m, "rotator_retries_total", **cred) == 1
        assert sample(m, "rotator_rotations_total", result="error", **cred) == 1
        assert sample(m, "rotator_rotations_total", result="rotated", **cred) == 1
        ok = {"grant": "client_credentials", "outcome": "ok", **cred}
        assert sample(m, "rotator_token_requests_total", **ok) == 1
        failed = sum(
            value
            for (name, labels), value in m.items()
            if name == "rotator_token_requests_total"
            and ("outcome", "ok") not in labels
            and ("credential", CREDENTIAL) in labels
        )
        assert failed == 1
        assert daemon.terminate() == 0
