"""Rejected client credentials, rejected refresh tokens, and the verify_url check before
publishing: what is retried, what is not, and what stays published."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fixtures.faults import rotator_env
from tests.harness.config import (
    credential,
    file_target,
    write_config,
)
from tests.harness.factories import ProxyFactory, Spawn, StubFactory
from tests.harness.history import (
    HistoryWatcher,
    file_reader,
    token_of,
)
from tests.harness.process import assert_no_traceback, run_once, wait_until
from tests.harness.schedule import (
    assert_never_early,
    assert_on_schedule,
    planned_waits,
)

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------- 7. rejected credentials

WRONG_SECRET = "wrong-secret-marker-7f3a"


@pytest.mark.parametrize("legacy", [False, True], ids=["unauthorized_client", "invalid_client"])
def test_once_rejected_credentials_exit_3_at_once(
    legacy: bool, tmp_path: Path, make_stub: StubFactory
) -> None:
    kc = make_stub(access_token_lifespan=60, legacy_errors=legacy)
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [file_target(path)], retry_budget_seconds=20.0)],
    )
    result = run_once(config, rotator_env(OMS_CLIENT_SECRET=WRONG_SECRET))
    assert result.returncode == 3, result.stderr
    [request] = kc.requests()  # at once: one request, no retry within the 20 s budget
    assert request.outcome == ("invalid_client" if legacy else "unauthorized_client")
    assert not path.exists()
    [error] = [line for line in result.lines if " ERROR " in line]
    assert "rejected the client credentials" in error, error
    assert WRONG_SECRET not in result.stderr
    assert_no_traceback(result.stderr)


def test_daemon_rejected_credentials_backs_off_to_its_cap(
    tmp_path: Path, make_stub: StubFactory, spawn: Spawn
) -> None:
    cap = 2.0
    kc = make_stub(access_token_lifespan=60)
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [file_target(path)], max_retry_wait_seconds=cap)],
    )
    daemon = spawn("run", "--config", config, env=rotator_env(OMS_CLIENT_SECRET=WRONG_SECRET))
    daemon.wait_for(r"rotation failed credential=oms attempt=5 ", timeout=60)
    daemon.stop()
    assert daemon.proc.returncode == 0
    attempts = [r.time for r in kc.requests()]
    assert all(r.outcome == "unauthorized_client" for r in kc.requests())
    assert len(attempts) == 5, attempts
    lines = daemon.lines(r" ERROR | WARNING ")
    assert len(lines) == len(attempts)  # one line per attempt, nothing else
    waits = planned_waits(lines)
    assert len(waits) == 5 and 1.0 <= waits[0] <= cap, waits  # 1 s plus jitter, capped
    assert waits[1:] == [cap] * 4, waits  # then the cap
    assert_never_early(attempts, waits)
    for n, line in enumerate(lines, 1):
        assert f"rotation failed credential=oms attempt={n} " in line.text
        assert "rejected the client credentials (unauthorized_client" in line.text
    assert WRONG_SECRET not in daemon.log()
    assert_no_traceback(daemon.log())
    assert not path.exists()


# ---------------------------------------------------------------- 8. refresh token rejected


def test_rejected_refresh_token_gives_exactly_one_client_credentials_request(
    tmp_path: Path, make_stub: StubFactory, spawn: Spawn
) -> None:
    """Keycloak's refresh tokens for client_credentials: the daemon renews with them; when
    one is rejected (invalid_grant "Token is not active" / "Session not active") exactly one
    client_credentials request follows at once, then the refresh grant is used again."""
    lifetime = 2.0
    kc = make_stub(access_token_lifespan=lifetime, use_refresh_tokens=True)
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml", [credential("oms", kc.token_url, [file_target(path)])]
    )

    def refreshes_after(when: float) -> int:
        return sum(
            r.grant_type == "refresh_token" and r.outcome == "ok" and r.time > when
            for r in kc.requests()
        )

    with HistoryWatcher({"file": file_reader(path)}) as watcher:
        daemon = spawn("run", "--config", config, env=rotator_env())
        watcher.wait_for_token("file", timeout=30)
        wait_until(lambda: refreshes_after(0) >= 1, 60, "a refresh grant")
        for description in ("Token is not active", "Session not active"):
            revoked_at = time.time()
            kc.revoke_refresh_tokens(description)
            wait_until(lambda: refreshes_after(revoked_at) >= 1, 60, "a refresh grant again")
    daemon.stop()
    assert daemon.proc.returncode == 0
    watcher.check(kc.issued_tokens())

    requests_ = kc.requests()
    kinds = [(r.grant_type, r.outcome) for r in requests_]
    rejected = [i for i, kind in enumerate(kinds) if kind == ("refresh_token", "invalid_grant")]
    assert [requests_[i].error_description for i in rejected] == [
        "Token is not active",
        "Session not active",
    ]
    for i in rejected:
        assert kinds[i + 1] == ("client_credentials", "ok"), kinds  # at once, see below
        assert kinds[i + 2] == ("refresh_token", "ok"), kinds  # and nothing more
    # at once: the fallback is part of the same rotation, never a failure and a back-off
    assert not daemon.lines(r"rotation failed|retry_in="), daemon.log()
    assert assert_on_schedule(daemon, "oms", lifetime, [r.time for r in requests_]) >= 4
    # client_credentials only at start-up and right after each rejection
    assert [i for i, k in enumerate(kinds) if k[0] == "client_credentials"] == [
        0,
        *(i + 1 for i in rejected),
    ]
    assert all(outcome in ("ok", "invalid_grant") for _, outcome in kinds)
    assert_no_traceback(daemon.log())


# ---------------------------------------------------------------- verify before publish


def test_verify_url_gets_the_new_token_before_it_is_published(
    tmp_path: Path, make_stub: StubFactory, make_proxy: ProxyFactory
) -> None:
    kc = make_stub(access_token_lifespan=60)
    proxy = make_proxy(kc.base_url)
    proxy.add_latency(1.0, path_prefix="/oms-api")  # a slow check makes the order visible
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [file_target(path)], verify_url=proxy.url + "/oms-api/")],
    )
    with HistoryWatcher({"file": file_reader(path)}, interval=0.01) as watcher:
        result = run_once(config, rotator_env())
        assert result.returncode == 0, result.stderr
        published = watcher.wait_for_token("file", timeout=3)
    [check] = kc.verify_requests()
    assert check.ok  # the stub accepted the token: it was the new, active one
    assert check.time < published.started  # and this happened before the publish
    assert watcher.check(kc.issued_tokens())["file"].tokens == [token_of(published.value)]


def test_failed_verification_is_an_error_and_the_previous_token_stays(
    tmp_path: Path, make_stub: StubFactory
) -> None:
    kc = make_stub(access_token_lifespan=60)
    other = make_stub()  # knows none of kc's tokens: its /oms-api/ answers 401
    path = tmp_path / "token.json"
    plain = write_config(
        tmp_path / "plain.toml", [credential("oms", kc.token_url, [file_target(path)])]
    )
    assert run_once(plain, rotator_env()).returncode == 0
    before = path.read_bytes()
    config = write_config(
        tmp_path / "rotator.toml",
        [
            credential(
                "oms",
                kc.token_url,
                [file_target(path)],
                verify_url=other.verify_url,
                retry_budget_seconds=5.0,
            )
        ],
    )
    result = run_once(config, rotator_env(), "--force")
    assert result.returncode == 1, result.stderr
    assert path.read_bytes() == before
    assert kc.count() == 2  # the new token was fetched, refused, and not retried
    assert other.verify_count(ok=False) == 1
    [error] = [line for line in result.lines if " ERROR " in line]
    assert "verify_url" in error and "refused the new token: HTTP 401" in error, error
    assert_no_traceback(result.stderr)
