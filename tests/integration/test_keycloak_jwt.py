"""Issue 12 against the real Keycloak: rotator authenticates with ``private_key_jwt`` (client
``oms-private-key-jwt``, "Signed JWT") and ``client_secret_jwt`` (``oms-secret-jwt``, "Signed
JWT with Client Secret").

Public keys are registered the way the README tells a user to: ``rotator keygen`` prints a
JWKS, which is imported on the client's Keys tab (archive format "JSON Web Key Set"); the
admin console sends it to ``POST clients/{id}/certificates/jwt.credential/upload``, and so do
these tests. Keycloak stores the uploaded JWKS as the client's ``jwks.string`` attribute.

rotator reaches Keycloak through ``RecordingProxy`` (``HTTP_PROXY``), so the tests see every
token request's form (each client assertion) and Keycloak's answer.

What Keycloak 26.7.3 was seen to do (the tests assert it):
* a replayed assertion: 400 ``invalid_client`` "Token reuse detected";
* a signature by another key: 400 ``invalid_client`` "Client authentication with signed JWT
  failed: Signature on JWT token failed validation"; a wrong client secret: 400
  ``unauthorized_client``; a ``kid`` it does not know: 400 ``invalid_client`` "Unable to
  load public key". rotator maps all of them to exit 3;
* an assertion without ``kid`` is checked against the first registered key of its alg.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from rotator.assertion import ASSERTION_TYPE, assertion_claims, sign
from tests.fixtures.aws import AwsEnv
from tests.fixtures.jwks import JwksValidator
from tests.fixtures.keycloak import KeycloakServer, published_token
from tests.fixtures.keycloak_admin import KeycloakAdmin
from tests.fixtures.procs import Daemon, Result, cli_env, run_cli
from tests.fixtures.recording_proxy import RecordingProxy

pytestmark = pytest.mark.timeout(300)

KEY_CLIENT = "oms-private-key-jwt"
SECRET_CLIENT = "oms-secret-jwt"
SECRET = "oms-secret-jwt-test-secret-0123456789abcdef0123456789"  # in the realm export
LIFESPAN = 6  # both clients' access.token.lifespan in the realm export


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    recorder = RecordingProxy()
    try:
        yield recorder
    finally:
        recorder.close()


# -- keys and Keycloak ------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    path: Path
    jwks: dict[str, Any]

    @property
    def kid(self) -> str:
        return str(self.jwks["keys"][0]["kid"])

    @property
    def private(self) -> Any:
        return load_pem_private_key(self.path.read_bytes(), None)

    def signed(self, assertion: str) -> bool:
        """Whether `assertion` carries this key's signature."""
        try:
            jwt.decode(
                assertion,
                self.private.public_key(),
                algorithms=["RS256", "ES256", "PS256"],
                options={"verify_aud": False},
            )
        except jwt.InvalidSignatureError:
            return False
        return True


def keygen(directory: Path, name: str, alg: str = "RS256") -> Key:
    path = directory / f"{name}.pem"
    result = run_cli(["keygen", "--out", str(path), "--alg", alg], cli_env())
    assert result.returncode == 0, result.describe()
    return Key(path, json.loads(result.stdout))


def import_jwks(admin: KeycloakAdmin, *keys: Key, alg: str = "RS256") -> dict[str, Any]:
    """What the Keys tab's Import does with a "JSON Web Key Set" file; returns Keycloak's
    view of the client's key (``kid``, ``publicKey``, ``jwks``)."""
    client = admin.client_uuid(KEY_CLIENT)
    jwks = {"keys": [jwk for key in keys for jwk in key.jwks["keys"]]}
    resp = requests.post(
        f"{admin.url}/clients/{client}/certificates/jwt.credential/upload",
        headers={"Authorization": f"Bearer {admin.token()}"},
        files={"keystoreFormat": (None, "JSON Web Key Set"), "file": ("k.json", json.dumps(jwks))},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    admin.update_client_attributes(KEY_CLIENT, {"token.endpoint.auth.signing.alg": alg})
    info: dict[str, Any] = admin.call("GET", f"/clients/{client}/certificates/jwt.credential")
    return info


@pytest.fixture
def admin(real_kc: KeycloakServer) -> Iterator[KeycloakAdmin]:
    """The admin API; the key client's keys and algorithm are put back afterwards, for the
    other tests of the session (test_keycloak_jwt_clients.py uses the same client)."""
    admin = KeycloakAdmin(real_kc)
    before = admin.client(KEY_CLIENT).get("attributes", {})
    names = ("use.jwks.url", "use.jwks.string", "jwks.string", "token.endpoint.auth.signing.alg")
    yield admin
    admin.update_client_attributes(KEY_CLIENT, {name: before.get(name, "") for name in names})


@pytest.fixture
def jwks(real_kc: KeycloakServer) -> JwksValidator:
    return JwksValidator(real_kc.jwks_url, issuer=real_kc.issuer)


def key_env(
    real_kc: KeycloakServer, proxy: RecordingProxy, key: Path, target: Path, **extra: str
) -> dict[str, str]:
    return cli_env(
        None,
        HTTP_PROXY=proxy.url,
        ROTATOR_TOKEN_URL=real_kc.token_url,
        ROTATOR_CLIENT_ID=KEY_CLIENT,
        ROTATOR_AUTH_METHOD="private_key_jwt",
        ROTATOR_PRIVATE_KEY_FILE=str(key),
        ROTATOR_FILE_PATH=str(target),
        **extra,
    )


def secret_env(
    real_kc: KeycloakServer, proxy: RecordingProxy, target: Path, secret: str = SECRET
) -> dict[str, str]:
    return cli_env(
        HTTP_PROXY=proxy.url,
        ROTATOR_TOKEN_URL=real_kc.token_url,
        ROTATOR_CLIENT_ID=SECRET_CLIENT,
        ROTATOR_AUTH_METHOD="client_secret_jwt",
        ROTATOR_CLIENT_SECRET=secret,
        ROTATOR_FILE_PATH=str(target),
    )


def check_token(real_kc: KeycloakServer, jwks: JwksValidator, token: str, client_id: str) -> None:
    claims = jwks.validate(token, client_id=client_id)
    assert claims["exp"] - claims["iat"] == LIFESPAN
    introspection = real_kc.introspect(token)
    assert introspection["active"] is True, introspection
    assert introspection["client_id"] == client_id


def claims_of(assertion: str) -> dict[str, Any]:
    return dict(jwt.decode(assertion, options={"verify_signature": False}))


def assert_clean(result: Result, *secrets: str) -> None:
    assert "Traceback" not in result.stderr
    for secret in secrets:
        assert secret not in result.stdout + result.stderr


def pem_body(key: Key) -> list[str]:
    return [line for line in key.path.read_text().splitlines() if not line.startswith("-----")]


# -- once and check ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256"])
def test_check_and_once_with_private_key_jwt(
    real_kc: KeycloakServer,
    admin: KeycloakAdmin,
    jwks: JwksValidator,
    proxy: RecordingProxy,
    tmp_path: Path,
    alg: str,
) -> None:
    key = keygen(tmp_path, "oms", alg)
    registered = import_jwks(admin, key, alg=alg)
    target = tmp_path / "token.json"
    env = key_env(
        real_kc, proxy, key.path, target, ROTATOR_SIGNING_ALG=alg, ROTATOR_PRIVATE_KEY_ID=key.kid
    )

    check = run_cli(["check"], env)
    assert check.returncode == 0, check.describe()
    assert "default: auth method: private_key_jwt" in check.stdout
    # The thumbprint check prints is the kid Keycloak registered for the imported key.
    line = f"private_key_file, {alg}, kid {key.kid}, JWK thumbprint SHA-256 {registered['kid']})"
    assert line in check.stdout, check.stdout
    assert not target.exists(), "check must not publish"

    once = run_cli(["once"], env)
    assert once.returncode == 0, once.describe()
    check_token(real_kc, jwks, published_token(target) or "", KEY_CLIENT)
    sent = [s for s in proxy.token_requests() if s.form.get("client_id") == KEY_CLIENT]
    assert [s.status for s in sent] == [200, 200]  # check's probe, then once's request
    for seen in sent:
        assert "client_secret" not in seen.form
        assert seen.form["client_assertion_type"] == ASSERTION_TYPE
        assert jwt.get_unverified_header(seen.assertion) == {
            "alg": alg,
            "typ": "JWT",
            "kid": key.kid,
        }
        assert key.signed(seen.assertion)
    for result in (check, once):
        assert_clean(result, *pem_body(key))


def test_once_with_client_secret_jwt(
    real_kc: KeycloakServer, jwks: JwksValidator, proxy: RecordingProxy, tmp_path: Path
) -> None:
    target = tmp_path / "token.json"
    once = run_cli(["once"], secret_env(real_kc, proxy, target))
    assert once.returncode == 0, once.describe()
    check_token(real_kc, jwks, published_token(target) or "", SECRET_CLIENT)
    (seen,) = proxy.token_requests()
    assert seen.status == 200
    assert "client_secret" not in seen.form  # the secret itself never travels
    jwt.decode(seen.assertion, SECRET.encode(), algorithms=["HS256"], audience=real_kc.token_url)
    assert_clean(once, SECRET)


def test_one_imported_jwks_holds_the_old_and_the_new_key(
    real_kc: KeycloakServer, admin: KeycloakAdmin, proxy: RecordingProxy, tmp_path: Path
) -> None:
    """The README's rotation with a restart: both keys in one import, each found by kid."""
    old, new = keygen(tmp_path, "old"), keygen(tmp_path, "new")
    registered = import_jwks(admin, old, new)
    assert [jwk["kid"] for jwk in json.loads(registered["jwks"])["keys"]] == [old.kid, new.kid]
    for key in (old, new):
        env = key_env(
            real_kc, proxy, key.path, tmp_path / "token.json", ROTATOR_PRIVATE_KEY_ID=key.kid
        )
        result = run_cli(["once", "--force"], env)
        assert result.returncode == 0, result.describe()
    assert [s.status for s in proxy.token_requests()] == [200, 200]


# -- a wrong key or secret --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["private_key_jwt", "client_secret_jwt"])
def test_a_wrong_key_or_secret_exits_3_after_one_request(
    real_kc: KeycloakServer,
    admin: KeycloakAdmin,
    proxy: RecordingProxy,
    tmp_path: Path,
    method: str,
) -> None:
    target = tmp_path / "token.json"
    if method == "private_key_jwt":
        registered = keygen(tmp_path, "registered")
        import_jwks(admin, registered)
        other = keygen(tmp_path, "other")  # signs under the registered key's kid
        env = key_env(real_kc, proxy, other.path, target, ROTATOR_PRIVATE_KEY_ID=registered.kid)
        error = "invalid_client"
        description = (
            "Client authentication with signed JWT failed: Signature on JWT token failed validation"
        )
        secrets = pem_body(other)
    else:
        wrong = "not-the-" + SECRET
        env = secret_env(real_kc, proxy, target, secret=wrong)
        error = "unauthorized_client"
        description = "Client authentication with client secret signed JWT failed"
        secrets = [wrong]
    result = run_cli(["once"], env)
    assert result.returncode == 3, result.describe()
    (seen,) = proxy.token_requests()  # exactly one request: the source did not change
    assert (seen.status, seen.error) == (400, error)
    lines = [
        line for line in result.stderr.splitlines() if "rejected the client credentials" in line
    ]
    assert len(lines) == 1, result.stderr
    assert f"({error}: {description}" in lines[0]
    assert not target.exists()
    assert_clean(result, *secrets)


# -- replay -----------------------------------------------------------------------------------


def post_assertion(real_kc: KeycloakServer, client_id: str, assertion: str) -> requests.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    return requests.post(real_kc.token_url, data=form, timeout=30)


def assert_reuse_refused(response: requests.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Token reuse detected",
    }


def test_keycloak_refuses_a_replayed_assertion(
    real_kc: KeycloakServer, admin: KeycloakAdmin, proxy: RecordingProxy, tmp_path: Path
) -> None:
    key = keygen(tmp_path, "oms")
    import_jwks(admin, key)
    # One made by rotator.assertion, sent by hand: accepted once, then refused.
    now = datetime.now(UTC)
    claims = assertion_claims(KEY_CLIENT, real_kc.token_url, now, timedelta(seconds=60))
    mine = sign(claims, key.private, "RS256", key.kid)
    assert post_assertion(real_kc, KEY_CLIENT, mine).status_code == 200
    assert_reuse_refused(post_assertion(real_kc, KEY_CLIENT, mine))
    # The same for client_secret_jwt.
    claims = assertion_claims(SECRET_CLIENT, real_kc.token_url, now, timedelta(seconds=60))
    hs = sign(claims, SECRET.encode(), "HS256", None)
    assert post_assertion(real_kc, SECRET_CLIENT, hs).status_code == 200
    assert_reuse_refused(post_assertion(real_kc, SECRET_CLIENT, hs))
    # rotator: a new assertion per run (and per request: see the daemon tests); one it
    # sent (captured on the wire) cannot be replayed either, within its 60 s.
    env = key_env(real_kc, proxy, key.path, tmp_path / "token.json")
    for _ in range(3):
        once = run_cli(["once", "--force"], env)
        assert once.returncode == 0, once.describe()
    sent = proxy.token_requests()
    assert [s.status for s in sent] == [200, 200, 200]
    assert len({claims_of(s.assertion)["jti"] for s in sent}) == 3
    assert_reuse_refused(post_assertion(real_kc, KEY_CLIENT, sent[0].assertion))


# -- the daemon -------------------------------------------------------------------------------


def watch(daemon: Daemon, target: Path, until: int, check: Any, timeout: float = 120) -> list[str]:
    """The distinct tokens the daemon publishes, each checked as soon as it appears."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while len(seen) < until and time.monotonic() < deadline:
        assert daemon.is_running, daemon.stderr_text()
        token = published_token(target)
        if token is not None and token not in seen:
            seen.append(token)
            check(token)  # while it must be valid
        time.sleep(0.2)
    return seen


@pytest.mark.parametrize("method", ["private_key_jwt", "client_secret_jwt"])
def test_daemon_rotates_with_a_new_assertion_each_time(
    real_kc: KeycloakServer,
    admin: KeycloakAdmin,
    jwks: JwksValidator,
    proxy: RecordingProxy,
    tmp_path: Path,
    method: str,
) -> None:
    target = tmp_path / "token.json"
    if method == "private_key_jwt":
        key = keygen(tmp_path, "oms")
        import_jwks(admin, key)
        env, client = key_env(real_kc, proxy, key.path, target), KEY_CLIENT
    else:
        env, client = secret_env(real_kc, proxy, target), SECRET_CLIENT
    with Daemon(env, tmp_path / "out") as daemon:
        tokens = watch(daemon, target, 3, lambda t: check_token(real_kc, jwks, t, client))
        result = daemon.stop()
    assert result.returncode == 0, result.describe()
    assert len(tokens) == 3, result.describe()
    sent = proxy.token_requests()
    assert len(sent) >= 3
    assert {s.status for s in sent} == {200}
    assert len({claims_of(s.assertion)["jti"] for s in sent}) == len(sent)  # never reused
    assert "Traceback" not in result.stderr


def test_a_new_key_is_picked_up_without_a_restart(
    real_kc: KeycloakServer,
    admin: KeycloakAdmin,
    jwks: JwksValidator,
    proxy: RecordingProxy,
    aws: AwsEnv,
    tmp_path: Path,
) -> None:
    """The key lives in Secrets Manager (cached by the daemon) and has no private_key_id:
    the new key goes into the secret first (the cached old one keeps working), then the new
    JWKS replaces the old one in Keycloak. The next request, still signed with the old key,
    is refused; rotator reads the secret again once and repeats it with the new key."""
    old, new = keygen(tmp_path, "old"), keygen(tmp_path, "new")
    import_jwks(admin, old)
    aws.secretsmanager.create_secret(Name="oms/jwt-key", SecretString=old.path.read_text())
    target = tmp_path / "token.json"
    config = tmp_path / "rotator.toml"
    config.write_text(
        f"""
[[credentials]]
name = "oms"
token_url = {json.dumps(real_kc.token_url)}
client_id = "{KEY_CLIENT}"
auth_method = "private_key_jwt"
private_key_secretsmanager = "oms/jwt-key"
[[credentials.targets]]
type = "file"
path = {json.dumps(str(target))}
"""
    )
    env = cli_env(aws, ROTATOR_CONFIG=str(config), HTTP_PROXY=proxy.url)

    def check(token: str) -> None:
        check_token(real_kc, jwks, token, KEY_CLIENT)

    with Daemon(env, tmp_path / "out") as daemon:
        assert len(watch(daemon, target, 1, check)) == 1, daemon.stderr_text()
        aws.secretsmanager.put_secret_value(
            SecretId="oms/jwt-key", SecretString=new.path.read_text()
        )
        import_jwks(admin, new)
        switched_at = len(proxy.token_requests())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            new.signed(s.assertion) and s.status == 200 for s in proxy.token_requests()
        ):
            assert daemon.is_running, daemon.stderr_text()
            time.sleep(0.2)
        # the token published after the switch, and the next one, are good too
        assert len(watch(daemon, target, 2, check, timeout=30)) == 2
        result = daemon.stop()
    assert result.returncode == 0, result.describe()
    sent = proxy.token_requests()
    before, after = sent[:switched_at], sent[switched_at:]
    assert before and all(s.status == 200 and old.signed(s.assertion) for s in before)
    # one refusal of the old key, then at once the new key, accepted
    assert [(s.status, s.error) for s in after[:2]] == [(400, "invalid_client"), (200, None)]
    assert old.signed(after[0].assertion) and new.signed(after[1].assertion)
    assert all(s.status == 200 and new.signed(s.assertion) for s in after[1:])
    # the secret was read twice: at start, and once after the refusal
    assert proxy.aws_calls("secretsmanager.GetSecretValue") == 2
    assert "Traceback" not in result.stderr
