"""Client secret sources: environment and file (AWS sources are contract-tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rotator.config import SecretSource
from rotator.errors import EXIT_USAGE, SecretSourceError
from rotator.secret import Secret
from rotator.secretsource import SecretProvider, strip_one_newline

MARKER = "client-secret-MARKER-42"


def file_provider(path: Path) -> SecretProvider:
    return SecretProvider(SecretSource("client_secret_file", str(path)), env={})


def test_env_source_reads_the_named_variable_on_every_use() -> None:
    env = {"OMS_SECRET": MARKER}
    provider = SecretProvider(SecretSource("client_secret_env", "OMS_SECRET"), env=env)
    secret = provider()
    assert isinstance(secret, Secret)
    assert secret.reveal() == MARKER
    env["OMS_SECRET"] = MARKER + "-rotated"
    assert provider.get().reveal() == MARKER + "-rotated"
    assert MARKER not in repr(provider) and MARKER not in repr(secret) and MARKER not in str(secret)


@pytest.mark.parametrize("env", [{}, {"OMS_SECRET": ""}])
def test_env_source_missing_or_empty(env: dict[str, str]) -> None:
    provider = SecretProvider(SecretSource("client_secret_env", "OMS_SECRET"), env=env)
    with pytest.raises(SecretSourceError, match="OMS_SECRET is not set") as info:
        provider.get()
    assert info.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (MARKER, MARKER),
        (MARKER + "\n", MARKER),
        (MARKER + "\r\n", MARKER),
        (MARKER + "\n\n", MARKER + "\n"),
        (" " + MARKER + " \n", " " + MARKER + " "),
    ],
)
def test_file_source_strips_exactly_one_trailing_newline(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content.encode())
    assert file_provider(path).get().reveal() == expected


def test_file_source_is_reread_on_every_use(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("first-secret\n")
    provider = file_provider(path)
    assert provider.get().reveal() == "first-secret"
    path.write_text("second-secret\n")
    assert provider.get().reveal() == "second-secret"


@pytest.mark.parametrize("content", ["", "\n", "\r\n"])
def test_file_source_empty(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secret"
    path.write_text(content)
    with pytest.raises(SecretSourceError, match="is empty") as info:
        file_provider(path).get()
    assert info.value.exit_code == EXIT_USAGE
    assert str(path) in str(info.value)


def test_file_source_missing(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(SecretSourceError, match="not found") as info:
        file_provider(path).get()
    assert info.value.exit_code == EXIT_USAGE
    assert str(path) in str(info.value)


def test_file_source_unreadable_never_echoes_the_content(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"\xff\xfe" + MARKER.encode())
    with pytest.raises(SecretSourceError, match="cannot read") as info:
        file_provider(path).get()
    assert MARKER not in str(info.value)


def test_aws_source_without_a_client_is_a_clear_error() -> None:
    provider = SecretProvider(SecretSource("client_secret_ssm", "/oms/secret"), env={})
    with pytest.raises(SecretSourceError, match="no AWS client"):
        provider.get()


def test_strip_one_newline() -> None:
    assert strip_one_newline("a\n\n") == "a\n"
    assert strip_one_newline("a\r\n") == "a"
    assert strip_one_newline("a\r") == "a\r"
    assert strip_one_newline("a") == "a"


class FakeAwsClient:
    """Answers get_secret_value / get_parameter from a dict, counting calls."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.calls: list[tuple[str, str]] = []

    def get_secret_value(self, *, SecretId: str) -> dict[str, str]:
        self.calls.append(("get_secret_value", SecretId))
        return {"SecretString": self.values[SecretId]}

    def get_parameter(self, *, Name: str, WithDecryption: bool) -> dict[str, dict[str, str]]:
        assert WithDecryption is True
        self.calls.append(("get_parameter", Name))
        return {"Parameter": {"Value": self.values[Name]}}


def aws_provider(kind: str, ref: str, client: FakeAwsClient) -> SecretProvider:
    asked: list[tuple[str, str | None]] = []

    def client_for(service: str, region: str | None) -> FakeAwsClient:
        asked.append((service, region))
        return client

    provider = SecretProvider(SecretSource(kind, ref, "eu-west-1"), env={}, client_for=client_for)
    provider.asked = asked  # type: ignore[attr-defined]
    return provider


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (MARKER, MARKER),
        (json.dumps({"client_secret": MARKER, "other": 1}), MARKER),
        ("{not json " + MARKER, "{not json " + MARKER),
    ],
)
def test_secretsmanager_source(stored: str, expected: str) -> None:
    client = FakeAwsClient({"oms/client": stored})
    provider = aws_provider("client_secret_secretsmanager", "oms/client", client)
    assert provider.get().reveal() == expected
    assert provider.asked == [("secretsmanager", "eu-west-1")]  # type: ignore[attr-defined]


def test_secretsmanager_json_without_client_secret_key_is_an_error() -> None:
    client = FakeAwsClient({"oms/client": json.dumps({"password": MARKER})})
    provider = aws_provider("client_secret_secretsmanager", "oms/client", client)
    with pytest.raises(SecretSourceError, match="without a 'client_secret' key") as info:
        provider.get()
    assert MARKER not in str(info.value)


def test_aws_sources_are_cached_until_invalidated() -> None:
    client = FakeAwsClient({"/oms/client": MARKER})
    provider = aws_provider("client_secret_ssm", "/oms/client", client)
    assert provider.get().reveal() == MARKER
    client.values["/oms/client"] = "rotated-secret"
    assert provider.get().reveal() == MARKER
    assert client.calls == [("get_parameter", "/oms/client")]
    provider.invalidate()
    assert provider.get().reveal() == "rotated-secret"
    assert len(client.calls) == 2


def test_empty_ssm_parameter_is_an_error() -> None:
    provider = aws_provider("client_secret_ssm", "/oms/client", FakeAwsClient({"/oms/client": ""}))
    with pytest.raises(SecretSourceError, match="is empty"):
        provider.get()
