"""The pacer in front of real boto3 calls, against the AWS-limits proxy's token buckets:
a burst of PutParameter from several threads is throttled without pacing and never with it."""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import ClientError

from rotator.app import AwsClients
from rotator.pacing import Pacers, Pacing
from tests.fixtures.aws import AwsEnv


def burst(client: Any, n: int, threads: int = 4) -> list[str]:
    errors: list[str] = []

    def put(k: int) -> None:
        try:
            client.put_parameter(Name=f"/paced/{k}", Value="v", Type="SecureString", Overwrite=True)
        except ClientError as exc:
            errors.append(exc.response["Error"]["Code"])

    workers = [
        threading.Thread(target=lambda i=i: [put(k) for k in range(i, n, threads)])
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


def test_put_parameter_burst_is_paced_under_the_rate(aws_limits: AwsEnv, monkeypatch: Any) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_limits.endpoint)
    aws_limits.limits.set_rate("ssm:write", 1.0)  # one a second, no burst
    unpaced = AwsClients().client("ssm")
    assert "ThrottlingException" in burst(unpaced, 12)  # the control: unpaced, throttled

    aws_limits.limits.set_rate("ssm:write", 3.0)  # buckets full again
    before = aws_limits.limits.refused("ThrottlingException")
    pacers = Pacers(Pacing.from_env({}))  # the default: 2 PutParameter a second
    paced = AwsClients(pacers=pacers).client("ssm")
    assert burst(paced, 8) == []
    assert aws_limits.limits.refused("ThrottlingException") == before
    assert aws_limits.limits.count(target="PutParameter") >= 8 + 3
    assert pacers.waited[("ssm:write", "us-east-1")] > 0
