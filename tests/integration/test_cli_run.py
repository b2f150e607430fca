"""The CLI end to end, as a subprocess (``python -m rotator ...``): the run daemon.

See ``tests/harness/cli.py`` for the environment and what is read back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.harness.cli import (
    CLIENT_ID,
    STUB_SECRET,
    ConsumerWatcher,
    assert_clean,
    assert_json_lines,
    cc_ok,
    consumer_readers,
    read_ssm,
    rotate_three_times,
    run_at_a_bad_phase,
    server_env,
)
from tests.harness.process import Daemon, cli, wait_until

# ----------------------------------------------------------------------------- run


@pytest.mark.timeout(60)
def test_run_daemon_keeps_every_target_fresh_then_stops_on_sigterm(
    aws: AwsEnv, keycloak: Callable[..., KeycloakStub], tmp_path: Path
) -> None:
    kc = keycloak(access_token_lifespan=4)
    token_file = tmp_path / "token.json"
    env = server_env(aws, kc.token_url, ROTATOR_FILE_PATH=str(token_file))
    watcher = ConsumerWatcher(
        consumer_readers(aws, token_file), is_active=kc.is_active, interval=0.1
    )
    with Daemon(env, tmp_path, args=("--log-format", "json")) as daemon, watcher:
        rotate_three_times(daemon, watcher, lambda: cc_ok(kc))
    assert watcher.looks > 50
    for target in watcher.readers:
        assert set(watcher.seen[target]) <= kc.issued_tokens()
    assert kc.count() == cc_ok(kc), "every token request succeeded"
    assert daemon.stdout == ""
    records = assert_json_lines(daemon.stderr)
    assert any("received SIGTERM" in r["message"] for r in records)
    assert records[-1]["message"] == "daemon stopped"
    assert_clean([daemon], [STUB_SECRET, *kc.issued_tokens()])


def test_run_adopts_a_fresh_published_token_at_startup(
    aws: AwsEnv, kc: KeycloakStub, tmp_path: Path
) -> None:
    env = server_env(aws, kc.token_url)
    once = cli(env, "once")
    assert once.code == 0, once
    published = read_ssm(aws)
    with Daemon(env, tmp_path) as daemon:
        wait_until(
            lambda: daemon.assert_running() and "adopted" in daemon.stderr,
            15,
            "the daemon to adopt the published token",
        )
        code = daemon.terminate()
    assert code == 0, daemon.stderr
    assert cc_ok(kc) == 1, "a restart must not fetch a new token while the published one is fresh"
    assert read_ssm(aws) == published
    assert_clean([once, daemon], [STUB_SECRET, *kc.issued_tokens()])


@pytest.mark.parametrize("server", ["keycloak", pytest.param("oidc", marks=pytest.mark.node)])
def test_run_publishes_no_expired_token_whatever_the_phase(
    server: str, aws: AwsEnv, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if server == "keycloak":
        kc = request.getfixturevalue("keycloak")(access_token_lifespan=3)
        token_url, client_id, secret = kc.token_url, CLIENT_ID, STUB_SECRET
        is_active: Callable[[str], bool] = kc.is_active
    else:
        peer = request.getfixturevalue("oidc_peer")
        token_url, client_id, secret = peer.token_url, peer.client_id, peer.client_secret
        is_active = peer.introspect
    watcher = run_at_a_bad_phase(
        aws, tmp_path, token_url=token_url, client_id=client_id, secret=secret, is_active=is_active
    )
    # Keycloak (the stub) keeps the token a second longer, but the published expires_at
    # (what consumers and `rotator get` go by) has passed; the oidc peer agrees:
    # introspection says the published token is not active.
    assert watcher.violations == [], "\n".join(watcher.violations)
