"""Issue 10, point 2: with "Use refresh tokens for client credentials grant" on (client
``oms-refresh``), the daemon refreshes with the refresh_token grant; once the admin revokes
the session (logout of the service-account user) or pushes a client not-before, the next
refresh gets ``invalid_grant`` and rotator falls back to client_credentials at once: exactly
one extra request, no back-off.

Keycloak's own event store (enabled in the realm export) says which grant each request used
and in which order: CLIENT_LOGIN (client_credentials), REFRESH_TOKEN, REFRESH_TOKEN_ERROR.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.keycloak import KeycloakServer, rotator_env
from tests.fixtures.keycloak_admin import KeycloakAdmin
from tests.fixtures.procs import Daemon

pytestmark = pytest.mark.timeout(300)

CLIENT = "oms-refresh"
TOKEN_EVENTS = ("CLIENT_LOGIN", "CLIENT_LOGIN_ERROR", "REFRESH_TOKEN", "REFRESH_TOKEN_ERROR")


def _wait(what: str, condition: Callable[[], bool], daemon: Daemon, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert daemon.is_running, daemon.stderr_text()
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{daemon.stderr_text()}"
        time.sleep(0.3)


def _after(events: list[dict[str, Any]], since_ms: int) -> list[dict[str, Any]]:
    return [e for e in events if int(e["time"]) >= since_ms]


def _revoke_then_check(
    admin: KeycloakAdmin, daemon: Daemon, revoke: Callable[[], None], reason: str
) -> None:
    since = int(time.time() * 1000) - 1
    revoke()

    def fell_back() -> bool:
        events = _after(admin.events(CLIENT, *TOKEN_EVENTS), since)
        types = [e["type"] for e in events]
        return (
            "REFRESH_TOKEN_ERROR" in types
            and "REFRESH_TOKEN" in types[types.index("REFRESH_TOKEN_ERROR") :]
        )

    # A rejected refresh, then the fallback's token refreshed again later.
    _wait(f"a refresh rejected ({reason}) and the fallback", fell_back, daemon)
    events = _after(admin.events(CLIENT, *TOKEN_EVENTS), since)
    errors = [i for i, e in enumerate(events) if e["type"] == "REFRESH_TOKEN_ERROR"]
    assert any(events[i]["details"].get("reason") == reason for i in errors), events
    for i in errors:
        # Every rejected refresh is followed at once by one client_credentials grant.
        assert events[i]["error"] == "invalid_token", events[i]
        assert events[i + 1]["type"] == "CLIENT_LOGIN", [e["type"] for e in events]
    assert "CLIENT_LOGIN_ERROR" not in [e["type"] for e in events]


def test_refresh_then_fallback_after_revocation(real_kc: KeycloakServer, tmp_path: Path) -> None:
    admin = KeycloakAdmin(real_kc)
    started = int(time.time() * 1000) - 1
    env = rotator_env(real_kc, CLIENT, ROTATOR_FILE_PATH=str(tmp_path / "token.json"))
    with Daemon(env, tmp_path / "daemon") as daemon:
        _wait(
            "a refresh_token grant",
            lambda: bool(_after(admin.events(CLIENT, "REFRESH_TOKEN"), started)),
            daemon,
        )
        first = _after(admin.events(CLIENT, *TOKEN_EVENTS), started)
        assert first[0]["type"] == "CLIENT_LOGIN"
        assert first[1]["type"] == "REFRESH_TOKEN"

        # Logout of the service account's sessions: "Session not active".
        _revoke_then_check(
            admin,
            daemon,
            lambda: admin.logout_service_account(CLIENT),
            "Session not active",
        )
        # A client not-before (pushed): refresh tokens issued before it are "Stale token".
        # One second ahead, so the refresh token the daemon holds is certainly older.
        _revoke_then_check(
            admin,
            daemon,
            lambda: admin.set_client_not_before(CLIENT, int(time.time()) + 1),
            "Stale token",
        )
        result = daemon.stop()
    assert result.returncode == 0, result.describe()
    # The fallback happens inside one rotation: no failed rotation, hence no back-off.
    assert "rotation failed" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
