"""The Secrets Manager version quota, through the AWS-limits proxy (moto has no quota).

* a 300 s token would create ~411 versions a day: the target is refused before its first
  write (check and once exit 2 with one line; zero versions), the SSM target still served;
* ``LimitExceededException`` (quota forced low in the proxy): once exits 1 with one line,
  one refused call (no retry loop), the other target still served; the daemon keeps the
  other target going, reports the target in /readyz and counts it in a metric.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.fixtures.procs import Daemon, cli_env, run_cli

CLIENT_ID = "oms-client"
SECRET = "kc-secret-quota-never-logged"
SECRET_ID = "oms/token"
PARAMETER = "/oms/token"


@pytest.fixture
def keycloak() -> Iterator[Callable[[float], KeycloakStub]]:
    stubs: list[KeycloakStub] = []

    def make(lifespan: float) -> KeycloakStub:
        stub = KeycloakStub(access_token_lifespan=lifespan, clients={CLIENT_ID: SECRET})
        stubs.append(stub.start())
        return stub

    yield make
    for stub in stubs:
        stub.stop()


def env_for(aws: AwsEnv, kc: KeycloakStub, **extra: str) -> dict[str, str]:
    return cli_env(
        aws,
        ROTATOR_TOKEN_URL=kc.token_url,
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_CLIENT_SECRET=SECRET,
        ROTATOR_SECRETSMANAGER_SECRET_ID=SECRET_ID,
        ROTATOR_SECRETSMANAGER_CREATE="true",
        ROTATOR_SSM_PARAMETER=PARAMETER,
        **extra,
    )


def error_lines(stderr: str, needle: str) -> list[str]:
    return [line for line in stderr.splitlines() if needle in line]


def secret_exists(aws: AwsEnv) -> bool:
    names = [s["Name"] for s in aws.secretsmanager.list_secrets()["SecretList"]]
    return SECRET_ID in names


def test_once_refuses_a_300s_token_for_secretsmanager_before_any_write(
    aws_limits: AwsEnv, keycloak: Callable[[float], KeycloakStub]
) -> None:
    kc = keycloak(300)
    result = run_cli(["once"], env_for(aws_limits, kc))
    assert result.returncode == 2, result.describe()
    lines = error_lines(result.stderr, "refused before any write")
    assert len(lines) == 1, result.describe()
    line = lines[0]
    assert f"target=secretsmanager:{SECRET_ID}" in line
    assert "411 versions/day projected" in line  # one write every 210 s at the earliest
    assert "ssm target" in line
    assert "lifespan" in line
    assert SECRET not in result.stderr + result.stdout
    # zero versions written; the credential's other target was served
    assert aws_limits.limits.versions_created() == 0
    assert aws_limits.limits.count(target="secretsmanager.PutSecretValue") == 0
    assert aws_limits.limits.count(target="secretsmanager.CreateSecret") == 0
    assert not secret_exists(aws_limits)
    published = aws_limits.ssm.get_parameter(Name=PARAMETER, WithDecryption=True)
    assert json.loads(published["Parameter"]["Value"])["access_token"]


def test_check_refuses_the_same_target_with_exit_2(
    aws_limits: AwsEnv, keycloak: Callable[[float], KeycloakStub]
) -> None:
    kc = keycloak(300)
    result = run_cli(["check"], env_for(aws_limits, kc))
    assert result.returncode == 2, result.describe()
    refused = [line for line in result.stdout.splitlines() if "REFUSED" in line]
    assert len(refused) == 1, result.describe()
    assert f"secretsmanager:{SECRET_ID}" in refused[0]
    assert "versions/day" in refused[0]
    assert any(
        line.startswith(f"default: target ssm:{PARAMETER}: ok")
        for line in result.stdout.splitlines()
    ), result.describe()
    assert aws_limits.limits.versions_created() == 0
    assert (
        "capacity: ssm us-east-1: 1 target(s) with a known lifetime, 0.00 writes/s projected "
        "against a pace of 2/s: ok" in result.stdout
    ), result.describe()


def test_a_long_enough_lifespan_passes_and_check_counts_versions(
    aws_limits: AwsEnv, keycloak: Callable[[float], KeycloakStub]
) -> None:
    kc = keycloak(1373)  # 86,400 / 90 / 0.70 = 1,371.4 s: at most 90 versions a day
    env = env_for(aws_limits, kc)
    once = run_cli(["once"], env)
    assert once.returncode == 0, once.describe()
    assert aws_limits.limits.versions_created(SECRET_ID) == 1
    check = run_cli(["check"], env)
    assert check.returncode == 0, check.describe()
    assert (
        f"default: target secretsmanager:{SECRET_ID}: ok "
        "(1 of 100 versions created in the last 24 h)" in check.stdout
    ), check.describe()
    status = run_cli(["status", "--json"], env)
    rows = {row["target"]: row for row in json.loads(status.stdout)}
    assert rows[f"secretsmanager:{SECRET_ID}"]["versions_24h"] == 1
    assert rows[f"ssm:{PARAMETER}"]["versions_24h"] is None


def test_raising_max_writes_per_day_above_the_quota_is_allowed_with_a_warning(
    aws_limits: AwsEnv, keycloak: Callable[[float], KeycloakStub]
) -> None:
    kc = keycloak(300)
    env = env_for(aws_limits, kc, ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY="500")
    result = run_cli(["once"], env)
    assert result.returncode == 0, result.describe()
    assert len(error_lines(result.stderr, "is above AWS's quota of 100")) == 1
    assert aws_limits.limits.versions_created(SECRET_ID) == 1


def test_bad_max_writes_per_day_is_a_config_error(
    aws_limits: AwsEnv, keycloak: Callable[[float], KeycloakStub]
) -> None:
    kc = keycloak(300)
    env = env_for(aws_limits, kc, ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY="²")
    result = run_cli(["once"], env)
    assert result.returncode == 2, result.describe()
    assert "ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY" in result.stderr
    assert "Traceback" not in result.stderr


def fill_quota(aws: AwsEnv, versions: int) -> None:
    aws.limits.max_versions = versions
    aws.secretsmanager.create_secret(Name=SECRET_ID, SecretString="{}")
    for n in range(versions - 1):
        aws.secretsmanager.put_secret_value(SecretId=SECRET_ID, SecretString=f'{{"n":{n}}}')


def test_limit_exceeded_once_exits_1_with_one_line_and_no_retry_loop(
    aws_limits: AwsEnv, keycloak: Callable[[float], KeycloakStub]
) -> None:
    fill_quota(aws_limits, 3)
    kc = keycloak(3600)
    result = run_cli(["once"], env_for(aws_limits, kc))
    assert result.returncode == 1, result.describe()
    lines = error_lines(result.stderr, "refused by the Secrets Manager version quota")
    assert len(lines) == 1, result.describe()
    assert "ssm target" in lines[0]
    assert "lifespan" in lines[0]
    assert "Traceback" not in result.stderr
    assert aws_limits.limits.refused("LimitExceededException") == 1  # tried once, not looped
    published = aws_limits.ssm.get_parameter(Name=PARAMETER, WithDecryption=True)
    assert json.loads(published["Parameter"]["Value"])["access_token"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_limit_exceeded_daemon_keeps_other_target_and_is_not_ready(
    aws_limits: AwsEnv, keycloak: Callable[[float], KeycloakStub], tmp_path: Path
) -> None:
    fill_quota(aws_limits, 2)
    kc = keycloak(4)  # rotated every ~3 s; max_writes_per_day raised so the gate lets it by
    port = free_port()
    env = env_for(aws_limits, kc, ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY="100000")
    with Daemon(env, tmp_path, args=("--metrics-port", str(port))) as daemon:
        seen: set[str] = set()
        deadline = time.monotonic() + 60
        while len(seen) < 3 and time.monotonic() < deadline:  # three SSM rotations
            try:
                value = aws_limits.ssm.get_parameter(Name=PARAMETER, WithDecryption=True)
                seen.add(json.loads(value["Parameter"]["Value"])["access_token"])
            except aws_limits.ssm.exceptions.ParameterNotFound:
                pass
            time.sleep(0.2)
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        result = daemon.stop()
    assert len(seen) >= 3, result.describe()
    assert ready.status_code == 503
    body = ready.json()["credentials"]["default"]
    assert body["targets_refused"] == [f"secretsmanager:{SECRET_ID}"]
    counted = re.search(
        r'^rotator_publishes_total\{credential="default",outcome="quota_exceeded",'
        r'target="secretsmanager:oms/token"\} ([0-9.]+)$',
        metrics,
        re.MULTILINE,
    )
    assert counted is not None and float(counted.group(1)) >= 1, metrics
    # held for an hour after the refusal: one refused call, never a loop
    assert aws_limits.limits.refused("LimitExceededException") == 1, result.describe()
    assert len(error_lines(result.stderr, "refused by the Secrets Manager version quota")) == 1
