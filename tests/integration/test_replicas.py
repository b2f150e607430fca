"""Several replicas on one credential and one target, with no coordinator of ours.

Three ``rotator run`` daemons share a credential and a target (Secrets Manager,
SSM or a file) for four token lifetimes against a KeycloakStub issuing 5 s
tokens (3 s tokens left a loaded 2-core machine too little room: a refresh delayed
0.8 s let a token expire). A reader thread reads the target all along, as a consumer would: the
token it finds is never expired and its ``expires_at`` never goes backwards.

The duplicate-fetch rate is the number of token requests beyond one per refresh
period, per refresh period (0 means the replicas never fetched twice for one
period; 2 would mean all three always did). Requests are grouped into refresh
periods by time (a period's requests come within a fraction of a second, periods
are ~3.5 s apart). The first period is the cold start (every replica finds the
target empty at once) and is reported apart. Figures are printed and written to
``<pytest basetemp>/replicas-<target>.json``; the steady state is bounded per target
(``STEADY_FETCHES_BOUND``, from measurements). Duplicate fetches come from the schedule
(replicas due within 250 ms of each other, a run longer than the gap), never from a
replica missing a newer token: that is checked in order from the daemons' logs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.harness.env import rotator_env
from tests.harness.factories import StubFactory
from tests.harness.replicas import (
    STEP,
    Replicas,
    daemon_actions,
    fetch_figures,
    store_target,
    write_figures,
)
from tests.harness.watch import StoreWatcher

pytestmark = pytest.mark.timeout(120)

LIFESPAN = 5.0
LIFETIMES = 4
REPLICAS = 3
# Requests less than this apart belong to one refresh period. Replicas that are due
# together fetch within the jitter (5 % of 5 s) plus a few ms; successive periods are
# at least ~2.5 s apart (refresh at 70-75 % of a lifetime counted from a whole second).
PERIOD_GAP = 0.6
# Token requests per steady refresh period, at most. Measured with 3 s tokens (3 replicas, 8
# periods, load average 8 on 2 cores, two runs): Secrets Manager 1.875 and 2.5, file 1.75,
# SSM 2.75; later (load average ~6): SM 1.875 twice, SSM 2.125 and 2.25, file 1.43. Why
# replicas fetch twice in one period, SSM included: the three are due within the jitter
# window (5 % of a 3 s lifetime: 150 ms), and a run (read, token request, re-read, write)
# takes 85-150 ms here, so a replica whose planned run comes before another's write has
# returned reads the old, due token and fetches too. It is the schedule, not the SSM store:
# in the logs no replica ever fetched after another had published a newer token before its
# planned run (``fetched_despite_a_newer_publish``, asserted below; SSM replicas adopted 5
# and 6 times in about 25 steps in those runs). With real lifetimes (300 s: a 15 s jitter
# window) duplicate fetches are rare. The bound pins the worst measured state: Secrets
# Manager 2.857 (20 requests in 7 periods) in a full `make test` beside a 5,000-credential
# benchmark (load ~12), SSM 2.75; never all three replicas in every period.
STEADY_FETCHES_BOUND = {"secretsmanager": 2.9, "file": 2.75, "ssm": 2.9}
CLIENT_ID = "oms-client"
CLIENT_SECRET = "replicas-client-secret"
# The daemon's line per run and per publish (``replicas.STEP``, ``replicas.WRITE``), with
# their log time, the token's expiry and the next planned run.
RUN = re.compile(r"^(\S+) .* (rotated|adopted) credential=\S+ expires_at=(\S+) next_run=(\S+)")
PUBLISH = re.compile(r"^(\S+) .* published credential=\S+ target=\S+ expires_at=(\S+)")


@pytest.fixture
def stub(make_stub: StubFactory) -> KeycloakStub:
    return make_stub(clients={CLIENT_ID: CLIENT_SECRET}, access_token_lifespan=LIFESPAN)


def instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fetched_despite_a_newer_publish(logs: dict[str, str]) -> list[str]:
    """Fetches a replica made although another replica had already published a newer
    token (a later ``expires_at`` than the one this replica held) before this replica's
    planned run. A run reads the target first, so such a replica must have seen that
    token, not yet due, and adopted it. Order from the logs, no time window: a publish is
    logged after its write returned, and a run starts at or after its planned instant."""
    publishes = [
        (name, instant(m[1]), instant(m[2]))
        for name, text in logs.items()
        for m in map(PUBLISH.match, text.splitlines())
        if m
    ]
    wrong: list[str] = []
    for name, text in logs.items():
        held: tuple[float, float] | None = None  # (expires_at, planned next run)
        for line in text.splitlines():
            if (m := RUN.match(line)) is None:
                continue
            if held is not None and m[2] == "rotated":
                expires, planned = held
                seen = [p for p in publishes if p[0] != name and p[2] > expires and p[1] < planned]
                if seen:
                    wrong.append(f"{name} fetched at {m[1]} although {seen[0][0]} had published")
            held = (instant(m[3]), instant(m[4]))
    return wrong


@pytest.mark.parametrize("kind", ["secretsmanager", "ssm", "file"])
def test_three_replicas_share_one_target(
    kind: str,
    aws: AwsEnv,
    stub: KeycloakStub,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    record_property: Callable[[str, object], None],
) -> None:
    target, read = store_target(kind, aws, "replicas", tmp_path / "shared" / "token.json")
    env = rotator_env(
        aws,
        ROTATOR_TOKEN_URL=stub.token_url,
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_CLIENT_SECRET=CLIENT_SECRET,
        ROTATOR_CREDENTIAL_NAME="shared",
        **target,
    )
    watcher = StoreWatcher(kind, read, interval=0.02)
    with Replicas(env, tmp_path / "logs", watcher, count=REPLICAS) as replicas:
        replicas.wait_published(timeout=20)
        observed_from = time.monotonic()
        time.sleep(LIFESPAN * LIFETIMES)
        observed = time.monotonic() - observed_from
        replicas.assert_running()
        results = replicas.stop()

    verdict = watcher.check(stub.issued_tokens(), fresh=True)
    actions, errors = daemon_actions(results)
    requests = stub.requests()
    figures = {
        "token_requests": len(requests),
        **fetch_figures((r.time for r in requests if r.outcome == "ok"), gap=PERIOD_GAP),
    }
    report = {
        "target": kind,
        "replicas": REPLICAS,
        "lifespan_seconds": LIFESPAN,
        "observed_seconds": round(observed, 1),
        **figures,
        "reads": verdict.reads,
        "distinct_tokens_published": len(verdict.tokens),
        "expired_reads": verdict.expired_reads,
        "expires_at_regressions": len(verdict.backwards),
        "daemon_actions": dict(actions),
        "daemon_error_lines": len(errors),
    }
    write_figures(tmp_path_factory, f"replicas-{kind}", f"replicas report ({kind})", report)
    record_property("duplicate_fetch_rate", figures["duplicate_fetch_rate"])
    record_property("steady_duplicate_fetch_rate", figures["steady_duplicate_fetch_rate"])

    assert [r.returncode for r in results] == [0] * REPLICAS, [r.describe() for r in results]
    assert not watcher.errors, watcher.errors[:5]
    assert not verdict.problems, "\n".join(verdict.problems[:10])
    assert not errors, "\n".join(errors[:10])
    logs = {f"replica{i}": result.stderr for i, result in enumerate(results)}
    assert fetched_despite_a_newer_publish(logs) == [], report
    # The grouping of token requests into refresh periods is right (counts, not the time
    # observed): every replica runs once a period, fetching or adopting, so each made as
    # many steps as there were periods, or one fewer when stopped before its last one.
    periods_seen = figures["refresh_periods"]
    steps = [len(STEP.findall(result.stderr)) for result in results]
    # (+1: a replica's first token, fetched at its start, may be refreshed early once,
    # anywhere from 37.5 % of its lifetime, so that a fleet started together spreads;
    # +1 more on a loaded machine: a replica whose run lands just after another's publish
    # adopts that token, a step without a request, measured 10 steps for 8 periods at load 12)
    assert all(periods_seen - 1 <= n <= periods_seen + 2 for n in steps), (steps, report)
    # Bounded by the measured steady state (token requests per refresh period after the
    # cold start), with room for a loaded machine: not "fewer than all three".
    assert figures["steady_fetches_per_period"] is not None, report
    assert figures["steady_fetches_per_period"] <= STEADY_FETCHES_BOUND[kind], report
