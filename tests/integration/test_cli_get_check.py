"""The CLI end to end, as a subprocess (``python -m rotator ...``): get and check.

See ``tests/harness/cli.py`` for the environment and what is read back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.harness.cli import (
    CLIENT_ID,
    PARAMETER,
    SECRET_ID,
    STUB_SECRET,
    assert_clean,
    cc_ok,
    check_document,
    closed_port,
    parse_instant,
    read_sm,
    read_ssm,
    server_env,
    toml_str,
    write_toml,
)
from tests.harness.env import rotator_env
from tests.harness.process import cli, wait_until

# ----------------------------------------------------------------------------- get


def test_get_nothing_published_is_nonzero(aws: AwsEnv) -> None:
    # A consumer configures only the target it reads: no token URL, no client.
    env = rotator_env(aws)
    env["ROTATOR_SSM_PARAMETER"] = PARAMETER
    for args in (("get",), ("get", "--json")):
        result = cli(env, *args)
        assert result.code == 1, result
        assert result.stdout == ""
        assert "no token published" in result.stderr
        assert_clean([result], [])


def test_get_expired_token_is_nonzero(aws: AwsEnv, keycloak: Callable[..., KeycloakStub]) -> None:
    kc = keycloak(access_token_lifespan=1)
    env = server_env(aws, kc.token_url, sm=False)
    once = cli(env, "once")
    assert once.code == 0, once
    doc = check_document(read_ssm(aws))
    expires_at = parse_instant(doc["expires_at"])
    wait_until(lambda: datetime.now(UTC) > expires_at, 60, "the published token to expire")

    consumer = rotator_env(aws)
    consumer["ROTATOR_SSM_PARAMETER"] = PARAMETER
    for args in (("get",), ("get", "--json")):
        result = cli(consumer, *args)
        assert result.code == 1, result
        assert result.stdout == "", "an expired token must not be printed"
        assert "expired" in result.stderr
        assert_clean([result], [STUB_SECRET, doc["access_token"]])


def test_get_planted_expired_document_in_secretsmanager(aws: AwsEnv) -> None:
    planted = {
        "access_token": "planted-token-8c1d",
        "token_type": "Bearer",
        "expires_at": "2020-01-01T00:05:00Z",
        "issued_at": "2020-01-01T00:00:00Z",
    }
    aws.secretsmanager.create_secret(Name=SECRET_ID, SecretString=json.dumps(planted))
    env = rotator_env(aws)
    env["ROTATOR_SECRETSMANAGER_SECRET_ID"] = SECRET_ID
    result = cli(env, "get")
    assert result.code == 1, result
    assert result.stdout == ""
    assert "expired" in result.stderr
    assert "2020-01-01T00:05:00Z" in result.stderr
    assert_clean([result], ["planted-token-8c1d"])


# ----------------------------------------------------------------------------- check


def test_check_gets_a_token_and_publishes_nothing(aws: AwsEnv, kc: KeycloakStub) -> None:
    env = server_env(aws, kc.token_url)
    result = cli(env, "check")
    assert result.code == 0, result
    assert cc_ok(kc) == 1
    assert "token endpoint: ok" in result.stdout
    assert f"target secretsmanager:{SECRET_ID}: ok" in result.stdout
    assert f"target ssm:{PARAMETER}: ok" in result.stdout
    assert read_sm(aws) is None
    assert read_ssm(aws) is None
    assert aws.secretsmanager.list_secrets()["SecretList"] == []
    assert_clean([result], [STUB_SECRET, *kc.issued_tokens()])


def test_check_calls_verify_url(aws: AwsEnv, kc: KeycloakStub) -> None:
    env = server_env(aws, kc.token_url, ROTATOR_VERIFY_URL=kc.verify_url)
    result = cli(env, "check")
    assert result.code == 0, result
    assert "verify_url: ok" in result.stdout
    assert kc.verify_count(ok=True) == 1
    assert read_ssm(aws) is None
    assert_clean([result], [STUB_SECRET, *kc.issued_tokens()])


@pytest.mark.parametrize("legacy_errors", [False, True], ids=["unauthorized_client", "legacy"])
def test_wrong_client_secret_exits_3_at_once(
    aws: AwsEnv, keycloak: Callable[..., KeycloakStub], legacy_errors: bool
) -> None:
    kc = keycloak(access_token_lifespan=300, legacy_errors=legacy_errors)
    wrong = "wrong-secret-5e2b0c"
    env = server_env(aws, kc.token_url, secret=wrong)
    check = cli(env, "check")
    assert check.code == 3, check
    assert "FAILED" in check.stdout
    once = cli(env, "once")  # the default retry budget is about a minute
    assert once.code == 3, once
    assert kc.count() == 2, "one request each: a rejection is not retried"
    assert "retry_in=" not in once.stderr
    assert kc.count(outcome="ok") == 0
    assert read_sm(aws) is None
    assert read_ssm(aws) is None
    assert_clean([check, once], [wrong, STUB_SECRET])


@pytest.mark.parametrize("command", ["check", "once"])
def test_unreachable_token_endpoint_exits_1_within_the_retry_budget(
    aws: AwsEnv, tmp_path: Path, command: str
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/auth/realms/astore-p2p/protocol/openid-connect/token"
    config = write_toml(
        tmp_path,
        f"""
[[credentials]]
name = "oms"
token_url = {toml_str(url)}
client_id = {toml_str(CLIENT_ID)}
client_secret_env = "OMS_CLIENT_SECRET"

[credentials.refresh]
retry_budget_seconds = 2

[[credentials.targets]]
type = "ssm"
parameter = {toml_str(PARAMETER)}
""",
    )
    env = rotator_env(aws)
    env["OMS_CLIENT_SECRET"] = STUB_SECRET
    result = cli(env, "--config", config, command)
    assert result.code == 1, result
    # within the 2 s budget: the back-offs it planned, not the time it took
    waits = [float(w) for w in re.findall(r"retry_in=([0-9.]+)s", result.stderr)]
    assert sum(waits) <= 2, result
    assert "unreachable" in result.stdout + result.stderr
    assert read_ssm(aws) is None
    assert_clean([result], [STUB_SECRET])
