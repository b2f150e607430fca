"""What only one AWS backend does: Secrets Manager stages and creation, SSM tiers. The
file and memory stores: ``test_stores_file.py``; the AWS error map:
``test_stores_aws_errors.py``."""

from __future__ import annotations

import http.client
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import botocore
import pytest
from botocore.exceptions import (
    ClientError,
)

from rotator.errors import (
    StoreAccessDenied,
    StoreNotFound,
    StoreValueTooLarge,
)
from rotator.stores import SecretsManagerStore, SsmStore
from rotator.stores import secretsmanager as sm_module
from rotator.stores import ssm as ssm_module
from rotator.token import Token
from tests.contract.test_store_contract import BASE, PARAMETER, SECRET_ID, make_token

REPO = Path(__file__).resolve().parents[2]


def opaque(size: int, char: str = "x") -> Token:
    """A raw-format token of exactly `size` characters with no readable expiry."""
    return Token(
        access_token=char * size,
        token_type="Bearer",
        issued_at=BASE,
        expires_at=BASE + timedelta(seconds=300),
    )


def stages(aws: Any) -> dict[str | None, list[str]]:
    described = aws.secretsmanager.describe_secret(SecretId=SECRET_ID)
    return {v: sorted(s) for v, s in described.get("VersionIdsToStages", {}).items()}


def record_calls(client: Any) -> list[str]:
    """The names of the operations `client` sends from now on (botocore's own event hook)."""
    calls: list[str] = []

    def before_call(model: Any, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-call", before_call)
    return calls


# -- IAM actions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "service"), [(sm_module, "secretsmanager"), (ssm_module, "ssm")]
)
def test_iam_actions_match_the_client_calls(module: Any, service: str) -> None:
    source = Path(module.__file__).read_text(encoding="utf-8")
    methods = set(re.findall(r"self\._client\.(\w+)\(", source))
    assert methods
    make: Any = boto3.client
    model = make(service, region_name="us-east-1").meta.service_model
    by_method = {botocore.xform_name(op): op for op in model.operation_names}
    used = {f"{service}:{by_method[m]}" for m in methods}
    assert used == set(module.IAM_ACTIONS)
    assert len(module.IAM_ACTIONS) == len(set(module.IAM_ACTIONS))


# -- Secrets Manager ----------------------------------------------------------


def test_sm_missing_secret_without_create_is_not_found(aws: Any) -> None:
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID)
    assert store.name == f"secretsmanager:{SECRET_ID}"
    assert store.get().is_missing
    with pytest.raises(StoreNotFound) as put_info:
        store.put(make_token("json"))
    message = str(put_info.value)
    assert SECRET_ID in message
    assert "create = true" in message
    assert put_info.value.action == "secretsmanager:PutSecretValue"
    with pytest.raises(StoreNotFound, match="create = true"):
        store.ping()


def test_sm_create_true_creates_with_kms_key(aws: Any) -> None:
    store = SecretsManagerStore(
        aws.secretsmanager, SECRET_ID, create=True, kms_key_id="alias/rotator-test"
    )
    store.ping()  # missing is fine: put creates it
    token = make_token("json")
    result = store.put(token)
    assert result.is_ours
    described = aws.secretsmanager.describe_secret(SecretId=SECRET_ID)
    assert described["KmsKeyId"] == "alias/rotator-test"
    assert stages(aws) == {result.version: ["AWSCURRENT"]}
    assert store.get().token == token
    store.ping()


def test_sm_publish_moves_stages_and_pending_only_on_current(aws: Any) -> None:
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID, create=True)
    first = store.put(make_token("json", 300))
    second = store.put(make_token("json", 600))
    assert first.version != second.version
    assert stages(aws) == {
        first.version: ["AWSPREVIOUS"],
        second.version: ["AWSCURRENT", "RotatorPending"],
    }
    third = store.put(make_token("json", 900))
    now = stages(aws)
    # the pending label moved off the old version with the next Put: only the current has it
    assert now[third.version] == ["AWSCURRENT", "RotatorPending"]
    assert now[second.version] == ["AWSPREVIOUS"]
    assert [v for v, s in now.items() if "RotatorPending" in s] == [third.version]


def test_sm_lost_race_retries_against_the_new_version(aws: Any) -> None:
    ours = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    theirs = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    ours.put(make_token("json", 100))
    basis = ours.get()
    between = theirs.put(make_token("json", 300))
    mine = make_token("json", 600)
    calls = record_calls(ours._client)
    result = ours.put(mine, basis)
    assert result.is_ours
    assert calls == [
        "PutSecretValue",
        "UpdateSecretVersionStage",  # fails: AWSCURRENT moved since our read
        "GetSecretValue",
        "UpdateSecretVersionStage",  # against the winner's version
    ]
    now = stages(aws)
    assert now[result.version] == ["AWSCURRENT", "RotatorPending"]
    assert now[between.version] == ["AWSPREVIOUS"]


def test_sm_later_basis_means_no_call_and_winner_adoption_means_no_promotion(aws: Any) -> None:
    ours = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    theirs = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    later = make_token("json", 900)
    ours.put(later)
    basis = ours.get()
    calls = record_calls(ours._client)
    assert not ours.put(make_token("json", 300), basis).is_ours
    assert calls == []

    old = ours.get()
    winner = make_token("json", 1200)
    theirs.put(winner)
    calls.clear()
    result = ours.put(make_token("json", 1000), old)
    assert (result.is_ours, result.published) == (False, winner)
    assert calls == [
        "PutSecretValue",
        "UpdateSecretVersionStage",
        "GetSecretValue",
        "UpdateSecretVersionStage",  # drop our pending label from our unused version
    ]
    assert all("RotatorPending" not in s for s in stages(aws).values())


def test_sm_empty_secret_gets_its_first_version(aws: Any) -> None:
    aws.secretsmanager.create_secret(Name=SECRET_ID)  # as Terraform does: no value yet
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID)
    store.ping()
    assert store.get().is_missing
    token = make_token("json")
    result = store.put(token)
    assert result.is_ours
    # the pending label stays on the current version until the next Put moves it
    assert stages(aws) == {result.version: ["AWSCURRENT", "RotatorPending"]}
    assert store.get().token == token


def test_sm_create_race_falls_back_to_compare_and_set(aws: Any) -> None:
    ours = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    theirs = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    basis = ours.get()
    theirs.put(make_token("json", 300))
    mine = make_token("json", 600)
    result = ours.put(mine, basis)
    assert result.is_ours
    assert ours.get().token == mine


def test_sm_binary_secret_is_unreadable(aws: Any) -> None:
    aws.secretsmanager.create_secret(Name=SECRET_ID, SecretBinary=b"\x00\x01")
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID)
    reading = store.get()
    assert reading.is_unreadable
    assert "SecretBinary" in (reading.problem or "")
    token = make_token("json")
    assert store.put(token, reading).is_ours
    assert store.get().token == token


def test_sm_size_limit_is_checked_before_any_call(aws: Any) -> None:
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID, fmt="raw", create=True)
    calls = record_calls(aws.secretsmanager)
    with pytest.raises(StoreValueTooLarge) as info:
        store.put(opaque(65_537))
    assert calls == []
    assert "65537 bytes" in str(info.value)
    assert "x" * 50 not in str(info.value)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        aws.secretsmanager.describe_secret(SecretId=SECRET_ID)
    with pytest.raises(StoreValueTooLarge):
        store.put(opaque(32_769, "\u00e9"))  # 65,538 bytes in UTF-8
    assert store.put(opaque(65_536)).is_ours


def test_sm_put_denied_names_action_and_secret(aws: Any) -> None:
    SecretsManagerStore(aws.secretsmanager, SECRET_ID, create=True).put(make_token("json", 300))
    aws.deny("secretsmanager:PutSecretValue")
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID, create=True)
    assert store.get().token is not None  # everything else is still allowed
    store.ping()
    token = make_token("json", 600)
    with pytest.raises(StoreAccessDenied) as info:
        store.put(token)
    message = str(info.value)
    assert message.startswith(f"secretsmanager:PutSecretValue on {SECRET_ID} denied: ")
    assert "not authorized" in message
    assert "<" not in message and "\n" not in message
    assert token.access_token not in message
    assert info.value.action == "secretsmanager:PutSecretValue"
    assert isinstance(info.value.__cause__, ClientError)

    aws.allow_all()
    assert store.put(token).is_ours


def test_sm_get_denied(aws: Any) -> None:
    aws.deny("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret")
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID)
    with pytest.raises(StoreAccessDenied, match="secretsmanager:GetSecretValue on oms/token"):
        store.get()
    with pytest.raises(StoreAccessDenied, match="secretsmanager:DescribeSecret on oms/token"):
        store.ping()


def test_deny_makes_the_old_keys_unrecognised(aws: Any) -> None:
    old = aws.client("ssm")
    aws.deny("ssm:PutParameter")
    with pytest.raises(StoreAccessDenied, match="ssm:GetParameter on /oms/token denied"):
        SsmStore(old, PARAMETER).get()


# -- SSM ---------------------------------------------------------------------


def describe_parameter(aws: Any) -> dict[str, Any]:
    found = aws.ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [PARAMETER]}])[
        "Parameters"
    ]
    assert len(found) == 1
    parameter: dict[str, Any] = found[0]
    return parameter


def test_ssm_writes_securestring_standard_and_versions(aws: Any) -> None:
    store = SsmStore(aws.ssm, PARAMETER)
    assert store.name == f"ssm:{PARAMETER}"
    store.ping()  # missing is fine: put creates it
    first = store.put(make_token("json", 300))
    second = store.put(make_token("json", 600))
    assert (first.version, second.version) == ("1", "2")
    described = describe_parameter(aws)
    assert described["Type"] == "SecureString"
    assert described["Tier"] == "Standard"
    assert described["KeyId"] == "alias/aws/ssm"
    history = aws.ssm.get_parameter_history(Name=PARAMETER, WithDecryption=False)["Parameters"]
    assert all(not h.get("Labels") for h in history)
    assert store.get().version == "2"


def test_ssm_uses_the_given_kms_key(aws: Any) -> None:
    SsmStore(aws.ssm, PARAMETER, kms_key_id="alias/rotator-test").put(make_token("json"))
    assert describe_parameter(aws)["KeyId"] == "alias/rotator-test"


@pytest.mark.parametrize(
    ("token", "tier"),
    [
        (opaque(4_096), "Standard"),
        (opaque(4_097), "Advanced"),
        (opaque(2_049, "\u00e9"), "Advanced"),  # 4,098 bytes, 2,049 characters
        (opaque(5_000), "Advanced"),
        (opaque(8_192), "Advanced"),
    ],
    ids=["4096", "4097", "4098-bytes-utf8", "5000", "8192"],
)
def test_ssm_tier_follows_the_utf8_size(aws: Any, token: Token, tier: str) -> None:
    store = SsmStore(aws.ssm, PARAMETER, fmt="raw")
    assert store.put(token).is_ours
    assert describe_parameter(aws)["Tier"] == tier
    assert store.get().value == token.access_token


@pytest.mark.parametrize("size", [8_193, 9_000])
def test_ssm_too_large_is_refused_before_any_call(aws: Any, size: int) -> None:
    store = SsmStore(aws.ssm, PARAMETER, fmt="raw")
    calls = record_calls(aws.ssm)
    with pytest.raises(StoreValueTooLarge) as info:
        store.put(opaque(size))
    assert calls == []
    assert f"{size} bytes" in str(info.value)
    assert info.value.action == "ssm:PutParameter"
    with pytest.raises(ClientError, match="ParameterNotFound"):
        aws.ssm.get_parameter(Name=PARAMETER)


def test_ssm_put_denied_names_action_and_parameter(aws: Any) -> None:
    aws.deny("ssm:PutParameter")
    store = SsmStore(aws.ssm, PARAMETER)
    store.ping()
    token = make_token("json")
    with pytest.raises(StoreAccessDenied) as info:
        store.put(token)
    message = str(info.value)
    assert message.startswith(f"ssm:PutParameter on {PARAMETER} denied: ")
    assert token.access_token not in message
    with pytest.raises(ClientError, match="ParameterNotFound"):
        aws.ssm.get_parameter(Name=PARAMETER)


def test_ssm_get_denied_fails_ping(aws: Any) -> None:
    aws.deny("ssm:GetParameter")
    with pytest.raises(StoreAccessDenied, match="ssm:GetParameter on /oms/token"):
        SsmStore(aws.ssm, PARAMETER).ping()


class _TierRefusingProxy(ThreadingHTTPServer):
    """Forwards to moto, refusing a Standard write to a parameter it saw go Advanced.

    moto lets a parameter go back from Advanced to Standard; AWS does not.
    """

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = urllib.parse.urlsplit(upstream)
        self.advanced: set[str] = set()
        self.tiers: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _TierRefusingProxy

    def log_message(self, fmt: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("X-Amz-Target") == "AmazonSSM.PutParameter":
            request = json.loads(body)
            tier = request.get("Tier", "Standard")
            self.server.tiers.append(tier)
            if tier == "Standard" and request["Name"] in self.server.advanced:
                self._reply(
                    400,
                    {
                        "__type": "ValidationException",
                        "message": "This parameter uses the advanced-parameter tier. You can't "
                        "downgrade a parameter from the advanced-parameter tier to the "
                        "standard-parameter tier.",
                    },
                )
                return
            if tier == "Advanced":
                self.server.advanced.add(request["Name"])
        connection = http.client.HTTPConnection(
            self.server.upstream.hostname or "127.0.0.1", self.server.upstream.port, timeout=10
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        connection.request("POST", self.path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in {"connection", "transfer-encoding", "content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        connection.close()

    def _reply(self, status: int, payload: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def tier_proxy(aws: Any) -> Iterator[_TierRefusingProxy]:
    proxy = _TierRefusingProxy(aws.endpoint)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(5)


def test_ssm_retries_advanced_when_aws_refuses_a_downgrade(
    aws: Any, tier_proxy: _TierRefusingProxy
) -> None:
    client = aws.client("ssm", endpoint_url=tier_proxy.endpoint)
    store = SsmStore(client, PARAMETER, fmt="raw")
    big = opaque(5_000)
    store.put(big)
    small = Token(
        access_token="small-token",
        token_type="Bearer",
        issued_at=BASE,
        expires_at=BASE + timedelta(seconds=600),
    )
    result = store.put(small)
    assert result.is_ours
    assert tier_proxy.tiers == ["Advanced", "Standard", "Advanced"]
    assert describe_parameter(aws)["Tier"] == "Advanced"
    assert store.get().value == "small-token"
