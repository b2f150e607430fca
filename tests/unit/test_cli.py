"""cli.main: exit codes, option placement, and never a traceback (no sockets)."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator import __version__, cli, commands
from rotator.stores.file import FileStore
from tests.fakes import make_token

MARKER = "cli-secret-MARKER-777"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ROTATOR_"):
            monkeypatch.delenv(key)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


def file_config(tmp_path: Path, **extra: str) -> Path:
    token_file = tmp_path / "token.json"
    lines = [
        "[[credentials]]",
        'name = "oms"',
        'token_url = "https://sso.example.com/token"',
        'client_id = "oms-client"',
        'client_secret_env = "OMS_CLIENT_SECRET_UNSET"',
        *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
        "[[credentials.targets]]",
        'type = "file"',
        f"path = {json.dumps(str(token_file))}",
    ]
    path = tmp_path / "rotator.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def publish(tmp_path: Path, *, age: float, lifetime: float = 300) -> str:
    now = datetime.now(UTC)
    token = make_token(now - timedelta(seconds=age), lifetime, access_token=MARKER + "-token")
    FileStore(tmp_path / "token.json").put(token)
    return token.access_token


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"rotator {__version__}"


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2
    assert "usage:" in err


def test_unknown_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rotate-all")
    assert code == 2
    assert "invalid choice" in err and "rotate-all" not in err  # values are never echoed


@pytest.mark.parametrize(
    "argv",
    [
        ["once", "--client-secret", MARKER],
        ["--client-secret", MARKER, "once"],
        ["check", f"--client-secret={MARKER}"],
        ["run", "--client_secret", MARKER],
    ],
)
def test_secrets_are_never_accepted_on_the_command_line(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "error:" in err


def test_help_documents_exit_codes_and_no_secret_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "exit codes" in out
    assert "--client-secret" not in out


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    code, _, err = run(capsys, "once", "--config", str(missing))
    assert code == 2
    assert "config file not found" in err
    assert str(missing) in err


def test_rotator_config_variable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATOR_CONFIG", str(tmp_path / "absent.toml"))
    code, _, err = run(capsys, "once")
    assert code == 2
    assert "absent.toml" in err


def test_no_configuration_at_all(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "once")
    assert code == 2
    assert "no configuration" in err
    assert err.count("\n") == 1


def test_invalid_config_value(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = file_config(tmp_path, auth_method="tls_client_auth")
    code, _, err = run(capsys, "check", "--config", str(path))
    assert code == 2
    assert "auth_method must be one of" in err
    assert "'tls_client_auth'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-format", "json", "once", "--config", "{missing}"],
        ["once", "--config", "{missing}", "--log-format", "json"],
        ["--config", "{missing}", "once", "--log-format", "json"],
    ],
)
def test_log_format_before_or_after_the_subcommand(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    missing = str(tmp_path / "absent.toml")
    code, _, err = run(capsys, *(a.replace("{missing}", missing) for a in argv))
    assert code == 2
    records = [json.loads(line) for line in err.splitlines()]
    assert records and records[-1]["level"] == "error"
    assert "config file not found" in records[-1]["message"]


LEVELS = ["debug", "info", "warning", "error"]


@pytest.mark.parametrize(
    ("argv", "env_level", "lowest_shown"),
    [
        (["get"], None, "info"),
        (["--log-level", "error", "get"], None, "error"),
        (["get", "--log-level", "error"], None, "error"),
        (["--log-level", "error", "get", "--log-level", "debug"], None, "debug"),
        (["get"], "warning", "warning"),
        (["get"], "DEBUG", "debug"),
        (["get", "--log-level", "error"], "debug", "error"),  # the flag beats the environment
    ],
)
def test_log_level_before_or_after_the_subcommand(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env_level: str | None,
    lowest_shown: str,
) -> None:
    monkeypatch.setenv("ROTATOR_FILE_PATH", str(tmp_path / "token.json"))
    if env_level is not None:
        monkeypatch.setenv("ROTATOR_LOG_LEVEL", env_level)
    code, out, err = run(capsys, *argv)
    assert code == 1  # nothing published yet
    assert out == ""
    assert "no token published" in err
    # what the configured logging lets through: one probe line per level
    probe = logging.getLogger("rotator.probe")
    for level in LEVELS:
        probe.log(logging.getLevelName(level.upper()), "probe-%s", level)
    _, err = capsys.readouterr()
    shown = [level for level in LEVELS if f"probe-{level}" in err]
    assert shown == LEVELS[LEVELS.index(lowest_shown) :]


def test_unknown_rotator_variable_is_a_config_error_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTATOR_FILE_PATH", str(tmp_path / "token.json"))
    monkeypatch.setenv("ROTATOR_CLIENT_SECERT", MARKER)  # a typo: named, never shown
    code, out, err = run(capsys, "get")
    assert code == 2
    assert "ROTATOR_CLIENT_SECERT" in err
    assert MARKER not in err


@pytest.mark.parametrize(
    ("key", "value"), [("ROTATOR_LOG_LEVEL", "loud"), ("ROTATOR_LOG_FORMAT", "xml")]
)
def test_bad_log_settings_in_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    monkeypatch.setenv(key, value)
    code, _, err = run(capsys, "once")
    assert code == 2
    assert key in err


def test_bad_log_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "once", "--log-level", "chatty")
    assert code == 2
    assert "invalid choice" in err and "chatty" not in err


def test_get_prints_the_published_token(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = file_config(tmp_path)
    token = publish(tmp_path, age=10)
    code, out, _ = run(capsys, "get", "--config", str(config))
    assert code == 0
    assert out == token + "\n"
    code, out, _ = run(capsys, "get", "--config", str(config), "--json", "--credential", "oms")
    assert code == 0
    doc = json.loads(out)
    assert doc["access_token"] == token
    assert set(doc) == {"access_token", "token_type", "expires_at", "issued_at"}


def test_get_an_expired_token_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = file_config(tmp_path)
    publish(tmp_path, age=400)
    code, out, err = run(capsys, "get", "--config", str(config))
    assert code == 1
    assert out == ""
    assert "expired" in err
    assert MARKER not in err


def test_get_unknown_credential(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "get", "--config", str(file_config(tmp_path)), "--credential", "x")
    assert code == 2
    assert "no credential named 'x'" in err


@pytest.mark.parametrize("verb", [["once"], ["once", "--force"], ["check"]])
def test_an_unresolvable_client_secret_is_a_configuration_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, verb: list[str]
) -> None:
    # resolved before any request is sent: no socket is opened
    code, out, err = run(capsys, *verb, "--config", str(file_config(tmp_path)))
    assert code == 2
    assert "OMS_CLIENT_SECRET_UNSET" in out + err


def test_a_fresh_token_needs_no_secret_and_no_request(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = file_config(tmp_path)
    publish(tmp_path, age=10)
    code, _, err = run(capsys, "once", "--config", str(config))
    assert code == 0
    assert "fresh, nothing to do credential=oms" in err


def test_internal_errors_are_one_line_without_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> int:
        raise KeyError(MARKER)

    monkeypatch.setattr(commands, "get", boom)
    code, _, err = run(capsys, "get", "--config", str(file_config(tmp_path)))
    assert code == 1
    assert "internal error: KeyError" in err
    assert MARKER not in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(("verb", "expected"), [("once", 1), ("run", 0)])
def test_ctrl_c(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    verb: str,
    expected: int,
) -> None:
    def interrupted(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, verb, interrupted)
    code, _, _ = run(capsys, verb, "--config", str(file_config(tmp_path)))
    assert code == expected
