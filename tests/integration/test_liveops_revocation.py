"""A published token revoked before its expiry is replaced at once (issue 13).

Daemons run as subprocesses against a KeycloakStub issuing long-lived (300 s) tokens,
so no planned rotation happens during a test: every token request after the first
is caused by a revocation. The probe runs every PROBE_INTERVAL seconds.

The revocation-to-replacement time is printed (and written to
``<pytest basetemp>/revocation-*.json``), never asserted: assertions are on counts.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.fixtures.procs import (
    Daemon,
    Reader,
    StoreWatcher,
    cli_env,
    file_reader,
    secretsmanager_reader,
    ssm_reader,
)

pytestmark = pytest.mark.timeout(120)

CLIENT_ID = "oms-client"
CLIENT_SECRET = "revocation-client-secret"
PROBE_INTERVAL = 1
# Three replicas probe at random phases within this interval: wider than a replacement
# takes under load, so the first replica's new token is usually visible to the others
# when they detect the revocation (the bound below is on requests, not on time).
REPLICA_PROBE_INTERVAL = 3
HEALTH_PORT = re.compile(r"metrics and health on port (\d+)")
WAIT = 30.0  # generous: a loaded machine is slow, and no assertion is on time


@pytest.fixture
def stub() -> Iterator[KeycloakStub]:
    with KeycloakStub(clients={CLIENT_ID: CLIENT_SECRET}, access_token_lifespan=300) as kc:
        yield kc


def wait_for(what: str, ready: Callable[[], bool], daemons: list[Daemon]) -> None:
    deadline = time.monotonic() + WAIT
    while not ready():
        for daemon in daemons:
            assert daemon.is_running, daemon.stop().describe()
        assert time.monotonic() < deadline, f"{what}: not within {WAIT:g} s\n" + "\n".join(
            d.stderr_text()[-3000:] for d in daemons
        )
        time.sleep(0.02)


def ok_requests(stub: KeycloakStub) -> int:
    return stub.count(grant_type="client_credentials", outcome="ok")


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def health_port(daemon: Daemon) -> int:
    wait_for("health server", lambda: bool(HEALTH_PORT.search(daemon.stderr_text())), [daemon])
    match = HEALTH_PORT.search(daemon.stderr_text())
    assert match is not None
    return int(match.group(1))


def single_env(stub: KeycloakStub, path: Path, probe: str) -> dict[str, str]:
    env = cli_env(
        ROTATOR_TOKEN_URL=stub.token_url,
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_CLIENT_SECRET=CLIENT_SECRET,
        ROTATOR_FILE_PATH=str(path),
        ROTATOR_PROBE_INTERVAL_SECONDS=str(PROBE_INTERVAL),
        ROTATOR_METRICS_PORT="0",
        ROTATOR_METRICS_ADDRESS="127.0.0.1",
    )
    if probe == "introspection":
        env["ROTATOR_PROBE"] = "introspection"
    else:
        env["ROTATOR_VERIFY_URL"] = stub.verify_url
    return env


def report(name: str, factory: pytest.TempPathFactory, figures: dict[str, object]) -> None:
    text = json.dumps(figures, indent=2)
    print(f"\nrevocation report ({name}):\n{text}")
    (factory.getbasetemp() / f"revocation-{name}.json").write_text(text + "\n")


@pytest.mark.parametrize("probe", ["verify_url", "introspection"])
def test_a_revoked_token_is_replaced_with_exactly_one_token_request(
    probe: str, stub: KeycloakStub, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path / "token.json"
    watcher = StoreWatcher("file", file_reader(path), interval=0.01)
    with Daemon(single_env(stub, path, probe), tmp_path / "logs") as daemon, watcher:
        port = health_port(daemon)
        wait_for("first token", lambda: len(watcher.distinct_tokens()) == 1, [daemon])
        assert ok_requests(stub) == 1
        revoked = watcher.distinct_tokens()[0]
        assert stub.revoke_access_tokens() == 1
        revoked_at = time.time()
        wait_for("replacement", lambda: len(watcher.distinct_tokens()) == 2, [daemon])
        replaced_at = next(o.at for o in watcher.observations if o.value and revoked not in o.value)
        # Three more probe intervals: the replacement is probed and kept.
        settled = ok_requests(stub)
        time.sleep(3 * PROBE_INTERVAL)
        assert ok_requests(stub) == settled == 2
        _, metrics = http_get(port, "/metrics")
        ready, _ = http_get(port, "/readyz")
        result = daemon.stop()
    new = watcher.distinct_tokens()[1]
    assert stub.is_active(new) and not stub.is_active(revoked)
    verdict = watcher.check(stub.issued_tokens())
    assert not verdict.problems, verdict.problems[:5]
    assert result.returncode == 0, result.describe()
    assert "published token revoked credential=default" in result.stderr
    assert re.search(r" rotated credential=default reason=revoked ", result.stderr)
    assert 'rotator_revocations_total{credential="default"} 1.0' in metrics
    assert 'rotator_probes_total{credential="default",outcome="revoked"} 1.0' in metrics
    assert re.search(
        r'rotator_probes_total\{credential="default",outcome="active"\} [1-9]', metrics
    )
    assert ready == 200
    if probe == "introspection":
        assert stub.introspection_count(active=False) == 1
    report(
        probe,
        tmp_path_factory,
        {
            "probe": probe,
            "probe_interval_seconds": PROBE_INTERVAL,
            "revocation_to_replacement_seconds": round(replaced_at - revoked_at, 3),
            "token_requests": ok_requests(stub),
        },
    )


def replica_target(kind: str, aws: AwsEnv, tmp_path: Path) -> tuple[dict[str, str], Reader]:
    if kind == "secretsmanager":
        env = {
            "ROTATOR_SECRETSMANAGER_SECRET_ID": "revocation/token",
            "ROTATOR_SECRETSMANAGER_CREATE": "true",
        }
        return env, secretsmanager_reader(aws, "revocation/token")
    if kind == "ssm":
        return {"ROTATOR_SSM_PARAMETER": "/revocation/token"}, ssm_reader(aws, "/revocation/token")
    path = tmp_path / "token.json"
    return {"ROTATOR_FILE_PATH": str(path)}, file_reader(path)


@pytest.mark.parametrize("kind", ["secretsmanager", "ssm", "file"])
def test_three_replicas_replace_a_revoked_token_with_at_most_two_requests(
    kind: str,
    aws: AwsEnv,
    stub: KeycloakStub,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    target, read = replica_target(kind, aws, tmp_path)
    env = cli_env(
        aws,
        ROTATOR_TOKEN_URL=stub.token_url,
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_CLIENT_SECRET=CLIENT_SECRET,
        ROTATOR_VERIFY_URL=stub.verify_url,
        ROTATOR_PROBE_INTERVAL_SECONDS=str(REPLICA_PROBE_INTERVAL),
        **target,
    )
    watcher = StoreWatcher(kind, read, interval=0.02)
    daemons: list[Daemon] = []
    with watcher:
        try:
            for i in range(3):
                daemons.append(Daemon(env, tmp_path / "logs", name=f"replica{i}"))
            logs = lambda: [d.stderr_text() for d in daemons]  # noqa: E731
            # every replica has adopted (or published) the cold-start token
            wait_for(
                "cold start",
                lambda: all(re.search(r" (rotated|adopted) credential=", text) for text in logs()),
                daemons,
            )
            cold = ok_requests(stub)
            published = watcher.distinct_tokens()
            before = stub.issued_tokens()
            assert stub.revoke_access_tokens() == len(before) == cold
            revoked_at = time.time()

            def replacement() -> float | None:
                for o in list(watcher.observations):
                    if o.value and json.loads(o.value)["access_token"] not in before:
                        return o.at
                return None

            wait_for("replacement", lambda: replacement() is not None, daemons)
            replaced_at = replacement() or 0.0
            time.sleep(3 * REPLICA_PROBE_INTERVAL)  # every replica has probed the replacement
            extra = ok_requests(stub) - cold
            results = [d.stop() for d in daemons]
        finally:
            for daemon in daemons:
                daemon.kill()
    last = watcher.distinct_tokens()[-1]
    verdict = watcher.check(stub.issued_tokens())
    figures = {
        "replicas": 3,
        "target": kind,
        "cold_start_requests": cold,
        "extra_requests_for_one_revocation": extra,
        "revocation_to_replacement_seconds": round(replaced_at - revoked_at, 3),
        "tokens_published_after_revocation": len(watcher.distinct_tokens()) - len(published),
    }
    report(f"replicas-{kind}", tmp_path_factory, figures)
    assert [r.returncode for r in results] == [0, 0, 0], [r.describe() for r in results]
    assert not verdict.problems, verdict.problems[:5]
    assert 1 <= extra <= 2, figures
    assert stub.is_active(last)
    assert sum("published token revoked" in r.stderr for r in results) >= 1


def test_the_daemon_never_loops_when_every_new_token_is_refused(
    stub: KeycloakStub, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    with Daemon(single_env(stub, path, "verify_url"), tmp_path / "logs") as daemon:
        port = health_port(daemon)
        wait_for("first token", lambda: ok_requests(stub) == 1, [daemon])
        wait_for("ready", lambda: http_get(port, "/readyz")[0] == 200, [daemon])
        stub.refuse_all_tokens()
        wait_for(
            "revocation seen", lambda: "published token revoked" in daemon.stderr_text(), [daemon]
        )
        window_start = ok_requests(stub)
        wait_for("not ready", lambda: http_get(port, "/readyz")[0] == 503, [daemon])
        time.sleep(6)
        in_window = ok_requests(stub) - window_start
        status, body = http_get(port, "/readyz")
        result = daemon.stop()
    failures = [line for line in result.stderr.splitlines() if "rotation failed" in line]
    # back-off 1, 2, 4, 8 s: at most 4 attempts start within ~6 s (+1 for the one
    # in flight when the window opened), each one token request and one log line
    assert 1 <= in_window <= 5, result.stderr[-3000:]
    assert len(failures) == ok_requests(stub) - 1
    assert all("refused" in line for line in failures)
    assert status == 503 and json.loads(body)["credentials"]["default"]["revoked"] is True
    assert result.returncode == 0
