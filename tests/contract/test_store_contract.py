"""One suite, every store: memory, file, Secrets Manager and SSM (moto over HTTP).

Each backend is run in both formats: ``json`` (the document) and ``raw`` (the
bare access token, a JWT whose ``exp`` tells the expiry).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.stores import FileStore, MemoryStore, SecretsManagerStore, SsmStore, TokenStore
from rotator.stores.ssm import FRESH_READ
from rotator.token import Token, encode

SECRET_ID = "oms/token"
PARAMETER = "/oms/token"
BASE = datetime(2031, 5, 4, 12, 0, 0, tzinfo=UTC)
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_token(
    fmt: str, expires_in: int = 300, *, scope: str | None = None, tag: str = "a"
) -> Token:
    """A token expiring `expires_in` s after BASE; for raw, a JWT carrying exp/iat."""
    issued_at = BASE
    expires_at = BASE + timedelta(seconds=expires_in)
    if fmt == "raw":
        claims: dict[str, Any] = {
            "exp": int(expires_at.timestamp()),
            "iat": int(issued_at.timestamp()),
            "jti": f"{tag}-{uuid.uuid4().hex}",
        }
        if scope:
            claims["scope"] = scope
        access = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.c2lnbmF0dXJl"
    else:
        access = f"at-{tag}-{expires_in}-{uuid.uuid4().hex}"
    return Token(
        access_token=access,
        token_type="Bearer",
        issued_at=issued_at,
        expires_at=expires_at,
        scope=scope,
    )


@dataclass
class Backend:
    kind: str
    fmt: str
    make: Callable[[], TokenStore]
    plant: Callable[[str], None]  # write a raw value through the backend's own API

    def other(self) -> TokenStore:
        """Another writer on the same target (its own client or handle)."""
        return self.make()


def _sm_plant(client: Any, value: str) -> None:
    """Publish `value` the staged way, exactly as the store does (moto quirk)."""
    try:
        current = client.describe_secret(SecretId=SECRET_ID)
    except client.exceptions.ResourceNotFoundException:
        client.create_secret(Name=SECRET_ID, SecretString=value)
        return
    old = next(
        (
            v
            for v, stages in current.get("VersionIdsToStages", {}).items()
            if "AWSCURRENT" in stages
        ),
        None,
    )
    new = str(uuid.uuid4())
    client.put_secret_value(
        SecretId=SECRET_ID, SecretString=value, ClientRequestToken=new, VersionStages=["AWSPENDING"]
    )
    move: dict[str, str] = {"MoveToVersionId": new}
    if old:
        move["RemoveFromVersionId"] = old
    client.update_secret_version_stage(SecretId=SECRET_ID, VersionStage="AWSCURRENT", **move)
    client.update_secret_version_stage(
        SecretId=SECRET_ID, VersionStage="AWSPENDING", RemoveFromVersionId=new
    )


def _aging() -> Callable[[], float]:
    """A monotonic clock that moves on by more than FRESH_READ at every look."""
    ticks = itertools.count()
    return lambda: next(ticks) * (FRESH_READ + 1.0)


KINDS = ["memory", "file", "secretsmanager", "ssm"]
FORMATS = ["json", "raw"]


def _backend(kind: str, fmt: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "memory":
        memory = MemoryStore(name="memory", fmt=fmt)
        return Backend(kind, fmt, make=lambda: memory, plant=memory.plant)
    if kind == "file":
        path = tmp_path / "token.json"

        def plant(value: str) -> None:
            path.write_text(value, encoding="utf-8")

        return Backend(kind, fmt, make=lambda: FileStore(path, fmt=fmt), plant=plant)
    aws = request.getfixturevalue("aws_limits")  # moto behind AWS's real limits
    if kind == "secretsmanager":
        return Backend(
            kind,
            fmt,
            make=lambda: SecretsManagerStore(
                aws.client("secretsmanager"), SECRET_ID, fmt=fmt, create=True
            ),
            plant=lambda value: _sm_plant(aws.secretsmanager, value),
        )
    return Backend(
        kind,
        fmt,
        # Each reading is older than FRESH_READ by the time it is a basis, as when another
        # writer's publish lands more than a second after our read: put re-reads. (A basis
        # younger than that stands for the pre-write read: tests/contract/test_ssm_calls.py.)
        make=lambda: SsmStore(aws.client("ssm"), PARAMETER, fmt=fmt, monotonic=_aging()),
        plant=lambda value: aws.ssm.put_parameter(
            Name=PARAMETER, Value=value, Type="SecureString", Overwrite=True
        ),
    )


@pytest.fixture(params=[(k, f) for k in KINDS for f in FORMATS], ids=lambda p: f"{p[0]}-{p[1]}")
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    kind, fmt = request.param
    return _backend(kind, fmt, request, tmp_path)


@pytest.fixture(params=KINDS)
def raw_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _backend(request.param, "raw", request, tmp_path)


def test_empty_store_reads_missing(backend: Backend) -> None:
    store = backend.make()
    reading = store.get()
    assert reading.is_missing
    assert reading.token is None
    assert reading.version is None
    assert not reading.is_unreadable
    store.ping()


def test_name_and_format(backend: Backend) -> None:
    store = backend.make()
    assert store.format == backend.fmt
    assert store.name.startswith(backend.kind)


@pytest.mark.parametrize("scope", [None, "orders:read orders:write"])
def test_put_then_get_round_trips(backend: Backend, scope: str | None) -> None:
    store = backend.make()
    token = make_token(backend.fmt, scope=scope)
    result = store.put(token, store.get())
    assert result.is_ours
    assert result.published == token
    assert result.version

    reading = store.get()
    assert reading.token == token
    assert reading.value == encode(token, backend.fmt)
    assert reading.version == result.version
    assert not reading.is_unreadable
    assert reading.token is not None
    if backend.fmt == "json":
        doc = json.loads(reading.value or "")
        expected = {"access_token", "token_type", "expires_at", "issued_at"}
        if scope:
            expected.add("scope")
        assert set(doc) == expected
        assert doc["access_token"] == token.access_token
        assert doc["token_type"] == "Bearer"
        assert RFC3339_Z.match(doc["expires_at"])
        assert RFC3339_Z.match(doc["issued_at"])
        assert doc["expires_at"] == "2031-05-04T12:05:00Z"
        assert doc.get("scope") == scope
    else:
        assert reading.value == token.access_token
        assert reading.token.expires_at == BASE + timedelta(seconds=300)
    store.ping()


def test_put_without_basis_reads_first(backend: Backend) -> None:
    store = backend.make()
    first = make_token(backend.fmt, 300, tag="first")
    second = make_token(backend.fmt, 600, tag="second")
    assert store.put(first).is_ours
    assert store.put(second).is_ours
    assert store.get().token == second


def test_later_expiry_is_never_replaced(backend: Backend) -> None:
    store = backend.make()
    later = make_token(backend.fmt, 900, tag="later")
    earlier = make_token(backend.fmt, 300, tag="earlier")
    store.put(later)

    for basis in (None, store.get()):
        result = store.put(earlier, basis)
        assert not result.is_ours
        assert result.published == later
    reading = store.get()
    assert reading.token == later
    assert reading.value == encode(later, backend.fmt)


def test_equal_expiry_is_replaced(backend: Backend) -> None:
    # expires_at does not go backwards, and a forced rotation within the same
    # second as the last one still gets its new token published
    store = backend.make()
    one = make_token(backend.fmt, 300, tag="one")
    two = make_token(backend.fmt, 300, tag="two")
    store.put(one)
    result = store.put(two, store.get())
    assert result.is_ours
    assert result.published == two
    assert store.get().token == two


def test_unreadable_value_is_reported_then_overwritten(backend: Backend) -> None:
    garbage = '{"access_token": "leak-me", "expires_at": ' if backend.fmt == "json" else "   "
    backend.plant(garbage)
    store = backend.make()
    reading = store.get()
    assert reading.value == garbage
    assert reading.token is None
    assert reading.is_unreadable
    assert reading.problem
    assert "leak-me" not in reading.problem
    assert "\n" not in reading.problem

    token = make_token(backend.fmt)
    result = store.put(token, reading)
    assert result.is_ours
    assert store.get().token == token


def test_raw_format_stores_bare_token_and_reads_jwt_exp(raw_backend: Backend) -> None:
    store = raw_backend.make()
    token = make_token("raw", 1234, scope="orders:read")
    store.put(token)
    reading = store.get()
    assert reading.value == token.access_token
    assert reading.value.count(".") == 2 and "{" not in reading.value
    assert reading.token is not None
    assert reading.token.expires_at == BASE + timedelta(seconds=1234)
    assert reading.token.issued_at == BASE
    assert reading.token.scope == "orders:read"


def test_raw_opaque_token_has_unknown_expiry_and_is_replaced(raw_backend: Backend) -> None:
    raw_backend.plant("opaque-token-without-claims")
    store = raw_backend.make()
    reading = store.get()
    assert reading.value == "opaque-token-without-claims"
    assert reading.token is None
    assert not reading.is_unreadable
    token = make_token("raw")
    assert store.put(token, reading).is_ours
    assert store.get().token == token


def test_stale_basis_adopts_a_later_winner(backend: Backend) -> None:
    ours = backend.make()
    theirs = backend.other()
    ours.put(make_token(backend.fmt, 100, tag="old"))
    basis = ours.get()

    winner = make_token(backend.fmt, 900, tag="winner")
    assert theirs.put(winner).is_ours

    mine = make_token(backend.fmt, 600, tag="mine")
    result = ours.put(mine, basis)
    assert not result.is_ours
    assert result.published == winner
    reading = ours.get()
    assert reading.token == winner
    assert result.version == reading.version


def test_stale_missing_basis_adopts_a_later_winner(backend: Backend) -> None:
    ours = backend.make()
    theirs = backend.other()
    basis = ours.get()
    assert basis.is_missing

    winner = make_token(backend.fmt, 900, tag="winner")
    theirs.put(winner)
    result = ours.put(make_token(backend.fmt, 600, tag="mine"), basis)
    assert not result.is_ours
    assert result.published == winner
    assert ours.get().token == winner


def test_stale_basis_with_a_later_token_still_wins(backend: Backend) -> None:
    ours = backend.make()
    theirs = backend.other()
    ours.put(make_token(backend.fmt, 100, tag="old"))
    basis = ours.get()

    theirs.put(make_token(backend.fmt, 300, tag="theirs"))
    mine = make_token(backend.fmt, 600, tag="mine")
    result = ours.put(mine, basis)
    assert result.is_ours
    assert result.published == mine
    reading = theirs.get()
    assert reading.token == mine
    assert reading.version == result.version
