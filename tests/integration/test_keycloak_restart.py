"""Issue 10, point 5: Keycloak restarted under the daemon (stopped, down for longer than one
token lifetime, started again with its database): the published token is never replaced by
a worse one, the daemon keeps trying through the outage, and the first request after
Keycloak answers again gets the fresh token that is then published.

The daemon talks to Keycloak through a FaultProxy (pass-through, no faults) so that every
attempt is recorded, also while Keycloak is down (the proxy answers those 502).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rotator.testing import FaultProxy
from tests.fixtures.jwks import JwksValidator
from tests.fixtures.keycloak import KeycloakServer, jwt_parts, published_token, rotator_env
from tests.fixtures.procs import Daemon, StoreWatcher, file_reader

pytestmark = pytest.mark.timeout(600)

LIFESPAN = 6
TOKEN_PATH = "/auth/realms/astore-p2p/protocol/openid-connect/token"


def test_keycloak_restart_under_the_daemon(real_kc: KeycloakServer, tmp_path: Path) -> None:
    target = tmp_path / "token.json"
    with FaultProxy(f"http://127.0.0.1:{real_kc.http_port}") as proxy:
        issuer = real_kc.issuer.replace(f":{real_kc.http_port}", f":{proxy.port}")
        env = rotator_env(
            real_kc,
            "oms-client",
            token_url=real_kc.token_url.replace(f":{real_kc.http_port}", f":{proxy.port}"),
            ROTATOR_FILE_PATH=str(target),
        )
        with (
            Daemon(env, tmp_path / "daemon") as daemon,
            StoreWatcher("file", file_reader(target), interval=0.05) as watcher,
        ):
            deadline = time.monotonic() + 60
            while watcher.distinct_values < 2:
                assert daemon.is_running and time.monotonic() < deadline, daemon.stderr_text()
                time.sleep(0.2)

            real_kc.stop()
            down_at = time.time()
            time.sleep(LIFESPAN + 2)  # past one token lifetime: the published token expires
            last_before = published_token(target)
            real_kc.start()
            up_at = time.time()

            deadline = time.monotonic() + 60
            while published_token(target) == last_before:
                assert daemon.is_running, daemon.stderr_text()
                assert time.monotonic() < deadline, daemon.stderr_text()
                time.sleep(0.1)
            published_at = time.time()
            watcher.stop()
            result = daemon.stop()
        requests = [r for r in proxy.requests() if r.path.startswith(TOKEN_PATH)]

    assert result.returncode == 0, result.describe()
    assert "Traceback" not in result.stderr
    # Never a worse document: complete, never going backwards, never missing.
    tokens = watcher.distinct_tokens()
    verdict = watcher.check(tokens)
    assert verdict.problems == [], verdict.problems[:5]
    # Every published token is Keycloak's (the signing keys survived the restart).
    jwks = JwksValidator(real_kc.jwks_url, issuer=issuer)  # iss names the host the daemon used
    for token in tokens:
        issued_at = jwt_parts(token)[1]["iat"]  # checked as of when it was issued
        claims = jwks.validate(token, client_id="oms-client", now=issued_at)
        assert claims["exp"] - claims["iat"] == LIFESPAN
    # The daemon kept trying while Keycloak was down (every attempt failed until it came
    # back)...
    since_down = [r for r in requests if r.time >= down_at]
    first_ok = next(i for i, r in enumerate(since_down) if r.status == 200)
    assert first_ok >= 2, since_down[: first_ok + 1]
    # ... and once Keycloak was ready again, no attempt failed (no extra back-off round).
    assert all(r.status == 200 for r in requests if r.time >= up_at), requests[-5:]
    first_ok_at = since_down[first_ok].time
    print(
        f"keycloak down {up_at - down_at:.1f}s, {first_ok} failed attempts; first success "
        f"{first_ok_at - down_at:.1f}s after the stop, new token published "
        f"{published_at - first_ok_at:.2f}s after it"
    )
