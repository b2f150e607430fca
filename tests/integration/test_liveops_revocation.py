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
from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.harness.config import probe_vars
from tests.harness.env import rotator_env
from tests.harness.factories import StubFactory
from tests.harness.probes import health_port, page
from tests.harness.process import Daemon
from tests.harness.replicas import Replicas, store_target, wait_for_daemons, write_figures
from tests.harness.watch import StoreWatcher, file_reader

pytestmark = pytest.mark.timeout(120)

CLIENT_ID = "oms-client"
CLIENT_SECRET = "revocation-client-secret"
PROBE_INTERVAL = 1
# Three replicas probe at random phases within this interval: wider than a replacement
# takes under load, so the first replica's new token is usually visible to the others
# when they detect the revocation (the bound below is on requests, not on time).
REPLICA_PROBE_INTERVAL = 3
WAIT = 30.0  # generous: a loaded machine is slow, and no assertion is on time
POLL = 0.02


@pytest.fixture
def stub(make_stub: StubFactory) -> KeycloakStub:
    return make_stub(clients={CLIENT_ID: CLIENT_SECRET}, access_token_lifespan=300)


def wait_for(what: str, ready: Callable[[], bool], daemons: list[Daemon]) -> None:
    wait_for_daemons(what, ready, daemons, timeout=WAIT, poll=POLL)


def ok_requests(stub: KeycloakStub) -> int:
    return stub.count(grant_type="client_credentials", outcome="ok")


def single_env(stub: KeycloakStub, path: Path, probe: str) -> dict[str, str]:
    return rotator_env(
        ROTATOR_TOKEN_URL=stub.token_url,
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_CLIENT_SECRET=CLIENT_SECRET,
        **probe_vars(path, probe, stub.verify_url, PROBE_INTERVAL),
    )


def report(name: str, factory: pytest.TempPathFactory, figures: dict[str, object]) -> None:
    write_figures(factory, f"revocation-{name}", f"revocation report ({name})", figures)


@pytest.mark.parametrize("probe", ["verify_url", "introspection"])
def test_a_revoked_token_is_replaced_with_exactly_one_token_request(
    probe: str, stub: KeycloakStub, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path / "token.json"
    watcher = StoreWatcher("file", file_reader(path), interval=0.01)
    with Daemon(single_env(stub, path, probe), tmp_path / "logs") as daemon, watcher:
        port = health_port(daemon, timeout=WAIT)
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
        _, metrics = page(port, "/metrics")
        ready, _ = page(port, "/readyz")
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


@pytest.mark.parametrize("kind", ["secretsmanager", "ssm", "file"])
def test_three_replicas_replace_a_revoked_token_with_at_most_two_requests(
    kind: str,
    aws: AwsEnv,
    stub: KeycloakStub,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    target, read = store_target(kind, aws, "revocation", tmp_path / "token.json")
    env = rotator_env(
        aws,
        ROTATOR_TOKEN_URL=stub.token_url,
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_CLIENT_SECRET=CLIENT_SECRET,
        ROTATOR_VERIFY_URL=stub.verify_url,
        ROTATOR_PROBE_INTERVAL_SECONDS=str(REPLICA_PROBE_INTERVAL),
        **target,
    )
    watcher = StoreWatcher(kind, read, interval=0.02)
    at_revocation: dict[str, int] = {}

    def revoke() -> tuple[float, Collection[str]]:
        published = len(watcher.distinct_tokens())
        before = stub.issued_tokens()
        revoked = stub.revoke_access_tokens()
        at_revocation.update(published=published, issued=len(before), revoked=revoked)
        return time.time(), before

    with Replicas(env, tmp_path / "logs", watcher, timeout=WAIT, poll=POLL) as replicas:
        # every replica probes the replacement within three intervals
        round_ = replicas.revocation_round(
            lambda: ok_requests(stub), revoke, settle=3 * REPLICA_PROBE_INTERVAL
        )
    results = round_.results
    last = watcher.distinct_tokens()[-1]
    verdict = watcher.check(stub.issued_tokens())
    figures = {
        "replicas": 3,
        "target": kind,
        "cold_start_requests": round_.cold_start_requests,
        "extra_requests_for_one_revocation": round_.extra_requests,
        "revocation_to_replacement_seconds": round(round_.replaced_at - round_.revoked_at, 3),
        "tokens_published_after_revocation": len(watcher.distinct_tokens())
        - at_revocation["published"],
    }
    report(f"replicas-{kind}", tmp_path_factory, figures)
    # every token issued before the revocation (one per cold-start request) was revoked
    cold = round_.cold_start_requests
    assert at_revocation["revoked"] == at_revocation["issued"] == cold, at_revocation
    assert [r.returncode for r in results] == [0, 0, 0], [r.describe() for r in results]
    # Secrets Manager and the file store never step back; SSM may once (no conditional
    # write: two replicas racing to replace the revoked token), never to a revoked token
    races = 1 if kind == "ssm" else 0
    assert not verdict.problems_beyond_the_ssm_race(races=races), verdict.problems[:5]
    assert watcher.revoked_reads_after_replacement(round_.revoked) == 0
    assert 1 <= round_.extra_requests <= 2, figures
    assert stub.is_active(last)
    assert sum("published token revoked" in r.stderr for r in results) >= 1


def test_the_daemon_never_loops_when_every_new_token_is_refused(
    stub: KeycloakStub, tmp_path: Path
) -> None:
    path = tmp_path / "token.json"
    with Daemon(single_env(stub, path, "verify_url"), tmp_path / "logs") as daemon:
        port = health_port(daemon, timeout=WAIT)
        wait_for("first token", lambda: ok_requests(stub) == 1, [daemon])
        wait_for("ready", lambda: page(port, "/readyz")[0] == 200, [daemon])
        stub.refuse_all_tokens()
        wait_for(
            "revocation seen", lambda: "published token revoked" in daemon.stderr_text(), [daemon]
        )
        window_start = ok_requests(stub)
        wait_for("not ready", lambda: page(port, "/readyz")[0] == 503, [daemon])
        time.sleep(6)
        in_window = ok_requests(stub) - window_start
        status, body = page(port, "/readyz")
        result = daemon.stop()
    failures = [line for line in result.stderr.splitlines() if "rotation failed" in line]
    # back-off 1, 2, 4, 8 s: at most 4 attempts start within ~6 s (+1 for the one
    # in flight when the window opened), each one token request and one log line
    assert 1 <= in_window <= 5, result.stderr[-3000:]
    assert len(failures) == ok_requests(stub) - 1
    assert all("refused" in line for line in failures)
    assert status == 503 and json.loads(body)["credentials"]["default"]["revoked"] is True
    assert result.returncode == 0
