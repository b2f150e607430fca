"""Start-up and status read AWS targets in batches, counted by the AWS-limits proxy:
SSM with GetParameters (10 names a call: 25 fresh tokens adopted in 3 calls, not 25),
Secrets Manager with BatchGetSecretValue (20 secrets a call: 2 calls). The Secrets
Manager tokens are published the staged way (created, then rotated) before they are
read: the proxy answers the batch with AWSCURRENT, as AWS does (moto would answer the
stale first version, which the store would then read again one by one)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.fixtures.procs import Daemon, cli_env, run_cli

CLIENT_ID = "oms-client"
SECRET = "kc-secret-batch-never-logged"
SECRET_ENV = "OMS_CLIENT_SECRET"
N = 25
TARGETS = {
    "ssm": 'type = "ssm"\n  parameter = "/batch/c{k:02d}"',
    "secretsmanager": 'type = "secretsmanager"\n  secret_id = "batch/c{k:02d}"\n  create = true',
}
# (batched read, single read, write) per kind, and the batched calls for N targets
CALLS = {
    "ssm": ("AmazonSSM.GetParameters", "AmazonSSM.GetParameter", "AmazonSSM.PutParameter"),
    "secretsmanager": (
        "secretsmanager.BatchGetSecretValue",
        "secretsmanager.GetSecretValue",
        "secretsmanager.PutSecretValue",
    ),
}
BATCHES = {"ssm": 3, "secretsmanager": 2}  # 25 names: 10 + 10 + 5; 25 secrets: 20 + 5


@pytest.fixture
def stub() -> Iterator[KeycloakStub]:
    with KeycloakStub(access_token_lifespan=3600, clients={CLIENT_ID: SECRET}) as kc:
        yield kc


def config(path: Path, token_url: str, kind: str) -> Path:
    path.write_text(
        "".join(
            f"""
[[credentials]]
name = "c{k:02d}"
token_url = "{token_url}"
client_id = "{CLIENT_ID}"
client_secret_env = "{SECRET_ENV}"

  [[credentials.targets]]
  {TARGETS[kind].format(k=k)}
"""
            for k in range(N)
        )
    )
    return path


@pytest.mark.parametrize("kind", ["ssm", "secretsmanager"])
def test_status_and_startup_read_in_batches(
    kind: str, aws_limits: AwsEnv, stub: KeycloakStub, tmp_path: Path
) -> None:
    limits = aws_limits.limits
    path = config(tmp_path / "rotator.toml", stub.token_url, kind)
    env = cli_env(aws_limits, **{SECRET_ENV: SECRET})
    runs = [["once"], ["once", "--force"]] if kind == "secretsmanager" else [["once"]]
    for args in runs:  # Secrets Manager: created, then rotated the staged way
        once = run_cli(["--config", str(path), *args], env, timeout=120)
        assert once.returncode == 0, once.describe()
    batched, single, write = CALLS[kind]

    def counts() -> tuple[int, int, int]:
        # count() matches substrings: "AmazonSSM.GetParameter" matches GetParameters too
        return (
            limits.count(target=batched),
            limits.count(target=single) - (limits.count(target=batched) if kind == "ssm" else 0),
            limits.count(target=write),
        )

    before = counts()
    status = run_cli(["--config", str(path), "status", "--json"], env)
    assert status.returncode == 0, status.describe()
    assert {row["state"] for row in json.loads(status.stdout)} == {"fresh"}
    after = counts()
    assert (after[0] - before[0], after[1] - before[1]) == (BATCHES[kind], 0)

    with Daemon(env, tmp_path, args=("--config", str(path))) as daemon:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and daemon.stderr_text().count("adopted ") < N:
            time.sleep(0.2)
        result = daemon.stop()
    assert result.stderr.count("adopted ") >= N, result.describe()
    started = counts()
    assert (started[0] - after[0], started[1] - after[1], started[2] - after[2]) == (
        BATCHES[kind],
        0,
        0,
    )
