"""Security for RFC 7523: the private key, the client_secret_jwt secret and every
client assertion never show, on successful and failing paths alike.

Planted markers: the private key PEM (whole and each base64 line), the HS256
secret, and every client assertion the oidc-provider peer received (whole, and its
payload and signature segments). ``once``, ``check`` and a short ``rotate``
daemon run at ``--log-level debug`` in text and JSON; every stdout and stderr
byte is searched. In-process, the repr of the key, the provider and the client
authentication, and the text of the errors on the failing paths carry none.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from rotator import assertion, config
from rotator.app import build
from rotator.clock import SystemClock
from rotator.errors import RotatorError
from rotator.keysource import KeyProvider
from tests.fixtures.oidc import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    OidcPeer,
    require_node_peer,
)
from tests.fixtures.procs import Daemon, cli_env
from tests.harness.leaks import Transcript, leaks
from tests.jwtkeys import pem, pem_lines, public_pem, rsa_key, write

pytestmark = [pytest.mark.node, pytest.mark.timeout(240)]

JWT_CLIENT = "client-jwt"
SECRET_JWT_CLIENT = "client-secret-jwt"
HS_SECRET = "HSSECRET-MARKER-0123456789abcdef0123456789"
KEY = rsa_key(2048, 11)
KEY_PEM = pem(KEY)


def jwk() -> dict[str, str]:
    from rotator.keysource import public_jwk

    return {**public_jwk(KEY.public_key()), "alg": "RS256", "use": "sig"}


@pytest.fixture(scope="module")
def peer() -> Iterator[OidcPeer]:
    require_node_peer()
    clients = [
        {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET},
        {
            "client_id": JWT_CLIENT,
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [jwk()]},
        },
        {
            "client_id": SECRET_JWT_CLIENT,
            "client_secret": HS_SECRET,
            "token_endpoint_auth_method": "client_secret_jwt",
        },
    ]
    with OidcPeer(clients=clients, ttl=3) as server:  # type: ignore[arg-type]
        yield server


def markers(peer: OidcPeer) -> dict[str, str]:
    found = {"private key": KEY_PEM, "HS256 secret": HS_SECRET}
    for i, line in enumerate(pem_lines(KEY_PEM)):
        found[f"private key line {i}"] = line
    for i, token in enumerate(peer.stats()["assertions"]):
        _, payload, signature = token.split(".")
        found[f"assertion #{i}"] = token
        found[f"assertion #{i} payload"] = payload
        found[f"assertion #{i} signature"] = signature
    return found


def config_text(peer: OidcPeer, tmp_path: Path, key: Path, method: str, secret: Path) -> str:
    auth = (
        f'auth_method = "private_key_jwt"\nclient_id = "{JWT_CLIENT}"\n'
        f"private_key_file = {json.dumps(str(key))}\n"
        if method == "private_key_jwt"
        else f'auth_method = "client_secret_jwt"\nclient_id = "{SECRET_JWT_CLIENT}"\n'
        f"client_secret_file = {json.dumps(str(secret))}\n"
    )
    return (
        f'[[credentials]]\nname = "leak"\ntoken_url = {json.dumps(peer.token_url)}\n{auth}'
        "[credentials.refresh]\nratio = 0.5\njitter_ratio = 0\nsafety_margin_seconds = 1\n"
        "retry_budget_seconds = 1\nmax_retry_wait_seconds = 0.3\n"
        f'[[credentials.targets]]\ntype = "file"\npath = {json.dumps(str(tmp_path / "t.json"))}\n'
    )


@pytest.mark.parametrize("method", ["private_key_jwt", "client_secret_jwt"])
def test_no_key_secret_or_assertion_shows(peer: OidcPeer, tmp_path: Path, method: str) -> None:
    peer.reset()
    transcript = Transcript()
    key = write(tmp_path / "key.pem", KEY_PEM)
    secret = write(tmp_path / "secret", HS_SECRET + "\n")
    good = write(tmp_path / "good.toml", config_text(peer, tmp_path, key, method, secret))
    env = cli_env(ROTATOR_CONFIG=str(good))
    transcript.both(["once"], env, expect=0)
    transcript.both(["once", "--force"], env, expect=0)
    transcript.both(["check"], env, expect=0)
    daemon = Daemon(
        cli_env(ROTATOR_CONFIG=str(good)), tmp_path / "out", args=["--log-level", "debug"]
    )
    with daemon:
        deadline = time.monotonic() + 30
        while peer.stats()["token_requests"] < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        transcript.daemon(daemon, "rotator run")

    # Failing paths: the server refuses the key / secret (exit 3).
    wrong_key = write(tmp_path / "wrong.pem", pem(rsa_key(2048, 12)))
    wrong_secret = write(tmp_path / "wrong-secret", "WRONGSECRET-0123456789abcdef0123456789\n")
    bad = write(tmp_path / "bad.toml", config_text(peer, tmp_path, wrong_key, method, wrong_secret))
    transcript.both(["once", "--force"], cli_env(ROTATOR_CONFIG=str(bad)), expect=3)
    transcript.both(["check"], cli_env(ROTATOR_CONFIG=str(bad)), expect=3)

    marks = markers(peer)
    assert sum(label.startswith("assertion #") for label in marks) >= 3 * 8
    transcript.assert_clean(marks)


def test_objects_and_errors_carry_no_key_or_assertion(peer: OidcPeer, tmp_path: Path) -> None:
    peer.reset()
    key = write(tmp_path / "key.pem", KEY_PEM)
    provider = KeyProvider(config.SecretSource("private_key_file", str(key)), alg="RS256")
    auth = assertion.private_key_jwt(
        provider,
        client_id=JWT_CLIENT,
        audience=peer.token_url,
        clock=SystemClock(),
        lifetime=timedelta(seconds=60),
    )
    token = auth.assertion()
    texts = [repr(provider), repr(provider.get()), str(provider.get()), repr(auth)]

    errors: list[BaseException] = []
    for content in (pem(rsa_key(2048, 12)), public_pem(KEY), KEY_PEM.replace("A", "B", 40)):
        write(key, content)
        settings = config.load(
            write(
                tmp_path / "c.toml",
                config_text(peer, tmp_path, key, "private_key_jwt", tmp_path / "unused"),
            ),
            env={},
        )
        app = build(settings)
        texts.append(repr(settings))
        try:
            app.rotator(settings.credentials[0]).rotate(force=True)
        except RotatorError as exc:
            errors.append(exc)
    assert len(errors) == 3
    for exc in errors:
        texts.append("".join(traceback.format_exception(exc)))
    marks = {**markers(peer), "assertion (in process)": token}
    found = [label for text in texts for label in leaks(text, marks)]
    assert not found, found
