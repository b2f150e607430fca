"""Issue 8 at configuration load: URL checks that match what the HTTP library does
(point 6), a bad CA bundle is a configuration error (point 9), and process-level
settings from the environment in both modes (design point)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from rotator import cli
from rotator.app import tls_verify
from rotator.config import ConfigError, from_mapping, is_loopback, load
from rotator.errors import EXIT_USAGE
from rotator.oauth import TokenClient, check_http_url
from rotator.secret import Secret
from tests.fakes import FakeClock
from tests.unit.test_config import base


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        from_mapping(data)
    assert info.value.exit_code == EXIT_USAGE
    return str(info.value)


# ---------------------------------------------------------------- point 6


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.example\\.localhost/t",
        "https://evil.example\\@sso.example.com/t",
        "http://127.0.0.1\\@evil.example/t",
        "http://localhost /t",
        "http://local\thost/t",
        "https://sso.exa\nmple.com/t",
        "http://ｌocalhost/t",
    ],
)
def test_ambiguous_urls_are_refused(url: str) -> None:
    assert "not a valid URL" in config_error(base(token_url=url))
    with pytest.raises(ConfigError):
        from_mapping(base(verify_url=url))


@pytest.mark.parametrize(
    "url", ["http://keycloak.localhost/token", "http://evil.example.localhost/t"]
)
def test_dot_localhost_names_are_not_loopback(url: str) -> None:
    assert "plain http:// is refused" in config_error(base(token_url=url))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("a.localhost", False),
        ("localhost.", False),
        ("10.0.0.1", False),
        ("", False),
    ],
)
def test_only_localhost_127_8_and_ipv6_loopback_count(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


# ---------------------------------------------------------------- point 9


def test_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    message = config_error(base(ca_bundle=str(missing)))
    assert "CA bundle not found" in message


def test_unreadable_ca_bundle_env_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="REQUESTS_CA_BUNDLE"):
        tls_verify(None, {"REQUESTS_CA_BUNDLE": str(tmp_path / "nope.pem")})


def test_cli_exits_2_on_a_bad_ca_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "rotator.toml"
    conf.write_text(
        f"""
[[credentials]]
name = "oms"
token_url = "https://sso.example.com/token"
client_id = "oms"
client_secret_env = "OMS_SECRET"
ca_bundle = "{tmp_path / "missing.pem"}"
[[credentials.targets]]
type = "file"
path = "{tmp_path / "token.json"}"
"""
    )
    monkeypatch.setenv("OMS_SECRET", "x")
    assert cli.main(["once", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert "CA bundle not found" in err
    assert "Traceback" not in err


def test_cli_exits_2_on_a_bad_requests_ca_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("ROTATOR_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ROTATOR_TOKEN_URL", "https://sso.example.com/token")
    monkeypatch.setenv("ROTATOR_CLIENT_ID", "oms")
    monkeypatch.setenv("ROTATOR_CLIENT_SECRET", "x")
    monkeypatch.setenv("ROTATOR_FILE_PATH", str(tmp_path / "token.json"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    assert cli.main(["once"]) == 2
    assert "REQUESTS_CA_BUNDLE" in capsys.readouterr().err


# ---------------------------------------------------------------- process settings


def write_config(tmp_path: Path, top: str = "") -> Path:
    conf = tmp_path / "rotator.toml"
    conf.write_text(
        top
        + """
[[credentials]]
name = "oms"
token_url = "https://sso.example.com/token"
client_id = "oms"
client_secret_env = "OMS_SECRET"
[[credentials.targets]]
type = "ssm"
parameter = "/oms/token"
"""
    )
    return conf


def test_file_mode_takes_process_settings_from_the_environment(tmp_path: Path) -> None:
    env = {"ROTATOR_METRICS_PORT": "9102", "ROTATOR_METRICS_ADDRESS": "127.0.0.1"}
    settings = load(write_config(tmp_path), env=env)
    assert settings.metrics_port == 9102
    assert settings.metrics_address == "127.0.0.1"


def test_the_file_wins_where_it_sets_them(tmp_path: Path) -> None:
    env = {"ROTATOR_METRICS_PORT": "9102", "ROTATOR_METRICS_ADDRESS": "127.0.0.1"}
    conf = write_config(tmp_path, 'metrics_port = 9200\nmetrics_address = "::1"\n')
    settings = load(conf, env=env)
    assert (settings.metrics_port, settings.metrics_address) == (9200, "::1")


def test_metrics_host_is_still_accepted_as_an_alias(tmp_path: Path) -> None:
    settings = load(write_config(tmp_path, 'metrics_host = "127.0.0.1"\n'), env={})
    assert settings.metrics_address == "127.0.0.1"
    assert settings.metrics_host == "127.0.0.1"


def test_env_mode_takes_the_metrics_address() -> None:
    env = {
        "ROTATOR_TOKEN_URL": "https://sso.example.com/token",
        "ROTATOR_CLIENT_ID": "oms",
        "ROTATOR_CLIENT_SECRET": "x",
        "ROTATOR_SSM_PARAMETER": "/oms/token",
        "ROTATOR_METRICS_ADDRESS": "127.0.0.1",
        "ROTATOR_MAX_WORKERS": "4",
    }
    settings = load(env=env)
    assert settings.metrics_address == "127.0.0.1"
    assert settings.workers == 4


def test_bad_metrics_address_is_named() -> None:
    with pytest.raises(ConfigError, match="ROTATOR_METRICS_ADDRESS"):
        load(
            env={
                "ROTATOR_SSM_PARAMETER": "/oms/token",
                "ROTATOR_METRICS_ADDRESS": "not an address",
            },
            require_client=False,
        )


def test_typo_check_runs_in_file_mode_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(write_config(tmp_path), env={"ROTATOR_METRIC_PORT": "secret-MARKER"})
    assert "ROTATOR_METRIC_PORT" in str(info.value)
    assert "secret-MARKER" not in str(info.value)


def test_default_workers_is_one_per_credential_plus_one_at_most_32() -> None:
    many = base()
    many["credentials"] = [
        {
            **many["credentials"][0],
            "name": f"c{i}",
            "targets": [{"type": "ssm", "parameter": f"/t{i}"}],
        }
        for i in range(40)
    ]
    assert from_mapping(base()).workers == 2
    assert from_mapping(many).workers == 32
    assert from_mapping({**many, "max_workers": 48}).workers == 48


@pytest.mark.parametrize(
    "url", ["http://evil.example\\.localhost/t", "http://a.localhost/t", "http://10.1.1.1/t"]
)
def test_token_client_checks_the_host_urllib3_connects_to(url: str) -> None:
    with pytest.raises(ConfigError):
        TokenClient(
            requests.Session(),
            token_url=url,
            client_id="oms",
            client_secret=lambda: Secret("s"),
            clock=FakeClock(),
        )
    with pytest.raises(ConfigError):
        check_http_url(url, "verify_url")


def test_token_client_accepts_loopback_http() -> None:
    for url in ("http://127.0.0.1:8080/t", "http://localhost/t", "http://[::1]/t"):
        check_http_url(url, "token_url")
