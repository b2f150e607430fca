"""One parser for both sources (issue 11, part 2): the environment becomes the mapping
a TOML file gives and is validated once; process-level settings come from the
environment mapping the CLI is handed, never from os.environ behind its back."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rotator import cli
from rotator.config import (
    ConfigError,
    Process,
    from_env,
    from_mapping,
    once_interval,
    process_settings,
)
from rotator.stores.file import FileStore
from tests.fakes import make_token

ENV = {
    "ROTATOR_CREDENTIAL_NAME": "oms",
    "ROTATOR_TOKEN_URL": "https://sso.example.com/token",
    "ROTATOR_CLIENT_ID": "oms-client",
    "ROTATOR_CLIENT_SECRET_FILE": "/run/secrets/oms",
    "ROTATOR_SCOPE": "oms.read",
    "ROTATOR_AUTH_METHOD": "client_secret_basic",
    "ROTATOR_VERIFY_URL": "https://oms.example.com/api",
    "ROTATOR_PROBE_INTERVAL_SECONDS": "15",
    "ROTATOR_SECRETSMANAGER_SECRET_ID": "oms/token",
    "ROTATOR_SECRETSMANAGER_CREATE": "yes",
    "ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY": "50",
    "ROTATOR_KMS_KEY_ID": "alias/oms",
    "ROTATOR_SSM_PARAMETER": "/oms/token",
    "ROTATOR_FILE_PATH": "/run/oms/token",
    "ROTATOR_FILE_MODE": "0640",
    "ROTATOR_FORMAT": "raw",
    "ROTATOR_METRICS_PORT": "9100",
    "ROTATOR_MAX_WORKERS": "4",
}
TOML: dict[str, Any] = {
    "metrics_port": 9100,
    "max_workers": 4,
    "credentials": [
        {
            "name": "oms",
            "token_url": "https://sso.example.com/token",
            "client_id": "oms-client",
            "client_secret_file": "/run/secrets/oms",
            "scope": "oms.read",
            "auth_method": "client_secret_basic",
            "verify_url": "https://oms.example.com/api",
            "probe_interval_seconds": 15,
            "targets": [
                {
                    "type": "secretsmanager",
                    "secret_id": "oms/token",
                    "create": True,
                    "max_writes_per_day": 50,
                    "kms_key_id": "alias/oms",
                    "format": "raw",
                },
                {
                    "type": "ssm",
                    "parameter": "/oms/token",
                    "kms_key_id": "alias/oms",
                    "format": "raw",
                },
                {"type": "file", "path": "/run/oms/token", "mode": "0640", "format": "raw"},
            ],
        }
    ],
}


def test_both_sources_give_the_same_settings() -> None:
    from_environment = from_env(ENV)
    from_file = from_mapping(TOML, source="environment")
    assert from_environment == from_file
    assert from_environment.credentials[0].targets[2].mode == 0o640


def test_the_same_bad_value_is_named_as_the_user_wrote_it() -> None:
    with pytest.raises(ConfigError) as env_error:
        from_env({**ENV, "ROTATOR_FORMAT": "yaml"})
    bad = {**TOML["credentials"][0]["targets"][1], "format": "yaml"}
    with pytest.raises(ConfigError) as file_error:
        from_mapping({"credentials": [{**TOML["credentials"][0], "targets": [bad]}]})
    assert str(env_error.value) == "ROTATOR_FORMAT must be one of json, raw: 'yaml'"
    assert str(file_error.value) == (
        "credentials[oms].targets[0].format must be one of json, raw: 'yaml'"
    )


def test_process_settings_flags_win_over_the_environment() -> None:
    env = {"ROTATOR_LOG_LEVEL": "DEBUG", "ROTATOR_LOG_FORMAT": "json", "ROTATOR_CONFIG": "/c"}
    assert process_settings(env) == Process("/c", "debug", "json")
    assert process_settings(env, config_path="/d", log_level="error", log_format="text") == (
        Process("/d", "error", "text")
    )
    assert process_settings({}) == Process(None, "info", "text")
    # a bad variable that a flag overrides is never looked at
    assert process_settings({"ROTATOR_LOG_LEVEL": "loud"}, log_level="info").log_level == "info"
    with pytest.raises(ConfigError, match="ROTATOR_LOG_LEVEL must be one of debug, info"):
        process_settings({"ROTATOR_LOG_FORMAT": "xml"})


def test_once_interval_flag_then_environment() -> None:
    assert once_interval({"ROTATOR_ONCE_INTERVAL": "300"}, None) == 300.0
    assert once_interval({"ROTATOR_ONCE_INTERVAL": "300"}, 60.0) == 60.0
    assert once_interval({}, None) is None
    with pytest.raises(ConfigError, match="ROTATOR_ONCE_INTERVAL must be a number of seconds"):
        once_interval({"ROTATOR_ONCE_INTERVAL": "hourly"}, None)
    with pytest.raises(ConfigError, match="--interval must be >= 0 seconds: -5.0"):
        once_interval({"ROTATOR_ONCE_INTERVAL": "-5"}, None)


def test_the_cli_reads_the_environment_it_is_handed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [k for k in os.environ if k.startswith("ROTATOR_")]:
        monkeypatch.delenv(key)
    path = tmp_path / "token.json"
    FileStore(path).put(make_token(datetime.now(UTC), 300, access_token="handed-in-token"))
    assert cli.main(["get"], env={"ROTATOR_FILE_PATH": str(path)}) == 0
    assert capsys.readouterr().out == "handed-in-token\n"
    # ... and not os.environ: there, nothing is configured
    monkeypatch.setenv("ROTATOR_FILE_PATH", str(path))
    assert cli.main(["get"], env={}) == 2
    assert "no configuration" in capsys.readouterr().err
