"""An SSM parameter whose KMS key is gone can be repaired (issue 15, Low).

``SsmStore.put`` reads the parameter right before writing. When that read fails
because the value cannot be decrypted (the stack's key deleted or disabled), the
value is unknown and unreadable to every consumer: rotator overwrites it. moto
does not check KMS on SSM reads, so a FaultProxy in front of it answers that one
GetParameter with AWS's error; the write then goes to moto over real HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from rotator.errors import StoreAccessDenied, StoreUnavailable
from rotator.stores.ssm import SsmStore
from rotator.testing import FaultProxy
from rotator.token import Token, decode
from tests.fixtures.aws import AwsEnv

PARAMETER = "/oms/undecryptable"
KEY = "arn:aws:kms:us-east-1:111122223333:key/0b7e1d2c-1111-2222-3333-444455556666"
JSON_ERROR = {"Content-Type": "application/x-amz-json-1.1"}
GET = "AmazonSSM.GetParameter"


def _token(seconds: float, marker: str) -> Token:
    now = datetime.now(UTC).replace(microsecond=0)
    return Token(
        access_token=f"token-{marker}",
        token_type="Bearer",
        issued_at=now,
        expires_at=now + timedelta(seconds=seconds),
    )


def _error(code: str, message: str) -> str:
    return json.dumps({"__type": code, "message": message})


@pytest.fixture
def proxy(aws: AwsEnv) -> Iterator[FaultProxy]:
    with FaultProxy(aws.endpoint) as running:
        yield running


def _published(aws: AwsEnv) -> str:
    value = aws.ssm.get_parameter(Name=PARAMETER, WithDecryption=True)["Parameter"]["Value"]
    return decode(value, "json").access_token


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "InvalidKeyId",
            f"{KEY} is pending deletion. (Service: AWSKMS; Status Code: 400; "
            "Error Code: KMSInvalidStateException)",
        ),
        (
            "AccessDeniedException",
            "The ciphertext refers to a customer master key that does not exist, does not "
            "exist in this region, or you are not allowed to access. (Service: AWSKMS)",
        ),
    ],
    ids=["key-pending-deletion", "key-gone"],
)
def test_a_value_that_cannot_be_decrypted_is_overwritten(
    aws: AwsEnv, proxy: FaultProxy, code: str, message: str
) -> None:
    store = SsmStore(aws.client("ssm", endpoint_url=proxy.url), PARAMETER)
    # Planted: a token that would win on expiry, were it readable.
    SsmStore(aws.ssm, PARAMETER).put(_token(3600, "old-key"))
    proxy.fail(400, _error(code, message), JSON_ERROR, target=GET, times=1)

    result = store.put(_token(300, "new"))

    assert result.is_ours
    assert _published(aws) == "token-new"
    assert proxy.count(target=GET) == 1  # the failed pre-read, then the write


def test_an_iam_denial_of_the_read_is_not_taken_for_an_undecryptable_value(
    aws: AwsEnv, proxy: FaultProxy
) -> None:
    store = SsmStore(aws.client("ssm", endpoint_url=proxy.url), PARAMETER)
    SsmStore(aws.ssm, PARAMETER).put(_token(3600, "kept"))
    denial = (
        "User: arn:aws:iam::111122223333:user/w is not authorized to perform: "
        f"ssm:GetParameter on resource: {PARAMETER}"
    )
    proxy.fail(400, _error("AccessDeniedException", denial), JSON_ERROR, target=GET, times=1)
    with pytest.raises(StoreAccessDenied, match="ssm:GetParameter"):
        store.put(_token(300, "new"))
    assert _published(aws) == "token-kept"


def test_a_throttled_read_is_not_taken_for_an_undecryptable_value(
    aws: AwsEnv, proxy: FaultProxy
) -> None:
    store = SsmStore(aws.client("ssm", endpoint_url=proxy.url), PARAMETER)
    SsmStore(aws.ssm, PARAMETER).put(_token(3600, "kept"))
    # every attempt (botocore retries a throttle once with the fixtures' config)
    proxy.fail(
        400, _error("ThrottlingException", "Rate exceeded"), JSON_ERROR, target=GET, times=None
    )
    with pytest.raises(StoreUnavailable):
        store.put(_token(300, "new"))
    assert _published(aws) == "token-kept"
