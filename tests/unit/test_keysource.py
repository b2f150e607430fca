"""The private key source of private_key_jwt: loading, errors (exit 2), re-reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rotator.config import SecretSource
from rotator.errors import EXIT_USAGE
from rotator.keysource import KeyProvider, KeySourceError, thumbprint
from rotator.secret import scrub
from tests.jwtkeys import TRADITIONAL, ec_key, pem, pem_lines, public_pem, rsa_key, write


def provider(path: Path, alg: str = "RS256", kid: str | None = None) -> KeyProvider:
    return KeyProvider(SecretSource("private_key_file", str(path)), alg=alg, kid=kid, env={})


def test_rfc7638_example_thumbprint() -> None:
    # RFC 7638 section 3.1
    jwk = {
        "kty": "RSA",
        "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1"
        "L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5"
        "v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08q"
        "NLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJ"
        "zKnqDKgw",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(
    ("alg", "make", "fmt"),
    [
        ("RS256", rsa_key, None),
        ("RS256", rsa_key, TRADITIONAL),
        ("PS256", rsa_key, None),
        ("ES256", ec_key, None),
        ("ES256", ec_key, TRADITIONAL),
    ],
)
def test_pkcs8_and_traditional_pem_load(
    tmp_path: Path, alg: str, make: object, fmt: object
) -> None:
    key = make()  # type: ignore[operator]
    text = pem(key, fmt) if fmt else pem(key)
    signing = provider(write(tmp_path / "k.pem", text), alg, kid="k1").get()
    assert signing.alg == alg
    assert signing.kid == "k1"
    assert signing.public_jwk()["kid"] == "k1"
    assert signing.thumbprint == thumbprint(signing.public_jwk())
    assert "PRIVATE" not in repr(signing)
    assert all(line not in repr(signing) for line in pem_lines(text))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(KeySourceError) as err:
        provider(tmp_path / "nope.pem").get()
    assert err.value.exit_code == EXIT_USAGE
    assert str(err.value) == f"private key file not found: {str(tmp_path / 'nope.pem')!r}"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(KeySourceError, match="cannot read private key file .*Is a directory"):
        provider(tmp_path).get()


def test_empty_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(KeySourceError, match="is empty"):
        provider(write(tmp_path / "k.pem", "\n")).get()


def test_encrypted_pem_without_passphrase(tmp_path: Path) -> None:
    text = pem(rsa_key(), password=b"hunter2-passphrase")
    with pytest.raises(KeySourceError) as err:
        provider(write(tmp_path / "k.pem", text)).get()
    assert "encrypted PEM key" in str(err.value)
    assert "passphrase" in str(err.value)
    assert err.value.exit_code == EXIT_USAGE
    assert not any(line in str(err.value) for line in pem_lines(text))


@pytest.mark.parametrize(
    ("text", "alg", "reason"),
    [
        (public_pem(rsa_key()), "RS256", "is not a PEM private key (it is a public key"),
        ("just some text\n", "RS256", "is not a PEM private key"),
        (
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            "RS256",
            "is not a readable PEM private key",
        ),
        (pem(ec_key()), "RS256", "signing_alg RS256 needs an RSA key, not an EC key (secp256r1)"),
        (pem(rsa_key()), "ES256", "signing_alg ES256 needs a P-256 EC key, not an RSA key"),
        (pem(rsa_key(1024)), "RS256", "the RSA key has 1024 bits; at least 2048"),
    ],
    ids=["public-key", "not-pem", "garbage-pem", "ec-for-rs256", "rsa-for-es256", "rsa-1024"],
)
def test_wrong_key_type_is_a_config_error(tmp_path: Path, text: str, alg: str, reason: str) -> None:
    with pytest.raises(KeySourceError) as err:
        provider(write(tmp_path / "k.pem", text), alg).get()
    assert reason in str(err.value)
    assert err.value.exit_code == EXIT_USAGE


def test_env_source(tmp_path: Path) -> None:
    source = SecretSource("private_key_env", "MY_KEY")
    text = pem(ec_key())
    assert KeyProvider(source, alg="ES256", env={"MY_KEY": text}).get().alg == "ES256"
    with pytest.raises(KeySourceError, match="environment variable MY_KEY is not set"):
        KeyProvider(source, alg="ES256", env={}).get()


def test_key_is_registered_for_scrubbing(tmp_path: Path) -> None:
    text = pem(rsa_key(2048, 1))
    provider(write(tmp_path / "k.pem", text)).get()
    assert scrub(text) == "**********"  # the whole PEM
    for line in pem_lines(text):  # and each line alone
        assert line not in scrub(f"log: {line}")


def test_file_is_reread_and_a_rotated_key_picked_up(tmp_path: Path) -> None:
    path = write(tmp_path / "k.pem", pem(rsa_key()))
    keys = provider(path)
    first = keys.get()
    assert keys.get() is first  # same bytes: not parsed again
    write(path, pem(rsa_key(2048, 1)))
    second = keys.get()
    assert second.thumbprint != first.thumbprint


class FakeSecretsManager:
    """get_secret_value from a dict, counting calls (a small real fake, no boto3)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.calls = 0

    def get_secret_value(self, SecretId: str) -> dict[str, str]:  # noqa: N803 - boto3's name
        self.calls += 1
        return {"SecretString": self.values[SecretId]}


def aws_provider(fake: FakeSecretsManager) -> KeyProvider:
    return KeyProvider(
        SecretSource("private_key_secretsmanager", "oms/key"),
        alg="RS256",
        env={},
        client_for=lambda service, region: fake,
    )


def test_aws_source_is_cached_until_invalidated() -> None:
    fake = FakeSecretsManager({"oms/key": pem(rsa_key())})
    keys = aws_provider(fake)
    first = keys.get()
    assert keys.get() is first
    assert fake.calls == 1
    fake.values["oms/key"] = pem(rsa_key(2048, 1))
    keys.invalidate()
    assert keys.get().thumbprint != first.thumbprint
    assert fake.calls == 2


def test_aws_secret_may_be_a_json_object_with_a_private_key() -> None:
    text = pem(rsa_key())
    fake = FakeSecretsManager({"oms/key": json.dumps({"private_key": text, "kid": "x"})})
    assert aws_provider(fake).get().alg == "RS256"
    fake.values["oms/key"] = json.dumps({"key": text})
    with pytest.raises(KeySourceError, match="JSON object without a 'private_key' key"):
        aws_provider(fake).get()
