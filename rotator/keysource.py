"""Resolves the private key of private_key_jwt from where the configuration says it lives.

The same shape and rules as the client secret's ``SecretProvider``: ``get()`` (or
calling the provider) gives the key, ``invalidate()`` forgets what was cached so the
next ``get()`` reads the source again (after the token endpoint rejected the
client). Environment and file sources are read on every use, so a rotated
Kubernetes Secret is picked up; the PEM is parsed again only when its bytes
changed. AWS sources are cached until invalidated.

``cryptography`` is imported only here, and only when a key is loaded: the
default client-secret path never pays for it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rotator.config import SecretSource
from rotator.errors import KeySourceError, SecretSourceError, StoreNotFound
from rotator.secret import Secret, register

# IAM actions needed to read a private key kept in AWS (the client secret's too).
IAM_ACTIONS: tuple[str, ...] = ("secretsmanager:GetSecretValue", "ssm:GetParameter")
# Which key type each signing algorithm needs.
KEY_TYPES = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC"}
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class SigningKey:
    """A loaded private key, ready for PyJWT; shows only its thumbprint."""

    key: Any = field(repr=False)  # a cryptography private key object
    alg: str
    kid: str | None
    thumbprint: str  # RFC 7638 JWK SHA-256 thumbprint of the public key, base64url

    def public_jwk(self) -> dict[str, str]:
        """The public JWK (with kid, alg and use) to register at the server."""
        jwk = public_jwk(self.key.public_key())
        jwk.update({"alg": self.alg, "use": "sig"})
        if self.kid:
            jwk["kid"] = self.kid
        return jwk


def _b64(number: int) -> str:
    data = number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key: Any) -> dict[str, str]:
    """The RFC 7517 members of a public RSA or P-256 key (no kid/alg/use)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        numbers = public_key.public_numbers()
        return {"kty": "RSA", "e": _b64(numbers.e), "n": _b64(numbers.n)}
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        point = public_key.public_numbers()
        size = (public_key.curve.key_size + 7) // 8

        def coord(value: int) -> str:
            return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()

        return {"kty": "EC", "crv": "P-256", "x": coord(point.x), "y": coord(point.y)}
    raise KeySourceError(f"unsupported public key type {type(public_key).__name__}")


def thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, base64url."""
    required = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def load_signing_key(pem: str, *, alg: str, kid: str | None, where: str) -> SigningKey:
    """Parse a PEM private key (PKCS#8 or traditional) and check it fits `alg`."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if "PRIVATE KEY" not in pem:
        kind = "a public key or certificate" if "PUBLIC KEY" in pem or "CERTIFICATE" in pem else ""
        raise KeySourceError(
            f"{where} is not a PEM private key{f' (it is {kind})' if kind else ''}"
        )
    if "ENCRYPTED" in pem:
        raise KeySourceError(
            f"{where} is an encrypted PEM key and rotator takes no passphrase: store it "
            "unencrypted where only rotator can read it (file mode 0600, Secrets Manager, "
            "SSM SecureString)"
        )
    # No cause on these two: the parser's text describes the key material.
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except TypeError:  # encrypted, with a header our check above did not see
        raise KeySourceError(
            f"{where} is an encrypted PEM key and rotator takes no passphrase"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeySourceError(
            f"{where} is not a readable PEM private key ({type(exc).__name__})"
        ) from None
    want = KEY_TYPES[alg]
    if want == "RSA" and not isinstance(key, rsa.RSAPrivateKey):
        raise KeySourceError(f"{where}: signing_alg {alg} needs an RSA key, not {_kind(key)}")
    if want == "EC" and not (
        isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    ):
        raise KeySourceError(f"{where}: signing_alg {alg} needs a P-256 EC key, not {_kind(key)}")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise KeySourceError(
            f"{where}: the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are needed"
        )
    return SigningKey(
        key=key, alg=alg, kid=kid, thumbprint=thumbprint(public_jwk(key.public_key()))
    )


def _kind(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return "an RSA key"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC key ({key.curve.name})"
    return f"a {type(key).__name__.lstrip('_').replace('PrivateKey', '')} key"


class KeyProvider:
    """Gives the signing key of one private_key_jwt credential (SecretProvider's shape)."""

    def __init__(
        self,
        source: SecretSource,
        *,
        alg: str,
        kid: str | None = None,
        env: Mapping[str, str] | None = None,
        client_for: Callable[[str, str | None], Any] | None = None,
    ) -> None:
        self._source = source
        self._alg = alg
        self._kid = kid
        self._env = os.environ if env is None else env
        self._client_for = client_for
        self._pem: Secret | None = None  # the text the cached key was parsed from
        self._key: SigningKey | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyProvider({self._source.kind}={self._source.ref!r})"

    def __call__(self) -> SigningKey:
        return self.get()

    @property
    def source(self) -> SecretSource:
        return self._source

    def invalidate(self) -> None:
        """Forget the cached AWS value: the next get() reads the source again."""
        with self._lock:
            self._pem = None
            self._key = None

    def get(self) -> SigningKey:
        with self._lock:
            if self._key is not None and self._source.kind in _CACHED_KINDS:
                return self._key
            pem = Secret(self._read())
            if self._key is None or pem != self._pem:
                self._register_lines(pem.reveal())
                self._key = load_signing_key(
                    pem.reveal(), alg=self._alg, kid=self._kid, where=self._where()
                )
                self._pem = pem
            return self._key

    def _where(self) -> str:
        kind, ref = self._source.kind, self._source.ref
        return {
            "private_key_env": f"private key in environment variable {ref}",
            "private_key_file": f"private key file {ref!r}",
            "private_key_secretsmanager": f"private key in secret {ref}",
            "private_key_ssm": f"private key in parameter {ref}",
        }[kind]

    @staticmethod
    def _register_lines(pem: str) -> None:
        # The whole PEM is registered by Secret; each base64 line too, so a partial
        # echo (one line of a multi-line log) is still scrubbed.
        for line in pem.splitlines():
            if line and not line.startswith("-----"):
                register(line)

    def _read(self) -> str:
        kind, ref = self._source.kind, self._source.ref
        if kind == "private_key_env":
            value = self._env.get(ref)
            if not value:
                raise KeySourceError(f"private key: environment variable {ref} is not set")
            return value
        if kind == "private_key_file":
            return _read_file(ref)
        return self._fetch_aws(kind, ref)

    def _fetch_aws(self, kind: str, ref: str) -> str:
        from rotator.stores.aws import map_aws_error

        if self._client_for is None:
            raise KeySourceError(f"private key: no AWS client for {kind}")
        service, action = _AWS[kind]
        try:
            client = self._client_for(service, self._source.region)
            if kind == "private_key_secretsmanager":
                value = client.get_secret_value(SecretId=ref).get("SecretString")
                return _from_secret_string(value, ref)
            value = client.get_parameter(Name=ref, WithDecryption=True)["Parameter"].get("Value")
        except SecretSourceError:
            raise
        except Exception as exc:
            error = map_aws_error(exc, target=ref, action=action)
            if isinstance(error, StoreNotFound):
                raise KeySourceError(f"private key: {error}") from exc
            raise error from exc
        if not isinstance(value, str) or not value:
            raise KeySourceError(f"private key: parameter {ref} is empty")
        return value


_CACHED_KINDS = ("private_key_secretsmanager", "private_key_ssm")
_AWS = {
    "private_key_secretsmanager": ("secretsmanager", "secretsmanager:GetSecretValue"),
    "private_key_ssm": ("ssm", "ssm:GetParameter"),
}


def _read_file(ref: str) -> str:
    try:
        text = Path(ref).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise KeySourceError(f"private key file not found: {ref!r}") from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise KeySourceError(f"cannot read private key file {ref!r}: {reason}") from exc
    except UnicodeDecodeError:  # its text quotes a byte of the key: no cause
        reason = "UnicodeDecodeError"
        raise KeySourceError(f"cannot read private key file {ref!r}: {reason}") from None
    if not text.strip():
        raise KeySourceError(f"private key file {ref!r} is empty")
    return text


def _from_secret_string(value: object, ref: str) -> str:
    """The whole SecretString, or its "private_key" key when it is a JSON object."""
    if not isinstance(value, str) or not value:
        raise KeySourceError(f"private key: secret {ref} has no SecretString")
    if value.lstrip().startswith("{"):
        try:
            data = json.loads(value)
        except ValueError:
            data = None
        inner = data.get("private_key") if isinstance(data, dict) else None
        if not isinstance(inner, str) or not inner:
            raise KeySourceError(
                f"private key: secret {ref} is a JSON object without a 'private_key' key"
            )
        return inner
    return value
