"""A target naming a Secrets Manager replica (read-only) gets one clear error naming the
primary region, through the AWS-limits proxy (which refuses every write to a replica)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.config import Config

from rotator.errors import StoreRejected
from rotator.stores.secretsmanager import SecretsManagerStore
from rotator.token import Token
from tests.fixtures.aws import AwsEnv

SECRET_ID = "oms/replicated"
NOW = datetime.now(UTC)


def replica_store(aws: AwsEnv) -> SecretsManagerStore:
    aws.secretsmanager.create_secret(
        Name=SECRET_ID, SecretString="{}", AddReplicaRegions=[{"Region": "eu-west-1"}]
    )
    client: Any = aws.client(
        "secretsmanager", region_name="eu-west-1", config=Config(retries={"total_max_attempts": 1})
    )
    return SecretsManagerStore(client, SECRET_ID)


def test_publish_to_a_replica_names_the_primary_region(aws_limits: AwsEnv) -> None:
    store = replica_store(aws_limits)
    token = Token("at-replica-7c1d", "Bearer", NOW, NOW + timedelta(hours=1))
    with pytest.raises(StoreRejected) as exc:
        store.put(token)
    message = str(exc.value)
    assert "read-only replica" in message
    assert "primary secret in region us-east-1" in message
    assert "eu-west-1" in message
    assert "\n" not in message
    assert not exc.value.is_transient
    assert aws_limits.limits.versions_created(SECRET_ID) == 1  # only the primary's first


def test_check_pings_a_replica_as_an_error(aws_limits: AwsEnv) -> None:
    store = replica_store(aws_limits)
    with pytest.raises(StoreRejected) as exc:
        store.ping()
    assert "primary secret in region us-east-1" in str(exc.value)
    assert aws_limits.limits.count(target="PutSecretValue") == 0
