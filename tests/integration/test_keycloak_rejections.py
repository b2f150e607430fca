"""Issue 10, point 4: a disabled client and an unknown client make `once` exit 3 with one
clear line (Keycloak answers both 401 ``invalid_client``); a wrong realm path is not a
credential problem: Keycloak's 404 "Realm does not exist" gives exit 1 and says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.keycloak import KeycloakServer, rotator_env
from tests.fixtures.procs import Result, run_cli

pytestmark = pytest.mark.timeout(120)


def _error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if " ERROR " in f" {line} "]


def _assert_clean(result: Result, *secrets: str) -> None:
    assert "Traceback" not in result.stderr
    for secret in secrets:
        assert secret not in result.stderr + result.stdout


@pytest.mark.parametrize("client_id", ["oms-disabled", "no-such-client"])
def test_disabled_or_unknown_client_exits_3(
    real_kc: KeycloakServer, tmp_path: Path, client_id: str
) -> None:
    target = tmp_path / "token.json"
    env = rotator_env(real_kc, client_id, ROTATOR_FILE_PATH=str(target))
    result = run_cli(["once"], env)
    assert result.returncode == 3, result.describe()
    lines = [line for line in result.stderr.splitlines() if "invalid_client" in line]
    assert len(lines) == 1, result.stderr
    assert "Invalid client or Invalid client credentials" in lines[0]
    _assert_clean(result, env["ROTATOR_CLIENT_SECRET"])
    assert not target.exists()


def test_wrong_realm_is_a_clear_non_credential_error(
    real_kc: KeycloakServer, tmp_path: Path
) -> None:
    target = tmp_path / "token.json"
    env = rotator_env(
        real_kc,
        "oms-client",
        token_url=real_kc.token_url.replace("/realms/astore-p2p/", "/realms/astore-p2q/"),
        ROTATOR_FILE_PATH=str(target),
    )
    result = run_cli(["once"], env)
    assert result.returncode == 1, result.describe()
    # Keycloak's 404 body is {"error":"Realm does not exist"}: its words reach the user.
    lines = [line for line in result.stderr.splitlines() if "Realm does not exist" in line]
    assert len(lines) == 1, result.stderr
    assert "astore-p2q" in lines[0]
    assert "invalid_client" not in result.stderr
    _assert_clean(result, env["ROTATOR_CLIENT_SECRET"])
    assert not target.exists()
