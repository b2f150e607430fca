"""Issue 10, point 1: `check`, `once`, `get` and the daemon against a real Keycloak,
publishing to Secrets Manager and SSM; every published token validates against the realm's
JWKS (signature, exp, iat, iss, azp) and is active at Keycloak's introspection endpoint.

AWS is plain moto over HTTP here. When the limits proxy (issue 9, ``awslimits``) is merged,
point ``AWS_ENDPOINT_URL`` at it (with the PutSecretValue allowance raised for a 6 s token)
in ``_env`` below: that is the only place that names the AWS endpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fixtures.aws import AwsEnv
from tests.fixtures.jwks import JwksValidator
from tests.fixtures.keycloak import CLIENTS, KeycloakServer, rotator_env
from tests.fixtures.procs import Daemon, run_cli, secretsmanager_reader, ssm_reader

pytestmark = pytest.mark.timeout(300)

SECRET_ID = "oms/keycloak/access-token"
PARAMETER = "/oms/keycloak/access-token"
CLIENT = "oms-client"
LIFESPAN = 6  # the client's access.token.lifespan in the realm export
# Keycloak's default lifespan: `get` after `once` must find the token live even when a
# loaded machine takes seconds to start each process.
DEFAULT_CLIENT = "oms-default"
DEFAULT_LIFESPAN = 300


def _env(real_kc: KeycloakServer, aws: AwsEnv, client: str = CLIENT) -> dict[str, str]:
    return rotator_env(
        real_kc,
        client,
        aws=aws,
        ROTATOR_SECRETSMANAGER_SECRET_ID=SECRET_ID,
        ROTATOR_SECRETSMANAGER_CREATE="true",
        ROTATOR_SSM_PARAMETER=PARAMETER,
    )


def _check_token(
    real_kc: KeycloakServer,
    jwks: JwksValidator,
    token: str,
    client: str = CLIENT,
    lifespan: int = LIFESPAN,
) -> None:
    claims = jwks.validate(token, client_id=client)
    assert claims["exp"] - claims["iat"] == lifespan
    introspection = real_kc.introspect(token)
    assert introspection["active"] is True, introspection
    assert introspection["client_id"] == client
    assert introspection["azp"] == client


def test_check_once_get_publish_a_keycloak_token(real_kc: KeycloakServer, aws: AwsEnv) -> None:
    env = _env(real_kc, aws, DEFAULT_CLIENT)
    jwks = JwksValidator(real_kc.jwks_url, issuer=real_kc.issuer)

    check = run_cli(["check"], env)
    assert check.returncode == 0, check.describe()
    assert secretsmanager_reader(aws, SECRET_ID)() is None, "check must not publish"

    once = run_cli(["once"], env)
    assert once.returncode == 0, once.describe()
    sm_doc = json.loads(secretsmanager_reader(aws, SECRET_ID)() or "null")
    ssm_doc = json.loads(ssm_reader(aws, PARAMETER)() or "null")
    assert sm_doc == ssm_doc
    token = sm_doc["access_token"]
    _check_token(real_kc, jwks, token, DEFAULT_CLIENT, DEFAULT_LIFESPAN)
    assert set(sm_doc["scope"].split()) == {"profile", "email"}  # Keycloak's order varies

    get = run_cli(["get"], env)
    assert get.returncode == 0, get.describe()
    assert get.stdout.strip() == token
    for result in (check, once, get):
        assert "Traceback" not in result.stderr
        assert CLIENTS[DEFAULT_CLIENT] not in result.stdout + result.stderr


def test_daemon_rotates_a_short_lived_token_three_times(
    real_kc: KeycloakServer, aws: AwsEnv, tmp_path: Path
) -> None:
    jwks = JwksValidator(real_kc.jwks_url, issuer=real_kc.issuer)
    readers = {
        "secretsmanager": secretsmanager_reader(aws, SECRET_ID),
        "ssm": ssm_reader(aws, PARAMETER),
    }
    seen: dict[str, list[str]] = {name: [] for name in readers}
    problems: list[str] = []
    with Daemon(_env(real_kc, aws), tmp_path) as daemon:
        deadline = time.monotonic() + 120
        while min(len(tokens) for tokens in seen.values()) < 4 and time.monotonic() < deadline:
            assert daemon.is_running, daemon.stderr_text()
            for name, read in readers.items():
                value = read()
                if value is None:
                    continue
                token = json.loads(value)["access_token"]
                if token in seen[name]:
                    continue
                seen[name].append(token)
                try:  # checked as soon as it is published, while it must be valid
                    _check_token(real_kc, jwks, token)
                except (AssertionError, Exception) as exc:
                    problems.append(f"{name} token #{len(seen[name])}: {exc}")
            time.sleep(0.2)
        result = daemon.stop()
    assert result.returncode == 0, result.describe()
    # The first token, then at least three rotations, in both stores.
    assert all(len(tokens) >= 4 for tokens in seen.values()), (seen, result.stderr)
    assert problems == []
    assert seen["secretsmanager"][:4] == seen["ssm"][:4]
    assert "Traceback" not in result.stderr
