"""No wasted Secrets Manager versions, counted by the AWS-limits proxy in front of moto.

* a publish retried after its PutSecretValue was applied (the promote failed): one version
  (the ClientRequestToken is derived from the value, so the retry is a no-op on AWS);
* a publish of the token that is already current: no PutSecretValue at all;
* two writers publishing the same token: one version;
* the ClientRequestToken never reveals the token.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.config import Config

from rotator.errors import StoreUnavailable
from rotator.stores.secretsmanager import SecretsManagerStore, request_token
from rotator.token import Token, encode
from tests.fixtures.aws import AwsEnv

SECRET_ID = "oms/token"
NOW = datetime(2031, 5, 4, 12, 0, 0, tzinfo=UTC)


def make_token(tag: str, lifetime: int = 3600) -> Token:
    return Token(
        access_token=f"at-{tag}-4f1c2b9e8d7a6c5b",
        token_type="Bearer",
        issued_at=NOW,
        expires_at=NOW + timedelta(seconds=lifetime),
    )


def store(aws: AwsEnv) -> SecretsManagerStore:
    client: Any = aws.client(
        "secretsmanager", config=Config(retries={"total_max_attempts": 1}, read_timeout=30)
    )
    return SecretsManagerStore(client, SECRET_ID, create=True)


def versions(aws: AwsEnv) -> list[dict[str, Any]]:
    page = aws.secretsmanager.list_secret_version_ids(SecretId=SECRET_ID, IncludeDeprecated=True)
    found: list[dict[str, Any]] = page["Versions"]
    return found


def current(aws: AwsEnv) -> str:
    value = aws.secretsmanager.get_secret_value(SecretId=SECRET_ID, VersionStage="AWSCURRENT")
    access: str = json.loads(value["SecretString"])["access_token"]
    return access


def test_a_retried_publish_creates_one_version(aws_limits: AwsEnv) -> None:
    sm = store(aws_limits)
    sm.put(make_token("first"))  # creates the secret: version 1
    assert aws_limits.limits.versions_created(SECRET_ID) == 1
    second = make_token("second", lifetime=3700)
    # PutSecretValue is applied, then the promote fails: the publish is retried
    aws_limits.limits.fail(503, times=1, target="UpdateSecretVersionStage")
    with pytest.raises(StoreUnavailable):
        sm.put(second)
    assert aws_limits.limits.versions_created(SECRET_ID) == 2
    sm.put(second)  # the retry of the same token
    assert aws_limits.limits.versions_created(SECRET_ID) == 2
    assert len(versions(aws_limits)) == 2
    assert current(aws_limits) == second.access_token


def test_no_put_when_the_secret_already_holds_the_token(aws_limits: AwsEnv) -> None:
    sm = store(aws_limits)
    token = make_token("same")
    sm.put(token)
    puts = aws_limits.limits.count(target="PutSecretValue")
    result = sm.put(token)  # e.g. a replica adopting it, or a retried step
    assert result.published == token
    assert aws_limits.limits.count(target="PutSecretValue") == puts
    assert aws_limits.limits.versions_created(SECRET_ID) == 1


def test_two_writers_with_the_same_token_converge_on_one_version(aws_limits: AwsEnv) -> None:
    one, two = store(aws_limits), store(aws_limits)
    one.put(make_token("base"))
    base = one.get()
    token = make_token("shared", lifetime=3700)
    one.put(token, base)
    two.put(token, base)  # read before the first writer's put: a stale basis
    assert aws_limits.limits.versions_created(SECRET_ID) == 2
    assert current(aws_limits) == token.access_token


def test_client_request_token_is_a_keyed_digest_not_the_token() -> None:
    token = make_token("secret-part")
    value = encode(token, "json")
    derived = request_token(SECRET_ID, value)
    assert 32 <= len(derived) <= 64
    assert derived == request_token(SECRET_ID, value)  # a retry sends the same
    assert derived != request_token("other/secret", value)
    assert derived != request_token(SECRET_ID, encode(make_token("other"), "json"))
    assert "secret-part" not in derived
    assert all(c in "0123456789abcdef-" for c in derived)
