"""Issue 10, point 6: signing-key rotation. The admin adds a new RSA key with a higher
priority (it becomes the active signing key); the daemon goes on publishing, tokens signed
by the new key validate for a consumer that fetches the JWKS again when it meets an unknown
key id, and tokens published before the rotation still validate against the same JWKS.

rotator's own verify step (``verify_url``) is an HTTP GET with the new token; it does not
validate JWTs itself, so it has no key cache to refresh.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fixtures.jwks import JwksValidator
from tests.fixtures.keycloak import KeycloakServer, jwt_parts, published_token, rotator_env
from tests.fixtures.keycloak_admin import KeycloakAdmin
from tests.fixtures.procs import Daemon

pytestmark = pytest.mark.timeout(300)


def test_new_active_signing_key(real_kc: KeycloakServer, tmp_path: Path) -> None:
    admin = KeycloakAdmin(real_kc)
    consumer = JwksValidator(real_kc.jwks_url, issuer=real_kc.issuer)
    target = tmp_path / "token.json"
    env = rotator_env(real_kc, "oms-client", ROTATOR_FILE_PATH=str(target))
    component: str | None = None
    try:
        with Daemon(env, tmp_path / "daemon") as daemon:
            deadline = time.monotonic() + 60
            while (old_token := published_token(target)) is None:
                assert daemon.is_running and time.monotonic() < deadline, daemon.stderr_text()
                time.sleep(0.2)
            consumer.validate(old_token, client_id="oms-client")
            old_kid = jwt_parts(old_token)[0]["kid"]
            assert consumer.fetches == 1

            component = admin.add_rsa_key(priority=1000)
            new_kid = admin.active_keys()["active"]["RS256"]
            assert new_kid != old_kid

            deadline = time.monotonic() + 60
            while True:
                token = published_token(target)
                if token is not None and jwt_parts(token)[0]["kid"] == new_kid:
                    break
                assert daemon.is_running and time.monotonic() < deadline, daemon.stderr_text()
                time.sleep(0.2)
            claims = consumer.validate(token, client_id="oms-client")
            assert consumer.fetches == 2  # the unknown key id made it fetch the JWKS again
            assert claims["azp"] == "oms-client"
            # The old key is still published: a token signed before the rotation validates.
            consumer.validate(old_token, client_id="oms-client", now=jwt_parts(old_token)[1]["iat"])
            assert {old_kid, new_kid} <= {key["kid"] for key in real_kc.jwks()["keys"]}
            assert real_kc.introspect(token)["active"] is True
            result = daemon.stop()
        assert result.returncode == 0, result.describe()
        assert "rotation failed" not in result.stderr
    finally:
        if component is not None:
            admin.delete_component(component)
