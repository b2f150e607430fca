"""At the pace, AWS's limits hold: many credentials, a daemon, the AWS-limits proxy.

* ``test_daemon_200_ssm_credentials_zero_throttling``: 200 credentials with 30 s tokens,
  each publishing to its own SSM parameter, one daemon for about 35 s (kept short on this
  shared machine; the issue asks for a minute). Rates are AWS's scaled by ten so the test
  is short: the proxy throttles PutParameter past 30/s (AWS: 3/s) and reads past 40/s
  (AWS's figure); rotator's pacers are set to 20 writes/s (its default 2/s, scaled) and
  30 reads/s (its default). Not one ThrottlingException, every credential published.
* ``test_compressed_day_within_quota_never_refused``: a Secrets Manager target whose
  cadence is within the quota runs through several quota windows, compressed: the proxy's
  window is 6 s with 4 versions allowed, tokens live 3 s (a write every ~2.1-2.25 s, under
  3 versions per window), for about 25 s (four windows): no LimitExceededException.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.fixtures.procs import Daemon, cli_env

CLIENT_ID = "oms-client"
SECRET = "kc-secret-scale-never-logged"
SECRET_ENV = "OMS_CLIENT_SECRET"


@pytest.fixture
def stub_30s() -> Iterator[KeycloakStub]:
    with KeycloakStub(access_token_lifespan=30, clients={CLIENT_ID: SECRET}) as kc:
        yield kc


def many_ssm_credentials(path: Path, token_url: str, n: int) -> Path:
    parts = []
    for k in range(n):
        parts.append(
            f"""
[[credentials]]
name = "c{k:03d}"
token_url = "{token_url}"
client_id = "{CLIENT_ID}"
client_secret_env = "{SECRET_ENV}"

  [[credentials.targets]]
  type = "ssm"
  parameter = "/scale/c{k:03d}"
"""
        )
    path.write_text("".join(parts))
    return path


def test_daemon_200_ssm_credentials_zero_throttling(
    aws_limits: AwsEnv, stub_30s: KeycloakStub, tmp_path: Path
) -> None:
    n = 200
    limits = aws_limits.limits
    limits.set_rate("ssm:write", 30.0)
    limits.set_rate("ssm:read", 40.0)
    config = many_ssm_credentials(tmp_path / "rotator.toml", stub_30s.token_url, n)
    env = cli_env(
        aws_limits,
        **{
            SECRET_ENV: SECRET,
            "ROTATOR_SSM_WRITES_PER_SECOND": "20",
            "ROTATOR_SSM_READS_PER_SECOND": "30",
        },
    )
    with Daemon(env, tmp_path, args=("--config", str(config))) as daemon:
        deadline = time.monotonic() + 35
        while time.monotonic() < deadline and daemon.is_running:
            time.sleep(1)
        result = daemon.stop()
    puts = limits.count(target="PutParameter")
    print(
        f"credentials={n} puts={puts} reads={limits.count(target='GetParameter')} "
        f"throttled={limits.refused('ThrottlingException')} seconds={result.seconds:.1f}"
    )
    assert limits.refused("ThrottlingException") == 0, result.describe()[-3000:]
    assert "rotation failed" not in result.stderr, result.describe()[-3000:]
    assert puts >= n, result.describe()[-3000:]
    published = set()
    for k in range(0, n, 10):  # get_parameters: 10 a call
        names = [f"/scale/c{j:03d}" for j in range(k, k + 10)]
        page = aws_limits.ssm.get_parameters(Names=names, WithDecryption=True)
        published |= {p["Name"] for p in page["Parameters"]}
    assert len(published) == n


def test_compressed_day_within_quota_never_refused(aws_limits: AwsEnv, tmp_path: Path) -> None:
    limits = aws_limits.limits
    limits.max_versions = 4
    limits.version_window = 6.0
    with KeycloakStub(access_token_lifespan=3, clients={CLIENT_ID: SECRET}) as kc:
        env = cli_env(
            aws_limits,
            ROTATOR_TOKEN_URL=kc.token_url,
            ROTATOR_CLIENT_ID=CLIENT_ID,
            ROTATOR_CLIENT_SECRET=SECRET,
            ROTATOR_SECRETSMANAGER_SECRET_ID="oms/day",
            ROTATOR_SECRETSMANAGER_CREATE="true",
            # 3 s tokens are ~41,000 writes per real day: let the gate pass, the proxy's
            # compressed window is the quota under test here
            ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY="100000",
        )
        with Daemon(env, tmp_path) as daemon:
            deadline = time.monotonic() + 25
            while time.monotonic() < deadline and daemon.is_running:
                time.sleep(1)
            result = daemon.stop()
    created = limits.versions_created("oms/day")
    print(f"versions={created} windows={25 / 6.0:.1f} refused={limits.refused()}")
    assert limits.refused("LimitExceededException") == 0, result.describe()[-3000:]
    assert created >= 8, result.describe()[-3000:]  # it kept rotating through the windows
    value = aws_limits.secretsmanager.get_secret_value(
        SecretId="oms/day", VersionStage="AWSCURRENT"
    )
    assert json.loads(value["SecretString"])["access_token"]
