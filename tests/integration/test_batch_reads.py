"""Start-up and status read SSM targets in batches (GetParameters, 10 names a call),
counted by the AWS-limits proxy: 25 fresh tokens are adopted in 3 calls, not 25."""

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


@pytest.fixture
def stub() -> Iterator[KeycloakStub]:
    with KeycloakStub(access_token_lifespan=3600, clients={CLIENT_ID: SECRET}) as kc:
        yield kc


def config(path: Path, token_url: str) -> Path:
    path.write_text(
        "".join(
            f"""
[[credentials]]
name = "c{k:02d}"
token_url = "{token_url}"
client_id = "{CLIENT_ID}"
client_secret_env = "{SECRET_ENV}"

  [[credentials.targets]]
  type = "ssm"
  parameter = "/batch/c{k:02d}"
"""
            for k in range(N)
        )
    )
    return path


def test_status_and_startup_read_ssm_in_batches(
    aws_limits: AwsEnv, stub: KeycloakStub, tmp_path: Path
) -> None:
    limits = aws_limits.limits
    path = config(tmp_path / "rotator.toml", stub.token_url)
    env = cli_env(aws_limits, **{SECRET_ENV: SECRET})
    once = run_cli(["--config", str(path), "once"], env, timeout=120)
    assert once.returncode == 0, once.describe()

    def counts() -> tuple[int, int, int]:
        return (
            limits.count(target="AmazonSSM.GetParameters"),
            limits.count(target="AmazonSSM.GetParameter")
            - limits.count(target="AmazonSSM.GetParameters"),
            limits.count(target="AmazonSSM.PutParameter"),
        )

    before = counts()
    status = run_cli(["--config", str(path), "status", "--json"], env)
    assert status.returncode == 0, status.describe()
    assert {row["state"] for row in json.loads(status.stdout)} == {"fresh"}
    after = counts()
    assert (after[0] - before[0], after[1] - before[1]) == (3, 0)  # 25 names: 10 + 10 + 5

    with Daemon(env, tmp_path, args=("--config", str(path))) as daemon:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and daemon.stderr_text().count("adopted ") < N:
            time.sleep(0.2)
        result = daemon.stop()
    assert result.stderr.count("adopted ") >= N, result.describe()
    started = counts()
    assert (started[0] - after[0], started[1] - after[1], started[2] - after[2]) == (3, 0, 0)
