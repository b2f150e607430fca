"""The one environment for a rotator subprocess: an allow-list, nothing else from the host.

A developer's ``AWS_PROFILE``, ``ROTATOR_*`` or proxy settings never reach the process
under test: only ``KEEP`` is copied, AWS configuration files are pointed at /dev/null,
and the moto server's endpoint and keys are set when an ``AwsEnv`` (or its endpoint) is
given.
"""

from __future__ import annotations

import os

from tests.fixtures.aws import REGION, AwsEnv

KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def rotator_env(aws: AwsEnv | str | None = None, **extra: str) -> dict[str, str]:
    """Environment for a rotator subprocess: only what it needs, nothing from the host.

    ``aws`` is the ``aws`` fixture, or just its endpoint (the keys are then the ones the
    fixture set for this test)."""
    env = {key: value for key in KEEP if (value := os.environ.get(key))}
    env["PYTHONUNBUFFERED"] = "1"
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    if aws is not None:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = REGION
    if isinstance(aws, AwsEnv):
        env.update(
            AWS_ACCESS_KEY_ID=aws.access_key,
            AWS_SECRET_ACCESS_KEY=aws.secret_key,
            AWS_ENDPOINT_URL=aws.endpoint,
        )
    elif aws is not None:
        env["AWS_ENDPOINT_URL"] = aws
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            if value := os.environ.get(key):
                env[key] = value
    if aws is not None and not (isinstance(aws, AwsEnv) and aws.limits is not None):
        # Plain moto has no version quota: short test tokens may go to Secrets Manager
        # (rotator warns). Through the AWS-limits proxy (aws_limits) the real rules apply.
        env["ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY"] = "100000"
    env.update(extra)
    return env
