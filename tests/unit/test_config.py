"""Configuration: the TOML contract, the environment convention, and the errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from rotator import config
from rotator.config import ConfigError, Refresh, from_env, from_mapping, load
from rotator.errors import EXIT_USAGE

SECRET_MARKER = "s3cr3t-MARKER-value"

FULL_TOML = """
metrics_port = 9100
readiness_margin_seconds = 15

[[credentials]]
name = "oms-prod"
token_url = "https://sso.example.com/auth/realms/prod/protocol/openid-connect/token"
client_id = "oms-client"
client_secret_secretsmanager = "oms/client-secret"
client_secret_region = "eu-west-1"
scope = "oms.read oms.write"
auth_method = "client_secret_basic"
verify_url = "https://oms.example.com/oms-api/"

[credentials.refresh]
ratio = 0.8
jitter_ratio = 0.1
safety_margin_seconds = 20
max_retry_wait_seconds = 15
retry_budget_seconds = 90
connect_timeout_seconds = 2
read_timeout_seconds = 4.5

[[credentials.targets]]
type = "secretsmanager"
secret_id = "oms/token"
kms_key_id = "alias/oms"
create = true

[[credentials.targets]]
type = "ssm"
parameter = "/oms/token"
format = "raw"

[[credentials.targets]]
type = "file"
path = "/run/oms/token.json"

[[credentials]]
name = "oms-test"
token_url = "http://127.0.0.1:8080/realms/test/protocol/openid-connect/token"
client_id = "oms-test-client"
client_secret_env = "OMS_TEST_SECRET"

[[credentials.targets]]
type = "ssm"
name = "oms-test-token"
"""


def base(**overrides: Any) -> dict[str, Any]:
    cred: dict[str, Any] = {
        "name": "oms",
        "token_url": "https://sso.example.com/token",
        "client_id": "oms-client",
        "client_secret_env": "OMS_SECRET",
        "targets": [{"type": "ssm", "parameter": "/oms/token"}],
    }
    cred.update(overrides)
    return {"credentials": [cred]}


def without(key: str) -> dict[str, Any]:
    data = base()
    del data["credentials"][0][key]
    return data


def config_error(data: dict[str, Any], **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        from_mapping(data, **kw)
    assert info.value.exit_code == EXIT_USAGE
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- the TOML file


def test_full_file_round_trips_every_contract_key(tmp_path: Path) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text(FULL_TOML)

    settings = load(path, env={})

    assert settings.source == str(path)
    assert settings.metrics_port == 9100
    assert settings.readiness_margin_seconds == 15.0
    prod, test = settings.credentials
    assert prod.name == "oms-prod"
    assert prod.client is not None
    assert prod.client.token_url.endswith("/realms/prod/protocol/openid-connect/token")
    assert prod.client.client_id == "oms-client"
    assert prod.client.secret_source == config.SecretSource(
        "client_secret_secretsmanager", "oms/client-secret", "eu-west-1"
    )
    assert prod.scope == "oms.read oms.write"
    assert prod.client.auth_method == "client_secret_basic"
    assert prod.verify_url == "https://oms.example.com/oms-api/"
    assert prod.refresh == Refresh(
        ratio=0.8,
        jitter_ratio=0.1,
        safety_margin_seconds=20.0,
        max_retry_wait_seconds=15.0,
        retry_budget_seconds=90.0,
        connect_timeout_seconds=2.0,
        read_timeout_seconds=4.5,
    )
    sm, ssm, file = prod.targets
    assert (sm.type, sm.ref, sm.kms_key_id, sm.create, sm.format) == (
        "secretsmanager",
        "oms/token",
        "alias/oms",
        True,
        "json",
    )
    assert (ssm.type, ssm.ref, ssm.format, ssm.create) == ("ssm", "/oms/token", "raw", False)
    assert (file.type, file.ref) == ("file", "/run/oms/token.json")
    assert file.label == "file:/run/oms/token.json"

    # defaults, and `name` as the generic spelling of the target reference
    assert test.client is not None
    assert test.client.secret_source == config.SecretSource("client_secret_env", "OMS_TEST_SECRET")
    assert test.client.auth_method == "client_secret_post"
    assert test.scope is None and test.verify_url is None
    assert test.refresh == Refresh()
    assert test.targets[0].ref == "oms-test-token"
    assert settings.credential("oms-test") is test
    assert settings.credential(None) is prod


def test_rotator_config_variable_points_at_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(FULL_TOML)
    settings = load(None, env={"ROTATOR_CONFIG": str(path)})
    assert [c.name for c in settings.credentials] == ["oms-prod", "oms-test"]


@pytest.mark.parametrize("source", ["client_secret_env", "client_secret_file", "client_secret_ssm"])
def test_each_secret_source_is_accepted(source: str) -> None:
    data = without("client_secret_env")
    data["credentials"][0][source] = "ref-1"
    client = from_mapping(data).credentials[0].client
    assert client is not None and client.secret_source is not None
    assert (client.secret_source.kind, client.secret_source.ref) == (source, "ref-1")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="config file not found") as info:
        load(missing, env={})
    assert str(missing) in str(info.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[credentials]\nname = ")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load(path, env={})
    assert str(path) in str(info.value)


def test_unknown_subcommand_style_keys_are_rejected_at_every_level() -> None:
    assert "unknown configuration key(s): colour" in config_error({**base(), "colour": "red"})
    message = config_error(base(client_secert_env="typo"))
    assert "credentials[0].client_secert_env" in message
    message = config_error(base(refresh={"ratio": 0.7, "ratoi": 0.7}))
    assert "credentials[oms].refresh.ratoi" in message
    message = config_error(base(targets=[{"type": "ssm", "parameter": "/p", "secret_id": "x"}]))
    assert "credentials[oms].targets[0].secret_id" in message


def test_kms_key_is_refused_on_a_file_target_and_create_only_on_secretsmanager() -> None:
    assert "kms_key_id" in config_error(
        base(targets=[{"type": "file", "path": "/tmp/t", "kms_key_id": "k"}])
    )
    assert "create" in config_error(
        base(targets=[{"type": "ssm", "parameter": "/p", "create": True}])
    )


def test_inline_client_secret_is_rejected_without_echoing_it() -> None:
    message = config_error(base(client_secret=SECRET_MARKER))
    assert "client_secret" in message
    assert "never inline" in message
    assert SECRET_MARKER not in message


def test_exactly_one_secret_source() -> None:
    message = config_error(base(client_secret_file="/run/secret"))
    assert "exactly one" in message
    assert "client_secret_env" in message and "client_secret_file" in message
    message = config_error(without("client_secret_env"))
    assert "client secret needs one of" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", "bad name!"),
        ("name", ""),
        ("client_id", ""),
        ("client_id", 42),
        ("scope", ["a", "b"]),
        ("auth_method", "tls_client_auth"),
        ("token_url", "ftp://sso.example.com/token"),
        ("token_url", "not a url"),
        ("verify_url", "gopher://oms.example.com/"),
    ],
)
def test_bad_values_name_the_key_and_the_value(key: str, value: Any) -> None:
    message = config_error(base(**{key: value}))
    assert f".{key}" in message
    assert repr(value) in message or str(value) in message


@pytest.mark.parametrize("key", ["name", "token_url", "client_id", "targets"])
def test_required_keys(key: str) -> None:
    message = config_error(without(key))
    assert key in message


def test_at_least_one_credential() -> None:
    assert "[[credentials]]" in config_error({})
    assert "[[credentials]]" in config_error({"credentials": []})


def test_duplicate_names_and_targets_are_rejected() -> None:
    data = base()
    data["credentials"].append(copy.deepcopy(data["credentials"][0]))
    assert "duplicate 'oms'" in config_error(data)
    twice = {"type": "ssm", "parameter": "/p"}
    assert "duplicate 'ssm:/p'" in config_error(base(targets=[twice, dict(twice)]))


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ({"type": "s3", "bucket": "b"}, "type must be one of secretsmanager, ssm, file: 's3'"),
        ({"parameter": "/p"}, "type must be one of"),
        ({"type": "ssm", "parameter": "/p", "format": "yaml"}, "format must be one of"),
        ({"type": "ssm"}, "targets[0].parameter must be a non-empty string: None"),
        ({"type": "secretsmanager"}, "targets[0].secret_id must be a non-empty string"),
        ({"type": "file"}, "targets[0].path must be a non-empty string"),
        ({"type": "ssm", "parameter": "/p", "name": "/q"}, "give 'parameter' or 'name'"),
        ({"type": "ssm", "parameter": "oms/token"}, "must start with '/': 'oms/token'"),
        ({"type": "secretsmanager", "secret_id": "s", "create": "yes"}, "create must be"),
    ],
)
def test_bad_targets(target: dict[str, Any], needle: str) -> None:
    assert needle in config_error(base(targets=[target]))


@pytest.mark.parametrize(
    ("refresh", "needle"),
    [
        ({"ratio": 1.0}, "ratio must be between 0 and 1"),
        ({"ratio": 0}, "ratio must be a positive number: 0"),
        ({"ratio": "0.7"}, "ratio must be a number: '0.7'"),
        ({"jitter_ratio": 0.8}, "jitter_ratio must be >= 0 and below ratio: 0.8"),
        ({"safety_margin_seconds": -1}, "safety_margin_seconds must be a positive number: -1"),
        ({"retry_budget_seconds": True}, "retry_budget_seconds must be a number: True"),
        ({"max_retry_wait_seconds": float("inf")}, "max_retry_wait_seconds must be a positive"),
    ],
)
def test_bad_refresh_tuning(refresh: dict[str, Any], needle: str) -> None:
    message = config_error(base(refresh=refresh))
    assert "credentials[oms].refresh." in message
    assert needle in message


def test_jitter_may_be_zero() -> None:
    refresh = from_mapping(base(refresh={"jitter_ratio": 0})).credentials[0].refresh
    assert refresh.jitter_ratio == 0.0


def test_bad_top_level_values() -> None:
    assert "metrics_port must be a port number (0-65535): 70000" in config_error(
        {**base(), "metrics_port": 70000}
    )
    assert "metrics_port" in config_error({**base(), "metrics_port": True})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/token",
        "http://localhost/token",
        "http://[::1]:9000/token",
    ],
)
def test_plain_http_is_allowed_to_loopback(url: str) -> None:
    client = from_mapping(base(token_url=url)).credentials[0].client
    assert client is not None and client.token_url == url


@pytest.mark.parametrize(
    "url", ["http://sso.example.com/token", "http://10.0.0.1/token", "http://localhost.evil/"]
)
def test_plain_http_is_refused_elsewhere(url: str) -> None:
    message = config_error(base(token_url=url))
    assert "plain http:// is refused" in message
    assert url in message
    assert "plain http:// is refused" in config_error(base(verify_url=url))


@pytest.mark.parametrize(
    "url",
    [
        f"https://oms:{SECRET_MARKER}@sso.example.com/token",
        f"http://oms:{SECRET_MARKER}@sso.example.com/token",
        f"ftp://oms:{SECRET_MARKER}@sso.example.com/token",
    ],
)
def test_credentials_in_a_url_are_refused_and_not_echoed(url: str) -> None:
    message = config_error(base(token_url=url))
    assert "token_url" in message
    assert SECRET_MARKER not in message


def test_consumer_config_needs_no_client(tmp_path: Path) -> None:
    data = {"credentials": [{"name": "oms", "targets": [{"type": "file", "path": "/t"}]}]}
    with pytest.raises(ConfigError, match="token_url"):
        from_mapping(data)
    cred = from_mapping(data, require_client=False).credentials[0]
    assert cred.client is None  # no client part: no empty strings standing in for one
    # what is given is still validated
    data["credentials"][0]["token_url"] = "http://sso.example.com/token"
    with pytest.raises(ConfigError, match="plain http"):
        from_mapping(data, require_client=False)


# ---------------------------------------------------------------- the environment


ENV = {
    "ROTATOR_TOKEN_URL": "https://sso.example.com/realms/prod/protocol/openid-connect/token",
    "ROTATOR_CLIENT_ID": "oms-client",
    "ROTATOR_CLIENT_SECRET": SECRET_MARKER,
    "ROTATOR_SECRETSMANAGER_SECRET_ID": "oms/token",
}


def test_env_convention_full() -> None:
    env = {
        **ENV,
        "ROTATOR_SSM_PARAMETER": "/oms/token",
        "ROTATOR_FILE_PATH": "/run/oms/token",
        "ROTATOR_SCOPE": "oms.read",
        "ROTATOR_VERIFY_URL": "https://oms.example.com/oms-api/",
        "ROTATOR_CREDENTIAL_NAME": "oms-prod",
        "ROTATOR_SECRETSMANAGER_CREATE": "true",
        "ROTATOR_KMS_KEY_ID": "alias/oms",
        "ROTATOR_FORMAT": "raw",
        "ROTATOR_AUTH_METHOD": "client_secret_basic",
        "ROTATOR_METRICS_PORT": "9100",
    }
    settings = load(None, env=env)
    assert settings.source == "environment"
    assert settings.metrics_port == 9100
    (cred,) = settings.credentials
    assert cred.name == "oms-prod"
    assert cred.client is not None
    assert cred.client.token_url == env["ROTATOR_TOKEN_URL"]
    assert cred.client.client_id == "oms-client"
    assert cred.client.secret_source == config.SecretSource(
        "client_secret_env", "ROTATOR_CLIENT_SECRET"
    )
    assert cred.scope == "oms.read"
    assert cred.verify_url == "https://oms.example.com/oms-api/"
    assert cred.client.auth_method == "client_secret_basic"
    assert [(t.type, t.ref) for t in cred.targets] == [
        ("secretsmanager", "oms/token"),
        ("ssm", "/oms/token"),
        ("file", "/run/oms/token"),
    ]
    assert [t.format for t in cred.targets] == ["raw"] * 3
    assert cred.targets[0].create is True
    assert cred.targets[0].kms_key_id == cred.targets[1].kms_key_id == "alias/oms"
    assert cred.targets[2].kms_key_id is None


def test_env_defaults_and_secret_file() -> None:
    env = {k: v for k, v in ENV.items() if k != "ROTATOR_CLIENT_SECRET"}
    env["ROTATOR_CLIENT_SECRET_FILE"] = "/run/secrets/oms"
    (cred,) = from_env(env).credentials
    assert cred.name == "default"
    assert cred.client is not None
    assert cred.client.secret_source == config.SecretSource(
        "client_secret_file", "/run/secrets/oms"
    )
    assert cred.scope is None and cred.verify_url is None
    assert cred.targets[0].create is False
    assert cred.targets[0].format == "json"


@pytest.mark.parametrize(
    "missing", ["ROTATOR_TOKEN_URL", "ROTATOR_CLIENT_ID", "ROTATOR_CLIENT_SECRET"]
)
def test_env_missing_client_settings_are_named(missing: str) -> None:
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(ConfigError, match="missing environment variable") as info:
        from_env(env)
    assert missing in str(info.value)
    assert SECRET_MARKER not in str(info.value)


def test_env_without_any_target_explains_what_to_set() -> None:
    env = {k: v for k, v in ENV.items() if k != "ROTATOR_SECRETSMANAGER_SECRET_ID"}
    with pytest.raises(ConfigError) as info:
        load(None, env=env)
    message = str(info.value)
    for key in ("ROTATOR_SECRETSMANAGER_SECRET_ID", "ROTATOR_SSM_PARAMETER", "ROTATOR_FILE_PATH"):
        assert key in message
    assert "--config" in message


def test_env_secret_and_secret_file_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="not both") as info:
        from_env({**ENV, "ROTATOR_CLIENT_SECRET_FILE": "/run/s"})
    assert SECRET_MARKER not in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ROTATOR_TOKEN_URL", "http://sso.example.com/token"),
        ("ROTATOR_VERIFY_URL", "ftp://oms.example.com/"),
        ("ROTATOR_CREDENTIAL_NAME", "oms prod"),
        ("ROTATOR_FORMAT", "yaml"),
        ("ROTATOR_AUTH_METHOD", "none"),
        ("ROTATOR_SECRETSMANAGER_CREATE", "maybe"),
        ("ROTATOR_METRICS_PORT", "http"),
    ],
)
def test_env_bad_values_name_the_variable_and_value(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_env({**ENV, key: value})
    message = str(info.value)
    assert key in message
    assert value in message
    assert SECRET_MARKER not in message


def test_env_consumer_needs_only_a_target() -> None:
    (cred,) = from_env({"ROTATOR_SSM_PARAMETER": "/oms/token"}, require_client=False).credentials
    assert cred.client is None
    assert cred.targets[0].ref == "/oms/token"
    with pytest.raises(ConfigError):
        from_env({"ROTATOR_SSM_PARAMETER": "/oms/token"})


def test_unknown_env_keys_are_reported() -> None:
    env = {**ENV, "ROTATOR_CLIENT_SECERT": "x", "ROTATOR_SCOPE": "s", "HOME": "/root"}
    assert config.unknown_env_keys(env) == ["ROTATOR_CLIENT_SECERT"]


def test_settings_repr_never_shows_a_secret(tmp_path: Path) -> None:
    settings = from_env(ENV)
    assert SECRET_MARKER not in repr(settings)
    assert SECRET_MARKER not in str(settings)


def test_unknown_credential_name_lists_the_known_ones() -> None:
    settings = from_mapping(base())
    with pytest.raises(ConfigError, match=r"no credential named 'other' \(configured: oms\)"):
        settings.credential("other")


def test_an_unparseable_url_is_a_config_error_not_a_crash() -> None:
    message = config_error(base(token_url="https://[::1/token"))
    assert "token_url is not a valid URL: 'https://[::1/token'" in message
    message = config_error(base(token_url=f"https://u:{SECRET_MARKER}@[::1/token"))
    assert SECRET_MARKER not in message
