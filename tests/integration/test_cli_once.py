"""The CLI end to end, as a subprocess (``python -m rotator ...``): once, options,
configuration errors and logs.

See ``tests/harness/cli.py`` for the environment and what is read back.
"""

from __future__ import annotations

import json
import os
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
    STUB_SECRET,
    TEST_CLIENT_ID,
    TEST_SECRET,
    assert_clean,
    assert_json_lines,
    cc_ok,
    check_document,
    lifetime,
    parse_instant,
    read_sm,
    read_ssm,
    server_env,
    toml_str,
    write_toml,
)
from tests.harness.env import rotator_env
from tests.harness.process import cli

# ----------------------------------------------------------------------------- basics


def test_version() -> None:
    result = cli(dict(os.environ), "--version")
    assert result.code == 0, result
    assert re.fullmatch(r"rotator \d+\.\d+\.\d+\S*\n", result.stdout), result


def test_no_command_and_unknown_option_exit_2(aws: AwsEnv) -> None:
    env = rotator_env(aws)
    for args in ((), ("once", "--no-such-option"), ("rotate-now",)):
        result = cli(env, *args)
        assert result.code == 2, result
        assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- once


def test_once_publishes_to_secretsmanager_and_ssm_then_does_nothing_until_forced(
    aws: AwsEnv, kc: KeycloakStub
) -> None:
    env = server_env(aws, kc.token_url)
    results = []

    first = cli(env, "once")
    results.append(first)
    assert first.code == 0, first
    assert first.stdout == ""
    assert cc_ok(kc) == 1
    sm_doc = check_document(read_sm(aws))
    ssm_doc = check_document(read_ssm(aws))
    assert sm_doc == ssm_doc
    token = sm_doc["access_token"]
    assert token in kc.issued_tokens()
    assert kc.is_active(token)
    assert sm_doc["token_type"] == "Bearer"
    assert sm_doc["scope"] == "profile email"
    assert 299 <= lifetime(sm_doc) <= 301
    issued_at = parse_instant(sm_doc["issued_at"])
    assert abs((datetime.now(UTC) - issued_at).total_seconds()) < 30

    second = cli(env, "once")
    results.append(second)
    assert second.code == 0, second
    assert cc_ok(kc) == 1, "a fresh token must not be fetched again"
    assert kc.count() == 1
    assert json.loads(read_sm(aws) or "") == sm_doc
    assert json.loads(read_ssm(aws) or "") == sm_doc
    assert "fresh" in second.stderr

    forced = cli(env, "once", "--force")
    results.append(forced)
    assert forced.code == 0, forced
    assert cc_ok(kc) == 2
    new_doc = check_document(read_sm(aws))
    assert check_document(read_ssm(aws)) == new_doc
    assert new_doc["access_token"] != token
    assert kc.is_active(new_doc["access_token"])
    assert parse_instant(new_doc["expires_at"]) >= parse_instant(sm_doc["expires_at"])

    assert_clean(results, [STUB_SECRET, *kc.issued_tokens()])


def test_once_reads_the_client_secret_file_and_writes_a_private_file(
    aws: AwsEnv, kc: KeycloakStub, tmp_path: Path
) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(STUB_SECRET + "\n", encoding="utf-8")  # one trailing newline
    token_file = tmp_path / "out" / "token.json"
    token_file.parent.mkdir()
    env = rotator_env(aws)
    env.update(
        ROTATOR_TOKEN_URL=kc.token_url,
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_CLIENT_SECRET_FILE=str(secret_file),
        ROTATOR_FILE_PATH=str(token_file),
        ROTATOR_CREDENTIAL_NAME="oms",
    )
    result = cli(env, "once")
    assert result.code == 0, result
    doc = check_document(token_file.read_text(encoding="utf-8"))
    assert kc.is_active(doc["access_token"])
    assert token_file.stat().st_mode & 0o777 == 0o600
    leftovers = [p.name for p in token_file.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "the atomic write leaves no temp file"
    assert "credential=oms" in result.stderr
    assert_clean([result], [STUB_SECRET, *kc.issued_tokens()])


def _two_credentials_config(
    tmp_path: Path, kc: KeycloakStub, *, test_secret_file: Path, extra_prod: str = ""
) -> str:
    return write_toml(
        tmp_path,
        f"""
[[credentials]]
name = "prod"
token_url = {toml_str(kc.token_url)}
client_id = {toml_str(CLIENT_ID)}
client_secret_env = "OMS_PROD_CLIENT_SECRET"
{extra_prod}

[[credentials.targets]]
type = "secretsmanager"
secret_id = "oms/prod/token"
create = true

[[credentials.targets]]
type = "ssm"
parameter = "/oms/prod/token"

[[credentials]]
name = "test"
token_url = {toml_str(kc.token_url)}
client_id = {toml_str(TEST_CLIENT_ID)}
client_secret_file = {toml_str(str(test_secret_file))}
auth_method = "client_secret_basic"

[[credentials.targets]]
type = "ssm"
parameter = "/oms/test/token"
format = "raw"

[[credentials.targets]]
type = "file"
path = {toml_str(str(tmp_path / "test-token.json"))}
""",
    )


def test_toml_two_credentials_once_and_get(
    aws: AwsEnv, keycloak: Callable[..., KeycloakStub], tmp_path: Path
) -> None:
    kc = keycloak(
        access_token_lifespan=300, clients={CLIENT_ID: STUB_SECRET, TEST_CLIENT_ID: TEST_SECRET}
    )
    secret_file = tmp_path / "test-secret"
    secret_file.write_text(TEST_SECRET + "\n", encoding="utf-8")
    config = _two_credentials_config(tmp_path, kc, test_secret_file=secret_file)
    env = rotator_env(aws)
    env["OMS_PROD_CLIENT_SECRET"] = STUB_SECRET
    results = []

    once = cli(env, "--config", config, "once")
    results.append(once)
    assert once.code == 0, once
    assert cc_ok(kc) == 2
    by_client = {r.client_id: r.auth_method for r in kc.requests()}
    assert by_client == {CLIENT_ID: "client_secret_post", TEST_CLIENT_ID: "client_secret_basic"}

    prod = check_document(read_sm(aws, "oms/prod/token"))
    assert check_document(read_ssm(aws, "/oms/prod/token")) == prod
    assert kc.token_claims(prod["access_token"])["azp"] == CLIENT_ID  # type: ignore[index]
    raw = read_ssm(aws, "/oms/test/token")
    assert raw is not None
    assert raw == raw.strip() and not raw.startswith("{"), "format = raw writes the bare token"
    assert kc.is_active(raw)
    assert kc.token_claims(raw)["azp"] == TEST_CLIENT_ID  # type: ignore[index]
    test_doc = check_document((tmp_path / "test-token.json").read_text(encoding="utf-8"))
    assert test_doc["access_token"] == raw

    # get: the first credential by default, its first target; --credential picks another.
    default = cli(env, "--config", config, "get")
    assert default.code == 0, default
    assert default.stdout == prod["access_token"] + "\n"
    as_json = cli(env, "get", "--credential", "prod", "--json", "--config", config)
    assert as_json.code == 0, as_json
    assert json.loads(as_json.stdout) == prod
    test_raw = cli(env, "--config", config, "get", "--credential", "test")
    assert test_raw.code == 0, test_raw
    assert test_raw.stdout == raw + "\n"
    for result in (default, as_json, test_raw):
        assert_clean([result], [STUB_SECRET, TEST_SECRET], stdout_ok=True)
        assert_clean([result], kc.issued_tokens(), stdout_ok=True)

    unknown = cli(env, "--config", config, "get", "--credential", "staging")
    results.append(unknown)
    assert unknown.code == 2, unknown
    assert "'staging'" in unknown.stderr
    assert unknown.stdout == ""

    again = cli(env, "--config", config, "once")
    results.append(again)
    assert again.code == 0, again
    assert cc_ok(kc) == 2, "both tokens are fresh: nothing to fetch"
    assert_clean(results, [STUB_SECRET, TEST_SECRET, *kc.issued_tokens()])


# ----------------------------------------------------------------------------- config errors


CONFIG_ERRORS: dict[str, tuple[dict[str, str], str | None, list[str]]] = {
    # name: (environment, TOML text or None, what the message must name)
    "bad boolean": (
        {"ROTATOR_SECRETSMANAGER_CREATE": "maybe"},
        None,
        ["ROTATOR_SECRETSMANAGER_CREATE", "'maybe'"],
    ),
    "plain http": (
        {"ROTATOR_TOKEN_URL": "http://sso.example.com/auth/realms/x/protocol/openid-connect/token"},
        None,
        ["ROTATOR_TOKEN_URL", "http://sso.example.com"],
    ),
    "bad auth method": (
        {"ROTATOR_AUTH_METHOD": "tls_client_auth"},
        None,
        ["ROTATOR_AUTH_METHOD", "'tls_client_auth'"],
    ),
    "no client id": ({"ROTATOR_CLIENT_ID": ""}, None, ["ROTATOR_CLIENT_ID"]),
    "no target": (
        {"ROTATOR_SECRETSMANAGER_SECRET_ID": "", "ROTATOR_SSM_PARAMETER": ""},
        None,
        ["ROTATOR_SECRETSMANAGER_SECRET_ID", "ROTATOR_SSM_PARAMETER", "ROTATOR_FILE_PATH"],
    ),
    "toml unknown key": ({}, "lifespan = 300", ["lifespan"]),
    "toml bad value": (
        {},
        'auth_method = "tls_client_auth"',
        ["credentials[oms].auth_method", "'tls_client_auth'"],
    ),
    "toml bad refresh": (
        {},
        "[credentials.refresh]\nratio = 1.5",
        ["credentials[oms].refresh.ratio", "1.5"],
    ),
    "toml inline secret": (
        {},
        f"client_secret = {toml_str(STUB_SECRET)}",
        ["client_secret", "never inline"],
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_errors_exit_2_naming_the_key_and_value(
    aws: AwsEnv, kc: KeycloakStub, tmp_path: Path, case: str
) -> None:
    env_changes, toml_extra, names = CONFIG_ERRORS[case]
    if toml_extra is None:
        env = server_env(aws, kc.token_url)
        env.update(env_changes)
        args: tuple[str, ...] = ("once",)
    else:
        env = rotator_env(aws)
        env["OMS_CLIENT_SECRET"] = STUB_SECRET
        config = write_toml(
            tmp_path,
            f"""
[[credentials]]
name = "oms"
token_url = {toml_str(kc.token_url)}
client_id = {toml_str(CLIENT_ID)}
client_secret_env = "OMS_CLIENT_SECRET"
{toml_extra}

[[credentials.targets]]
type = "ssm"
parameter = {toml_str(PARAMETER)}
""",
        )
        args = ("--config", config, "once")
    result = cli(env, *args)
    assert result.code == 2, result
    for name in names:
        assert name in result.stderr, (name, str(result))
    assert kc.count() == 0, "a configuration error is found before any request"
    assert read_ssm(aws) is None
    assert_clean([result], [STUB_SECRET])


def test_missing_config_file_exits_2(aws: AwsEnv, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    result = cli(rotator_env(aws), "check", "--config", missing)
    assert result.code == 2, result
    assert missing in result.stderr
    env = rotator_env(aws)
    env["ROTATOR_CONFIG"] = missing
    via_env = cli(env, "once")
    assert via_env.code == 2, via_env
    assert missing in via_env.stderr


# ----------------------------------------------------------------------------- logs


def test_json_logs_one_object_per_line_and_no_secrets(aws: AwsEnv, kc: KeycloakStub) -> None:
    env = server_env(aws, kc.token_url, ROTATOR_VERIFY_URL=kc.verify_url)
    results = [
        cli(env, "--log-format", "json", "--log-level", "debug", "once"),
        cli(env, "once", "--log-format", "json", "--log-level", "debug"),
        cli(env, "once", "--force", "--log-format", "json"),
        cli(env, "--log-format", "json", "get", "--credential", "nope"),
    ]
    assert [r.code for r in results] == [0, 0, 0, 2], "\n".join(map(str, results))
    for result in results:
        records = assert_json_lines(result.stderr)
        assert all(r["level"] in ("debug", "info", "warning", "error") for r in records)
    messages = " ".join(r["message"] for r in assert_json_lines(results[0].stderr))
    assert "published" in messages and "rotated" in messages
    assert cc_ok(kc) == 2
    assert_clean(results, [STUB_SECRET, *kc.issued_tokens()])
