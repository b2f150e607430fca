"""The AWS-limits proxy itself: each limit moto lacks, enforced in AWS's own error shape.

Time is a hand-moved clock, so the sliding window and the token buckets are
exercised without sleeping.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from rotator.testing.awslimits import AwsLimitsProxy, TokenBucket
from tests.fixtures.aws import AwsEnv, MotoServer


class HandClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> HandClock:
    return HandClock()


@pytest.fixture
def limited(aws: AwsEnv, moto_server: MotoServer, clock: HandClock) -> Iterator[AwsEnv]:
    """moto behind an AwsLimitsProxy with a small quota, a hand clock and a 60 s window."""
    with AwsLimitsProxy(
        moto_server.endpoint, max_versions=3, version_window=60.0, clock=clock
    ) as proxy:
        server = MotoServer(server=moto_server.server, endpoint=proxy.url)
        env = AwsEnv(server=server, monkeypatch=aws.monkeypatch, limits=proxy)
        # one attempt per call (botocore would retry a refusal) and room for a slow moto
        one_attempt = Config(retries={"total_max_attempts": 1}, read_timeout=60)
        env.secretsmanager = env.client("secretsmanager", config=one_attempt)
        env.ssm = env.client("ssm", config=one_attempt)
        yield env


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    response: Any = exc.value.response
    return (
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


def test_version_quota_refuses_past_max_within_window(limited: AwsEnv, clock: HandClock) -> None:
    sm = limited.secretsmanager
    sm.create_secret(Name="q", SecretString="v0")  # version 1 at t=1000
    clock.now += 10.0
    sm.put_secret_value(SecretId="q", SecretString="v1")  # 2 at t=1010
    clock.now += 10.0
    sm.put_secret_value(SecretId="q", SecretString="v2")  # 3 at t=1020
    with pytest.raises(ClientError) as exc:
        sm.put_secret_value(SecretId="q", SecretString="v3")
    code, message, status = _code(exc)
    assert (code, status) == ("LimitExceededException", 400)
    assert "quotas" in message
    assert limited.limits.versions_created("q") == 3
    assert limited.limits.refused("LimitExceededException") == 1
    assert limited.limits.refused() == 1
    # the refused write never reached moto
    versions = sm.list_secret_version_ids(SecretId="q", IncludeDeprecated=True)["Versions"]
    assert len(versions) == 3
    # the window slides: the oldest version leaves it 60 s after it was created
    clock.now += 39.0
    with pytest.raises(ClientError):
        sm.put_secret_value(SecretId="q", SecretString="v3")
    clock.now += 1.0
    sm.put_secret_value(SecretId="q", SecretString="v3")
    assert limited.limits.versions_in_window("q") == 3
    assert limited.limits.versions_created("q") == 4


def test_replay_of_a_client_request_token_is_not_a_new_version(limited: AwsEnv) -> None:
    sm = limited.secretsmanager
    sm.create_secret(Name="r")  # no value: no version
    token = uuid.uuid4().hex
    for _ in range(5):
        sm.put_secret_value(SecretId="r", SecretString="same", ClientRequestToken=token)
    assert limited.limits.versions_created("r") == 1
    sm.put_secret_value(SecretId="r", SecretString="b")
    sm.put_secret_value(SecretId="r", SecretString="c")
    # at the quota a replay still succeeds (AWS returns the existing version)
    sm.put_secret_value(SecretId="r", SecretString="same", ClientRequestToken=token)
    with pytest.raises(ClientError) as exc:
        sm.put_secret_value(SecretId="r", SecretString="d")
    assert _code(exc)[0] == "LimitExceededException"


def test_a_failed_write_does_not_count(limited: AwsEnv) -> None:
    sm = limited.secretsmanager
    sm.create_secret(Name="f")
    token = uuid.uuid4().hex
    sm.put_secret_value(SecretId="f", SecretString="one", ClientRequestToken=token)
    for _ in range(4):  # same token, other value: moto refuses, nothing is created
        with pytest.raises(ClientError) as exc:
            sm.put_secret_value(SecretId="f", SecretString="two", ClientRequestToken=token)
        assert _code(exc)[0] == "ResourceExistsException"
    with pytest.raises(ClientError):
        sm.put_secret_value(SecretId="nope", SecretString="x")
    assert limited.limits.versions_created() == 1


def test_value_sizes(limited: AwsEnv) -> None:
    sm, ssm = limited.secretsmanager, limited.ssm
    sm.create_secret(Name="big", SecretString="x" * 65_536)
    with pytest.raises(ClientError) as exc:
        sm.put_secret_value(SecretId="big", SecretString="x" * 65_537)
    assert _code(exc)[:1] == ("ValidationException",)
    ssm.put_parameter(Name="/p", Value="é" * 2048, Type="SecureString")  # 4,096 bytes
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name="/p", Value="é" * 2049, Type="SecureString", Overwrite=True)
    code, message, status = _code(exc)
    assert (code, status) == ("ValidationException", 400)
    assert "advanced-parameter tier" in message
    ssm.put_parameter(
        Name="/p", Value="x" * 8192, Type="SecureString", Overwrite=True, Tier="Advanced"
    )
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(
            Name="/p", Value="x" * 8193, Type="SecureString", Overwrite=True, Tier="Advanced"
        )
    assert _code(exc)[0] == "ValidationException"
    assert limited.limits.refused("ValidationException") == 3


def test_put_parameter_throttled_past_the_rate(limited: AwsEnv, clock: HandClock) -> None:
    limited.limits.set_rate("ssm:write", 2.0)
    ssm = limited.ssm
    ssm.put_parameter(Name="/t", Value="1", Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name="/t", Value="2", Type="SecureString", Overwrite=True)
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name="/t", Value="3", Type="SecureString", Overwrite=True)
    assert _code(exc) == ("ThrottlingException", "Rate exceeded", 400)
    assert ssm.get_parameter(Name="/t")["Parameter"]["Version"] == 2  # never reached moto
    clock.now += 0.5  # one token back at 2/s
    ssm.put_parameter(Name="/t", Value="3", Type="SecureString", Overwrite=True)
    # reads have their own bucket, and other regions their own
    ssm.get_parameter(Name="/t")
    other = limited.client("ssm", region_name="eu-west-1", config=Config(read_timeout=60))
    other.put_parameter(Name="/t", Value="x", Type="SecureString")
    assert [r.action for r in limited.limits.refusals()] == ["PutParameter"]
    assert limited.limits.refusals()[0].region == "us-east-1"


def test_throttling_body_is_aws_json_shape(limited: AwsEnv) -> None:
    limited.limits.set_rate("secretsmanager:write", 1.0)
    limited.secretsmanager.create_secret(Name="s")
    body = json.dumps({"SecretId": "s", "SecretString": "x"}).encode()
    request = urllib.request.Request(
        limited.endpoint,
        data=body,
        method="POST",
        headers={
            "X-Amz-Target": "secretsmanager.PutSecretValue",
            "Content-Type": "application/x-amz-json-1.1",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/"
            "secretsmanager/aws4_request, SignedHeaders=host, Signature=0",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(request, timeout=5)
    assert exc.value.code == 400
    assert exc.value.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert json.loads(exc.value.read()) == {
        "__type": "ThrottlingException",
        "message": "Rate exceeded",
    }


def test_replica_is_read_only(limited: AwsEnv) -> None:
    sm = limited.secretsmanager
    sm.create_secret(Name="rep", SecretString="v", AddReplicaRegions=[{"Region": "eu-west-1"}])
    one_attempt = Config(retries={"total_max_attempts": 1})
    replica = limited.client("secretsmanager", region_name="eu-west-1", config=one_attempt)
    assert replica.get_secret_value(SecretId="rep")["SecretString"] == "v"
    for call in (
        lambda: replica.put_secret_value(SecretId="rep", SecretString="w"),
        lambda: replica.update_secret_version_stage(
            SecretId="rep", VersionStage="AWSCURRENT", MoveToVersionId="x" * 32
        ),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        code, message, _ = _code(exc)
        assert code == "InvalidRequestException"
        assert "Operation not permitted on a replica secret" in message
        assert "us-east-1" in message
    sm.put_secret_value(SecretId="rep", SecretString="w")  # the primary takes writes


def test_token_bucket_refills_at_rate(clock: HandClock) -> None:
    bucket = TokenBucket(rate=4.0, burst=2.0, clock=clock)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 0.25
    assert [bucket.take() for _ in range(2)] == [True, False]
    clock.now += 10.0  # never more than the burst saved up
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_faults_still_apply(limited: AwsEnv) -> None:
    limited.limits.fail(503, times=None, target="GetParameter")
    with pytest.raises(ClientError) as exc:
        limited.ssm.get_parameter(Name="/none")
    assert _code(exc)[2] == 503
    assert limited.limits.count(target="GetParameter") == 1
    assert limited.limits.refused() == 0
