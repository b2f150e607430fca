"""private_key_jwt and client_secret_jwt end to end against the npm oidc-provider peer,
which verifies RFC 7523 client assertions natively (signature, iss, aud, exp, and a
jti replay cache).

The key pair comes from ``rotator keygen``; its printed JWKS is what the peer's
client registers, exactly as a user registers it in Keycloak.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from tests.fixtures.aws import AwsEnv
from tests.fixtures.oidc import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    OidcPeer,
    require_node_peer,
)
from tests.fixtures.procs import Daemon, cli_env, run_cli
from tests.jwtkeys import pem, pem_lines, public_pem, rsa_key, write

pytestmark = [pytest.mark.node, pytest.mark.timeout(240)]

JWT_CLIENT = "client-jwt"
SECRET_JWT_CLIENT = "client-secret-jwt"
HS_SECRET = "client-secret-jwt-test-secret-0123456789abcdef"  # a test value; >= 32 bytes


@dataclass(frozen=True)
class KeyPair:
    path: Path
    jwks: dict[str, Any]
    stderr: str

    @property
    def jwk(self) -> dict[str, Any]:
        return dict(self.jwks["keys"][0])

    @property
    def pem(self) -> str:
        return self.path.read_text()


def rfc7638(jwk: dict[str, Any]) -> str:
    members = {k: jwk[k] for k in ("e", "kty", "n")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    path = tmp_path_factory.mktemp("keys") / "client-jwt.pem"
    result = run_cli(["keygen", "--out", str(path)], cli_env())
    assert result.returncode == 0, result.describe()
    return KeyPair(path, json.loads(result.stdout), result.stderr)


@pytest.fixture(scope="module")
def peer_module(keypair: KeyPair) -> Iterator[OidcPeer]:
    require_node_peer()
    clients = [
        # first: the default client, used by the fixture's introspection helper
        {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET},
        {
            "client_id": JWT_CLIENT,
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": keypair.jwks,
        },
        {
            "client_id": SECRET_JWT_CLIENT,
            "client_secret": HS_SECRET,
            "token_endpoint_auth_method": "client_secret_jwt",
        },
    ]
    with OidcPeer(clients=clients, ttl=4) as peer:  # type: ignore[arg-type]
        yield peer


@pytest.fixture
def peer(peer_module: OidcPeer) -> OidcPeer:
    peer_module.reset()
    return peer_module


def jwt_env(peer: OidcPeer, key: Path, target: Path, **extra: str) -> dict[str, str]:
    return cli_env(
        ROTATOR_TOKEN_URL=peer.token_url,
        ROTATOR_CLIENT_ID=JWT_CLIENT,
        ROTATOR_AUTH_METHOD="private_key_jwt",
        ROTATOR_PRIVATE_KEY_FILE=str(key),
        ROTATOR_FILE_PATH=str(target),
        **extra,
    )


def credential_config(
    tmp_path: Path, token_url: str, client_id: str, auth: str, extra: str = ""
) -> Path:
    """A one-credential TOML file publishing to tmp_path/token.json."""
    config = tmp_path / "rotator.toml"
    config.write_text(
        f"""
[[credentials]]
name = "jwt"
token_url = {json.dumps(token_url)}
client_id = "{client_id}"
{auth}
{extra}
[[credentials.targets]]
type = "file"
path = {json.dumps(str(tmp_path / "token.json"))}
"""
    )
    return config


def key_config(tmp_path: Path, token_url: str, key: Path, extra: str = "") -> Path:
    auth = f'auth_method = "private_key_jwt"\nprivate_key_file = {json.dumps(str(key))}'
    return credential_config(tmp_path, token_url, JWT_CLIENT, auth, extra)


def secret_jwt_config(peer: OidcPeer, tmp_path: Path, *, refresh: str = "") -> Path:
    secret = write(tmp_path / "client-secret", HS_SECRET + "\n")
    auth = f'auth_method = "client_secret_jwt"\nclient_secret_file = {json.dumps(str(secret))}'
    return credential_config(tmp_path, peer.token_url, SECRET_JWT_CLIENT, auth, refresh)


def published(path: Path) -> str:
    return str(json.loads(path.read_text())["access_token"])


def claims(assertion: str) -> dict[str, Any]:
    return dict(jwt.decode(assertion, options={"verify_signature": False}))


# ---------------------------------------------------------------- keygen


def test_keygen_writes_a_0600_key_and_prints_its_public_jwks(keypair: KeyPair) -> None:
    assert keypair.path.stat().st_mode & 0o777 == 0o600
    assert keypair.pem.startswith("-----BEGIN PRIVATE KEY-----")
    jwk = keypair.jwk
    assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}  # public members only
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
    assert jwk["kid"] == rfc7638(jwk)
    assert f'private_key_id = "{jwk["kid"]}"' in keypair.stderr
    assert not any(line in keypair.stderr for line in pem_lines(keypair.pem))


def test_keygen_refuses_to_overwrite(keypair: KeyPair) -> None:
    before = keypair.path.read_bytes()
    result = run_cli(["keygen", "--out", str(keypair.path)], cli_env())
    assert result.returncode == 2, result.describe()
    assert "already exists: refusing to overwrite" in result.stderr
    assert result.stdout == ""
    assert keypair.path.read_bytes() == before


def test_keygen_es256_with_a_public_pem(tmp_path: Path) -> None:
    result = run_cli(
        [
            "keygen",
            "--out",
            str(tmp_path / "k"),
            "--alg",
            "ES256",
            "--kid",
            "k-es",
            "--public-out",
            str(tmp_path / "k.pub"),
        ],
        cli_env(),
    )
    assert result.returncode == 0, result.describe()
    jwk = json.loads(result.stdout)["keys"][0]
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["kid"]) == ("EC", "P-256", "ES256", "k-es")
    assert "d" not in jwk
    assert (tmp_path / "k.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")


# ---------------------------------------------------------------- once and check


def test_once_private_key_jwt_from_the_environment(
    peer: OidcPeer, keypair: KeyPair, tmp_path: Path
) -> None:
    kid = keypair.jwk["kid"]
    env = jwt_env(peer, keypair.path, tmp_path / "t.json", ROTATOR_PRIVATE_KEY_ID=kid)
    result = run_cli(["once"], env)
    assert result.returncode == 0, result.describe()
    assert peer.introspect(published(tmp_path / "t.json"))
    stats = peer.stats()
    assert stats["token_requests"] == 1
    assert stats["auth_methods"] == {"client_assertion": 1}
    (assertion,) = stats["assertions"]
    assert jwt.get_unverified_header(assertion) == {"alg": "RS256", "typ": "JWT", "kid": kid}
    got = claims(assertion)
    assert got["iss"] == got["sub"] == JWT_CLIENT
    assert got["aud"] == peer.token_url
    assert got["exp"] - got["iat"] == 60


def test_once_client_secret_jwt_from_a_config_file(peer: OidcPeer, tmp_path: Path) -> None:
    result = run_cli(["once", "--config", str(secret_jwt_config(peer, tmp_path))], cli_env())
    assert result.returncode == 0, result.describe()
    assert peer.introspect(published(tmp_path / "token.json"))
    (assertion,) = peer.stats()["assertions"]
    assert jwt.get_unverified_header(assertion)["alg"] == "HS256"
    jwt.decode(assertion, HS_SECRET.encode(), algorithms=["HS256"], audience=peer.token_url)


def test_check_reports_the_method_and_the_key_thumbprint(
    peer: OidcPeer, keypair: KeyPair, tmp_path: Path
) -> None:
    result = run_cli(["check"], jwt_env(peer, keypair.path, tmp_path / "t.json"))
    assert result.returncode == 0, result.describe()
    assert "default: auth method: private_key_jwt" in result.stdout
    assert (
        f"default: private key: ok (private_key_file, RS256, "
        f"JWK thumbprint SHA-256 {rfc7638(keypair.jwk)})" in result.stdout
    )
    assert "default: token endpoint: ok" in result.stdout
    for line in pem_lines(keypair.pem):
        assert line not in result.stdout + result.stderr


def test_a_wrong_key_exits_3_after_one_request(peer: OidcPeer, tmp_path: Path) -> None:
    other = write(tmp_path / "other.pem", pem(rsa_key(2048, 7)))
    result = run_cli(["once"], jwt_env(peer, other, tmp_path / "t.json"))
    assert result.returncode == 3, result.describe()
    assert "rejected the client credentials" in result.stderr
    stats = peer.stats()
    assert stats["token_requests"] == 1
    assert stats["by_grant"] == {"client_credentials": {"invalid_client": 1}}
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "private key file not found"),
        (pem(rsa_key(), password=b"a-passphrase"), "is an encrypted PEM key"),
        (public_pem(rsa_key()), "is not a PEM private key (it is a public key"),
    ],
    ids=["missing", "encrypted", "public-key"],
)
def test_key_source_errors_exit_2_before_any_request(
    peer: OidcPeer, tmp_path: Path, content: str | None, needle: str
) -> None:
    key = tmp_path / "key.pem"
    if content is not None:
        write(key, content)
    result = run_cli(["once"], jwt_env(peer, key, tmp_path / "t.json"))
    assert result.returncode == 2, result.describe()
    assert needle in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    assert peer.stats()["token_requests"] == 0


@pytest.mark.parametrize("where", ["secretsmanager", "secretsmanager-json", "ssm"])
def test_private_key_from_aws(
    peer: OidcPeer, keypair: KeyPair, tmp_path: Path, aws: AwsEnv, where: str
) -> None:
    if where == "ssm":
        aws.ssm.put_parameter(
            Name="/oms/jwt-key", Value=keypair.pem, Type="SecureString", Overwrite=True
        )
        auth = 'auth_method = "private_key_jwt"\nprivate_key_ssm = "/oms/jwt-key"'
    else:
        value = (
            keypair.pem if where == "secretsmanager" else json.dumps({"private_key": keypair.pem})
        )
        aws.secretsmanager.create_secret(Name="oms/jwt-key", SecretString=value)
        auth = 'auth_method = "private_key_jwt"\nprivate_key_secretsmanager = "oms/jwt-key"'
    config = credential_config(tmp_path, peer.token_url, JWT_CLIENT, auth)
    result = run_cli(["once", "--config", str(config)], cli_env(aws))
    assert result.returncode == 0, result.describe()
    assert peer.introspect(published(tmp_path / "token.json"))


# ---------------------------------------------------------------- replay


def test_the_server_refuses_a_replayed_assertion_and_rotator_never_sends_one(
    peer: OidcPeer, keypair: KeyPair, tmp_path: Path
) -> None:
    # The peer really enforces single use: a valid assertion works once, then not again.
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    now = int(time.time())
    mine = jwt.encode(
        {
            "iss": JWT_CLIENT,
            "sub": JWT_CLIENT,
            "aud": peer.token_url,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "exp": now + 60,
        },
        load_pem_private_key(keypair.pem.encode(), None),  # type: ignore[arg-type]
        algorithm="RS256",
    )
    form = {
        "grant_type": "client_credentials",
        "client_id": JWT_CLIENT,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": mine,
    }
    assert requests.post(peer.token_url, data=form, timeout=5).status_code == 200
    replay = requests.post(peer.token_url, data=form, timeout=5)
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"

    # rotator: every request a new assertion, so forced runs all succeed.
    env = jwt_env(peer, keypair.path, tmp_path / "t.json")
    for _ in range(3):
        result = run_cli(["once", "--force"], env)
        assert result.returncode == 0, result.describe()
    sent = peer.stats()["assertions"][2:]
    assert len(sent) == 3
    assert len({claims(a)["jti"] for a in sent}) == 3


# ---------------------------------------------------------------- the daemon

REFRESH = """
[credentials.refresh]
ratio = 0.5
jitter_ratio = 0
safety_margin_seconds = 1
"""


@pytest.mark.parametrize("method", ["private_key_jwt", "client_secret_jwt"])
def test_daemon_rotates_with_a_new_assertion_each_time(
    peer: OidcPeer, keypair: KeyPair, tmp_path: Path, method: str
) -> None:
    if method == "client_secret_jwt":
        config = secret_jwt_config(peer, tmp_path, refresh=REFRESH)
    else:
        config = key_config(tmp_path, peer.token_url, keypair.path, REFRESH)
    target = tmp_path / "token.json"
    seen: set[str] = set()
    with Daemon(cli_env(ROTATOR_CONFIG=str(config)), tmp_path / "out") as daemon:
        deadline = time.monotonic() + 90
        while len(seen) < 3 and time.monotonic() < deadline and daemon.is_running:
            if target.exists():
                seen.add(published(target))
            time.sleep(0.1)
        result = daemon.stop()
    assert result.returncode == 0, result.describe()
    assert len(seen) >= 3, result.describe()
    stats = peer.stats()
    assertions = stats["assertions"]
    ok = stats["by_grant"]["client_credentials"]["ok"]
    assert len(assertions) == stats["token_requests"] == ok >= 3
    assert len({claims(a)["jti"] for a in assertions}) == len(assertions)


# ---------------------------------------------------------------- extra_params


def test_extra_params_and_new_assertions_on_refresh_and_fallback(
    oidc_peer_factory: Any, keypair: KeyPair, tmp_path: Path
) -> None:
    """Keycloak-style refresh tokens on: client_credentials, then refresh grants, then
    (refresh tokens revoked) invalid_grant and the fallback; every request carries the
    extra params and a new assertion the server accepts."""
    server = oidc_peer_factory(
        clients=[
            {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET},
            {
                "client_id": JWT_CLIENT,
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks": keypair.jwks,
            },
        ],
        ttl=3,
        refresh=True,
    )
    extra = '[credentials.extra_params]\naudience = "oms-api"\ntenant = ["eu", "us"]'
    config = key_config(tmp_path, server.token_url, keypair.path, REFRESH + extra)

    def grants() -> dict[str, dict[str, int]]:
        return dict(server.stats()["by_grant"])

    with Daemon(cli_env(ROTATOR_CONFIG=str(config)), tmp_path / "out") as daemon:
        deadline = time.monotonic() + 90
        while grants().get("refresh_token", {}).get("ok", 0) < 2:
            assert time.monotonic() < deadline and daemon.is_running, daemon.stop().describe()
            time.sleep(0.1)
        assert server.revoke_refresh() >= 1
        while grants().get("client_credentials", {}).get("ok", 0) < 2:
            assert time.monotonic() < deadline and daemon.is_running, daemon.stop().describe()
            time.sleep(0.1)
        result = daemon.stop()
    assert result.returncode == 0, result.describe()
    stats = server.stats()
    assert stats["by_grant"]["refresh_token"]["invalid_grant"] >= 1
    kinds = [e["grant"] for e in stats["extras"]]
    assert {"client_credentials", "refresh_token"} <= set(kinds)
    for extra in stats["extras"]:
        assert extra["params"] == {"audience": "oms-api", "tenant": ["eu", "us"]}, extra
    assertions = stats["assertions"]
    assert len(assertions) == stats["token_requests"]
    assert len({claims(a)["jti"] for a in assertions}) == len(assertions)
