"""Reload the configuration under a running daemon (issue 13): credentials added start,
removed ones stop (their tokens stay), changed ones restart from what is published
with no token request; an invalid configuration is refused and changes nothing.

Each credential has its own client at the KeycloakStub, so token requests are counted
per credential. Tokens live 60 s: no planned rotation happens during a test, so every
token request is one the reload caused.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.procs import Daemon, StoreWatcher, cli_env, file_reader, run_cli
from tests.harness.config import file_credential, replace_config
from tests.harness.probes import health_port, page
from tests.harness.process import wait_for_daemons

pytestmark = pytest.mark.timeout(120)

CLIENTS = {"client-a": "secret-a", "client-b": "secret-b", "client-c": "secret-c"}
WAIT = 30.0


@pytest.fixture
def stub() -> Iterator[KeycloakStub]:
    with KeycloakStub(clients=CLIENTS, access_token_lifespan=60) as kc:
        yield kc


def credential(stub: KeycloakStub, folder: Path, name: str, *targets: str, extra: str = "") -> str:
    return file_credential(name, stub.token_url, f"client-{name}", folder, *targets, extra=extra)


def write(path: Path, text: str) -> None:
    replace_config(path, text)


def requests_of(stub: KeycloakStub, client: str) -> int:
    return sum(1 for r in stub.requests() if r.client_id == client and r.outcome == "ok")


def wait_for(what: str, ready: Callable[[], bool], daemon: Daemon) -> None:
    wait_for_daemons(what, ready, [daemon], timeout=WAIT, poll=0.02)


def test_reload_adds_removes_and_changes_credentials(stub: KeycloakStub, tmp_path: Path) -> None:
    config = tmp_path / "rotator.toml"
    write(config, credential(stub, tmp_path, "a", "a1") + credential(stub, tmp_path, "b", "b1"))
    env = cli_env(
        SECRET_A="secret-a", SECRET_B="secret-b", SECRET_C="secret-c", ROTATOR_CONFIG=str(config)
    )
    watchers = {
        t: StoreWatcher(t, file_reader(tmp_path / f"{t}.json"), interval=0.02)
        for t in ("a1", "a2", "b1", "c1")
    }
    for watcher in watchers.values():
        watcher.start()
    try:
        with Daemon(env, tmp_path / "logs") as daemon:
            port = health_port(daemon, timeout=WAIT)
            wait_for("ready", lambda: page(port, "/readyz")[0] == 200, daemon)
            b_token = (tmp_path / "b1.json").read_text()

            # 1. by a change of the file (as a ConfigMap volume update does): a gets a
            # second target, b is removed, c is added
            write(
                config,
                credential(stub, tmp_path, "a", "a1", "a2") + credential(stub, tmp_path, "c", "c1"),
            )
            wait_for("c published", lambda: watchers["c1"].distinct_values == 1, daemon)
            wait_for("a copied", lambda: watchers["a2"].distinct_values == 1, daemon)
            ready, body = page(port, "/readyz")
            _, metrics = page(port, "/metrics")
            status = run_cli(["status", "--json"], env)

            # 2. an invalid configuration, by SIGHUP: refused, nothing changes
            requests_before = len(stub.requests())
            config.write_text('[[credentials]]\nname = "a"\n')
            time.sleep(1.5)  # the poll sees the file change first; then SIGHUP as well
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for(
                "refusal",
                lambda: daemon.stderr_text().count("reload refused") >= 2,
                daemon,
            )
            _, after_refusal = page(port, "/readyz")
            requests_after = len(stub.requests())
            result = daemon.stop()
    finally:
        for watcher in watchers.values():
            watcher.stop()

    assert result.returncode == 0, result.describe()
    # one token request per credential, ever: the changed a adopted its published token
    assert [requests_of(stub, f"client-{n}") for n in "abc"] == [1, 1, 1]
    assert requests_after == requests_before
    assert watchers["a1"].distinct_tokens() == watchers["a2"].distinct_tokens()
    # the removed credential's token is left in place, untouched
    assert (tmp_path / "b1.json").read_text() == b_token
    for name, watcher in watchers.items():
        verdict = watcher.check(stub.issued_tokens(), fresh=True)
        assert not verdict.problems, (name, verdict.problems[:5])
        assert not watcher.errors
    log = result.stderr
    assert "configuration reloaded (config file changed) added=c removed=b changed=a" in log
    after_reload = log[log.index("configuration reloaded") :]
    first_a = re.search(r" (\w+) credential=a expires_at=", after_reload)
    assert first_a is not None and first_a.group(1) == "adopted"
    # /readyz, /metrics and `rotator status` reflect the change at once
    assert ready == 200 and set(json.loads(body)["credentials"]) == {"a", "c"}
    assert 'credential="b"' not in metrics and 'credential="c"' in metrics
    assert 'rotator_config_reloads_total{result="applied"} 1.0' in metrics
    rows = json.loads(status.stdout)
    assert sorted((r["credential"], r["state"]) for r in rows) == [
        ("a", "fresh"),
        ("a", "fresh"),
        ("c", "fresh"),
    ], status.describe()
    # the refusals: one line each, the running configuration kept
    refusals = [line for line in log.splitlines() if "reload refused" in line]
    assert len(refusals) == 2 and "keeping the running configuration" in refusals[0]
    assert "Traceback" not in log
    assert set(json.loads(after_refusal)["credentials"]) == {"a", "c"}
