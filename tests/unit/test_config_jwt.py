"""Configuration of RFC 7523 client authentication and of extra_params."""

from __future__ import annotations

from typing import Any

import pytest

from rotator.config import (
    RESERVED_PARAMS,
    ConfigError,
    JwtAuth,
    SecretSource,
    from_env,
    from_mapping,
)

URL = "https://sso.example.com/realms/r/protocol/openid-connect/token"
KEY_PEM_MARKER = "-----BEGIN PRIVATE KEY-----MIIEvQ-MARKER"


def cred(**extra: Any) -> dict[str, Any]:
    return {
        "name": "c",
        "token_url": URL,
        "client_id": "oms",
        "targets": [{"type": "file", "path": "/tmp/t.json"}],
        **extra,
    }


def load(**extra: Any) -> Any:
    return from_mapping({"credentials": [cred(**extra)]}).credentials[0]


def error(**extra: Any) -> str:
    with pytest.raises(ConfigError) as err:
        load(**extra)
    return str(err.value)


@pytest.mark.parametrize("source", ["env", "file", "secretsmanager", "ssm"])
def test_private_key_jwt_with_each_key_source(source: str) -> None:
    c = load(auth_method="private_key_jwt", **{f"private_key_{source}": "ref"})
    assert c.client.auth_method == "private_key_jwt"
    assert c.client.secret_source is None
    assert c.client.jwt == JwtAuth(
        signing_alg="RS256", key_source=SecretSource(f"private_key_{source}", "ref")
    )
    assert c.client.jwt.assertion_lifetime_seconds == 60


def test_private_key_jwt_all_keys() -> None:
    c = load(
        auth_method="private_key_jwt",
        private_key_secretsmanager="oms/key",
        private_key_region="eu-west-1",
        private_key_id="kid-1",
        signing_alg="ES256",
        assertion_lifetime_seconds=30,
    )
    assert c.client.jwt == JwtAuth(
        signing_alg="ES256",
        key_source=SecretSource("private_key_secretsmanager", "oms/key", "eu-west-1"),
        key_id="kid-1",
        assertion_lifetime_seconds=30.0,
    )


def test_client_secret_jwt_signs_hs256_with_the_client_secret() -> None:
    c = load(auth_method="client_secret_jwt", client_secret_env="S")
    assert c.client.secret_source == SecretSource("client_secret_env", "S")
    assert c.client.jwt == JwtAuth(signing_alg="HS256")


def test_inline_private_key_is_refused_without_echoing_it() -> None:
    message = error(auth_method="private_key_jwt", private_key=KEY_PEM_MARKER)
    assert "keys are never inline" in message
    assert "MARKER" not in message


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"auth_method": "private_key_jwt"}, "needs exactly one of private_key_env"),
        (
            {"auth_method": "private_key_jwt", "private_key_file": "a", "private_key_env": "B"},
            "needs exactly one of private_key_env",
        ),
        (
            {"auth_method": "private_key_jwt", "private_key_file": "a", "client_secret_env": "S"},
            "private_key_jwt sends no client secret; remove client_secret_env",
        ),
        (
            {"auth_method": "private_key_jwt", "private_key_file": "a", "signing_alg": "HS256"},
            "signing_alg must be one of RS256, ES256, PS256: 'HS256'",
        ),
        (
            {"auth_method": "client_secret_jwt", "client_secret_env": "S", "signing_alg": "RS256"},
            "signing_alg must be one of HS256: 'RS256'",
        ),
        (
            {"auth_method": "client_secret_jwt", "client_secret_env": "S", "private_key_file": "a"},
            "client_secret_jwt signs with the client secret",
        ),
        ({"auth_method": "client_secret_jwt"}, "the client secret needs one of"),
        ({"client_secret_env": "S", "private_key_file": "a"}, "applies only to auth_method"),
        ({"client_secret_env": "S", "signing_alg": "RS256"}, "applies only to auth_method"),
        (
            {"auth_method": "private_key_jwt", "private_key_file": "a", "private_key_id": ""},
            "private_key_id must be a non-empty string",
        ),
        (
            {
                "auth_method": "private_key_jwt",
                "private_key_file": "a",
                "assertion_lifetime_seconds": 0,
            },
            "assertion_lifetime_seconds must be a positive number",
        ),
        (
            {
                "auth_method": "private_key_jwt",
                "private_key_file": "a",
                "assertion_lifetime_seconds": 3600,
            },
            "assertion_lifetime_seconds must be at most 600",
        ),
    ],
)
def test_bad_jwt_settings(extra: dict[str, Any], needle: str) -> None:
    assert needle in error(**extra)


def test_secret_methods_have_no_jwt_settings() -> None:
    assert load(client_secret_env="S").client.jwt is None


def test_extra_params_are_kept_in_order_and_lists_repeat() -> None:
    c = load(
        client_secret_env="S",
        extra_params={"audience": "oms-api", "resource": ["https://a", "https://b"]},
    )
    assert c.extra_params == (
        ("audience", "oms-api"),
        ("resource", "https://a"),
        ("resource", "https://b"),
    )


@pytest.mark.parametrize("key", RESERVED_PARAMS)
def test_extra_params_may_not_override_what_rotator_sends(key: str) -> None:
    message = error(client_secret_env="S", extra_params={key: "x"})
    assert f"extra_params.{key} may not be overridden" in message


def test_reserved_params_cover_the_issue_list() -> None:
    named = {
        "client_secret",
        "client_id",
        "grant_type",
        "client_assertion",
        "client_assertion_type",
        "refresh_token",
    }
    assert named <= set(RESERVED_PARAMS)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("audience=x", "must be a table of form fields"),
        ({"audience": 3}, "extra_params.audience must be a string or a list of strings"),
        ({"resource": []}, "extra_params.resource must be a string or a list of strings"),
        ({"resource": ["a", 1]}, "extra_params.resource must be a string or a list of strings"),
        ({" audience": "x"}, "bad form field name"),
    ],
)
def test_bad_extra_params(value: Any, needle: str) -> None:
    assert needle in error(client_secret_env="S", extra_params=value)


ENV = {
    "ROTATOR_TOKEN_URL": URL,
    "ROTATOR_CLIENT_ID": "oms",
    "ROTATOR_FILE_PATH": "/tmp/t.json",
}


def test_env_private_key_jwt() -> None:
    settings = from_env(
        {
            **ENV,
            "ROTATOR_AUTH_METHOD": "private_key_jwt",
            "ROTATOR_PRIVATE_KEY_FILE": "/run/key.pem",
            "ROTATOR_PRIVATE_KEY_ID": "kid-1",
            "ROTATOR_SIGNING_ALG": "PS256",
        }
    )
    c = settings.credentials[0].client
    assert c.secret_source is None
    assert c.jwt == JwtAuth(
        signing_alg="PS256",
        key_source=SecretSource("private_key_file", "/run/key.pem"),
        key_id="kid-1",
    )


def test_env_client_secret_jwt() -> None:
    c = (
        from_env({**ENV, "ROTATOR_AUTH_METHOD": "client_secret_jwt", "ROTATOR_CLIENT_SECRET": "s"})
        .credentials[0]
        .client
    )
    assert c.jwt == JwtAuth(signing_alg="HS256")
    assert c.secret_source == SecretSource("client_secret_env", "ROTATOR_CLIENT_SECRET")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            {"ROTATOR_AUTH_METHOD": "private_key_jwt"},
            "missing environment variable(s): ROTATOR_PRIVATE_KEY_FILE",
        ),
        (
            {
                "ROTATOR_AUTH_METHOD": "private_key_jwt",
                "ROTATOR_PRIVATE_KEY_FILE": "/k",
                "ROTATOR_CLIENT_SECRET": "s",
            },
            "sends no client secret; unset ROTATOR_CLIENT_SECRET",
        ),
        (
            {
                "ROTATOR_AUTH_METHOD": "private_key_jwt",
                "ROTATOR_PRIVATE_KEY_FILE": "/k",
                "ROTATOR_SIGNING_ALG": "HS256",
            },
            "ROTATOR_SIGNING_ALG must be one of RS256, ES256, PS256: 'HS256'",
        ),
        (
            {"ROTATOR_CLIENT_SECRET": "s", "ROTATOR_PRIVATE_KEY_FILE": "/k"},
            "ROTATOR_PRIVATE_KEY_FILE applies only to auth_method",
        ),
    ],
)
def test_env_errors_name_the_variables(extra: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_env({**ENV, **extra})
    assert needle in str(err.value)
