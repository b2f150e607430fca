"""``rotator keygen``: a new key pair for private_key_jwt.

The private key is written as an unencrypted PKCS#8 PEM, mode 0600, and never
over an existing file; the public key is printed as a JWKS (what Keycloak's
client Keys tab imports as "JSON Web Key Set"), with ``kid`` set to the key's
RFC 7638 thumbprint unless one is given. The private key is never printed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rotator.errors import ConfigError
from rotator.keysource import KEY_TYPES, SigningKey, public_jwk, thumbprint

RSA_BITS = 2048


def generate(alg: str = "RS256", *, kid: str | None = None) -> SigningKey:
    """A new private key for `alg` (RSA 2048 for RS256/PS256, P-256 for ES256)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if alg not in KEY_TYPES:
        raise ConfigError(f"--alg must be one of {', '.join(KEY_TYPES)}: {alg!r}")
    key: Any
    if KEY_TYPES[alg] == "RSA":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    print_ = thumbprint(public_jwk(key.public_key()))
    return SigningKey(key=key, alg=alg, kid=kid or print_, thumbprint=print_)


def private_pem(key: SigningKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    pem: bytes = key.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem


def public_pem(key: SigningKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    pem: bytes = key.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` (whatever the umask); refuse to replace anything."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError as exc:
        raise ConfigError(f"{str(path)!r} already exists: refusing to overwrite a key") from exc
    except OSError as exc:
        raise ConfigError(f"cannot create {str(path)!r}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror}") from exc


def keygen(
    out: Path, *, alg: str = "RS256", kid: str | None = None, public_out: Path | None = None
) -> tuple[SigningKey, str]:
    """Write a new private key to `out` (0600); returns the key and its JWKS as JSON."""
    key = generate(alg, kid=kid)
    if public_out is not None and public_out.exists():
        raise ConfigError(f"{str(public_out)!r} already exists: refusing to overwrite a key")
    write_new(out, private_pem(key), 0o600)
    if public_out is not None:
        write_new(public_out, public_pem(key), 0o644)
    return key, json.dumps({"keys": [key.public_jwk()]}, indent=2)
