"""The AWS error map: every botocore/AWS failure becomes one StoreError kind, on one line,
without the value."""

from __future__ import annotations

import re
import socket
from typing import Any

import boto3
import pytest
import requests
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from rotator.errors import (
    StoreAccessDenied,
    StoreError,
    StoreNotFound,
    StoreRejected,
    StoreUnavailable,
)
from rotator.stores import SecretsManagerStore, SsmStore
from rotator.stores.aws import map_aws_error
from tests.contract.test_store_contract import PARAMETER, SECRET_ID, make_token


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the AWS error map ----------------------------------------------------------


def client_error(code: str, message: str = "something", status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutSecretValue")


def mapped(exc: Exception) -> StoreError:
    return map_aws_error(exc, target="oms/token", action="secretsmanager:PutSecretValue")


@pytest.mark.parametrize(
    "code",
    [
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyUpdates",
        "ProvisionedThroughputExceeded",
    ],
)
def test_map_throttling_is_unavailable(code: str) -> None:
    error = mapped(client_error(code, "Rate exceeded"))
    assert type(error) is StoreUnavailable
    assert error.is_transient
    assert (
        str(error) == f"secretsmanager:PutSecretValue on oms/token throttled: {code}: Rate exceeded"
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("InternalServiceError", 500),
        ("InternalFailure", 500),
        ("ServiceUnavailable", 503),
        ("InternalServerError", 500),
        ("SomethingNew", 502),
        ("", 504),
        ("Whatever", 429),
    ],
)
def test_map_server_errors_are_unavailable(code: str, status: int) -> None:
    assert type(mapped(client_error(code, status=status))) is StoreUnavailable


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="https://secretsmanager.us-east-1.amazonaws.com"),
        ConnectionClosedError(endpoint_url="https://x"),
        ReadTimeoutError(endpoint_url="https://x"),
        ConnectTimeoutError(endpoint_url="https://x"),
        urllib3.exceptions.ProtocolError("Connection aborted."),
        urllib3.exceptions.NewConnectionError(None, "refused"),  # type: ignore[arg-type]
        requests.exceptions.ConnectionError("reset"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_map_connection_errors_are_unavailable(exc: Exception) -> None:
    error = mapped(exc)
    assert type(error) is StoreUnavailable
    assert str(error).startswith("secretsmanager:PutSecretValue on oms/token unavailable: ")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AccessDeniedException", "User: arn:aws:iam::1:user/x is not authorized"),
        ("AccessDenied", "not authorized"),
        ("UnrecognizedClientException", "The security token included in the request is invalid"),
        ("KMSAccessDeniedException", "no grant"),
        ("AccessDeniedException", "Access to KMS is not allowed"),
        ("DecryptionFailure", "can't decrypt the protected secret text using the provided KMS key"),
    ],
)
def test_map_access_errors(code: str, message: str) -> None:
    error = mapped(client_error(code, message, status=400))
    assert type(error) is StoreAccessDenied
    assert str(error).startswith("secretsmanager:PutSecretValue on oms/token denied")
    assert message in str(error)
    assert error.target == "oms/token"
    assert error.action == "secretsmanager:PutSecretValue"


def test_map_access_denied_message_shape() -> None:
    error = mapped(client_error("AccessDeniedException", "User: u is not authorized"))
    assert (
        str(error) == "secretsmanager:PutSecretValue on oms/token denied: User: u is not authorized"
    )


def test_map_moto_xml_denial() -> None:
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error>'
        "<Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/u is not "
        "authorized to perform: secretsmanager:PutSecretValue</Message><Type>Sender</Type>"
        "</Error></Errors></ErrorResponse>"
    )
    error = mapped(client_error("403", xml, status=403))
    assert type(error) is StoreAccessDenied
    assert str(error) == (
        "secretsmanager:PutSecretValue on oms/token denied: User: arn:aws:iam::123456789012:"
        "user/u is not authorized to perform: secretsmanager:PutSecretValue"
    )


@pytest.mark.parametrize("code", ["ResourceNotFoundException", "ParameterNotFound"])
def test_map_not_found(code: str) -> None:
    assert type(mapped(client_error(code, status=404))) is StoreNotFound


def test_map_no_credentials() -> None:
    error = mapped(NoCredentialsError())
    assert type(error) is StoreAccessDenied
    assert "no AWS credentials found" in str(error)


def test_map_everything_else_is_rejected_on_one_line_without_the_value() -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.c2ln"
    exc = client_error(
        "ValidationException", f"1 validation error:\nValue '{secret}' failed\nto satisfy"
    )
    error = map_aws_error(exc, target="/oms/token", action="ssm:PutParameter", redact=[secret])
    assert type(error) is StoreRejected
    assert not error.is_transient
    assert "\n" not in str(error)
    assert secret not in str(error)
    assert str(error).startswith("ssm:PutParameter on /oms/token rejected: ValidationException")

    validation = mapped(
        ParamValidationError(report=f"Invalid type for parameter X, value: {secret}")
    )
    assert type(validation) is StoreRejected
    assert secret not in str(validation)
    assert type(mapped(ValueError("odd"))) is StoreRejected


def test_map_long_messages_are_cut() -> None:
    error = mapped(client_error("ValidationException", "x" * 5_000))
    assert len(str(error)) <= 300


@pytest.mark.parametrize("service", ["secretsmanager", "ssm"])
def test_closed_port_is_unavailable(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    make: Any = boto3.client
    client: Any = make(
        service,
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2),
    )
    store: SecretsManagerStore | SsmStore
    if service == "secretsmanager":
        store = SecretsManagerStore(client, SECRET_ID, create=True)
        action = "secretsmanager:GetSecretValue"
    else:
        store = SsmStore(client, PARAMETER)
        action = "ssm:GetParameter"
    for call in (store.get, store.ping, lambda: store.put(make_token("json"))):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert info.value.is_transient
        assert isinstance(info.value.__cause__, EndpointConnectionError)
    with pytest.raises(StoreUnavailable, match=re.escape(action)):
        store.get()
