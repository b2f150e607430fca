"""Secrets Manager versions created per token published, three replicas and one process,
counted by the AWS-limits proxy (every version a write creates; idempotent replays not
counted) against the distinct tokens a reader saw as AWSCURRENT.

Issue 9's goal: 1.00 for one process, <= 1.05 for three replicas. Figures are printed and
written to ``<pytest basetemp>/sm-versions-<n>.json`` for BENCHMARKS.md.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.harness.env import rotator_env
from tests.harness.factories import StubFactory
from tests.harness.replicas import Replicas, store_target, write_figures
from tests.harness.watch import StoreWatcher

pytestmark = pytest.mark.timeout(120)

LIFESPAN = 3.0
OBSERVE = 12.0  # four lifetimes
CLIENT_ID = "oms-client"
CLIENT_SECRET = "versions-client-secret"
SECRET_ID = "versions/token"  # store_target(..., "versions")


@pytest.fixture
def stub(make_stub: StubFactory) -> KeycloakStub:
    return make_stub(clients={CLIENT_ID: CLIENT_SECRET}, access_token_lifespan=LIFESPAN)


@pytest.mark.parametrize("replicas", [1, 3])
def test_versions_per_token_published(
    replicas: int,
    aws_limits: AwsEnv,
    stub: KeycloakStub,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    target, read = store_target("secretsmanager", aws_limits, "versions")
    env = rotator_env(
        aws_limits,
        ROTATOR_TOKEN_URL=stub.token_url,
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_CLIENT_SECRET=CLIENT_SECRET,
        ROTATOR_CREDENTIAL_NAME="shared",
        **target,
        # 3 s tokens: far past the real quota; the proxy counts the versions
        ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY="100000",
    )
    watcher = StoreWatcher("secretsmanager", read, interval=0.02)
    with Replicas(env, tmp_path / "logs", watcher, count=replicas) as fleet:
        fleet.wait_published(timeout=20)
        time.sleep(OBSERVE)
        results = fleet.stop()
    verdict = watcher.check(stub.issued_tokens(), fresh=True)
    versions = aws_limits.limits.versions_created(SECRET_ID)
    published = len(verdict.tokens)
    issued = len(stub.issued_tokens())
    report = {
        "replicas": replicas,
        "lifespan_seconds": LIFESPAN,
        "observed_seconds": OBSERVE,
        "tokens_issued": issued,
        "tokens_published": published,
        "versions_created": versions,
        "versions_per_token_published": round(versions / published, 3) if published else None,
        "refused": aws_limits.limits.refused(),
    }
    write_figures(tmp_path_factory, f"sm-versions-{replicas}", "versions report", report)
    assert [r.returncode for r in results] == [0] * replicas, [r.describe() for r in results]
    assert not verdict.problems, "\n".join(verdict.problems[:10])
    assert published >= 3, report
    # Every version holds a token some writer fetched: never more versions than tokens.
    assert published <= versions <= issued, report
    if replicas == 1:
        assert versions == published, report  # 1.00: no version wasted
