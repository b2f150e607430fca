"""The CLI end to end, as a subprocess (``python -m rotator ...``), against the npm
oidc-provider peer.

See ``tests/harness/cli.py`` for the environment and what is read back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.aws import AwsEnv
from tests.fixtures.oidc import OidcPeer
from tests.harness.cli import (
    PARAMETER,
    SECRET_ID,
    ConsumerWatcher,
    assert_clean,
    check_document,
    consumer_readers,
    lifetime,
    peer_env,
    read_sm,
    read_ssm,
    rotate_three_times,
    token_requests,
    toml_str,
    write_toml,
)
from tests.harness.env import rotator_env
from tests.harness.process import Daemon, cli

# ----------------------------------------------------------------------------- oidc-provider


@pytest.mark.node
def test_oidc_check_once_get(aws: AwsEnv, oidc_peer_factory: Callable[..., OidcPeer]) -> None:
    peer = oidc_peer_factory(ttl=300)
    env = peer_env(aws, peer)
    results = []

    check = cli(env, "check")
    results.append(check)
    assert check.code == 0, check
    assert "token endpoint: ok" in check.stdout
    assert read_sm(aws) is None and read_ssm(aws) is None
    assert token_requests(peer) == 1

    once = cli(env, "once")
    results.append(once)
    assert once.code == 0, once
    doc = check_document(read_sm(aws), with_scope=None)
    assert check_document(read_ssm(aws), with_scope=None) == doc
    assert peer.introspect(doc["access_token"])
    assert 299 <= lifetime(doc) <= 301
    assert token_requests(peer) == 2

    again = cli(env, "once")
    results.append(again)
    assert again.code == 0, again
    assert "fresh, nothing to do" in again.stderr
    assert token_requests(peer) == 2, "a fresh token must not be fetched again"
    assert json.loads(read_sm(aws) or "") == doc

    got = cli(env, "get", "--json")
    assert got.code == 0, got
    assert json.loads(got.stdout) == doc

    forced = cli(env, "once", "--force")
    results.append(forced)
    assert forced.code == 0, forced
    assert token_requests(peer) == 3
    new_doc = check_document(read_ssm(aws), with_scope=None)
    assert json.loads(read_sm(aws) or "") == new_doc
    assert new_doc["access_token"] != doc["access_token"]
    assert peer.introspect(new_doc["access_token"])
    plain = cli(env, "get")
    assert plain.code == 0, plain
    assert plain.stdout == new_doc["access_token"] + "\n"
    assert_clean(results, [peer.client_secret, doc["access_token"], new_doc["access_token"]])
    assert_clean([got, plain], [peer.client_secret], stdout_ok=True)


@pytest.mark.node
def test_oidc_wrong_secret_exits_3(aws: AwsEnv, oidc_peer: OidcPeer) -> None:
    wrong = "oidc-wrong-secret-77aa"
    env = peer_env(aws, oidc_peer)
    env["ROTATOR_CLIENT_SECRET"] = wrong
    check = cli(env, "check")
    assert check.code == 3, check
    once = cli(env, "once")
    assert once.code == 3, once
    assert "retry_in=" not in once.stderr
    assert oidc_peer.stats()["by_grant"]["client_credentials"] == {"invalid_client": 2}
    assert read_sm(aws) is None and read_ssm(aws) is None
    assert_clean([check, once], [wrong, oidc_peer.client_secret])


@pytest.mark.node
@pytest.mark.timeout(60)
def test_oidc_run_daemon_rotates_and_never_publishes_a_dead_token(
    aws: AwsEnv, oidc_peer: OidcPeer, tmp_path: Path
) -> None:
    config = write_toml(
        tmp_path,
        f"""
[[credentials]]
name = "oms"
token_url = {toml_str(oidc_peer.token_url)}
client_id = {toml_str(oidc_peer.client_id)}
client_secret_env = "OMS_CLIENT_SECRET"

[[credentials.targets]]
type = "secretsmanager"
secret_id = {toml_str(SECRET_ID)}
create = true

[[credentials.targets]]
type = "ssm"
parameter = {toml_str(PARAMETER)}
""",
    )
    env = rotator_env(aws)
    env["OMS_CLIENT_SECRET"] = oidc_peer.client_secret
    watcher = ConsumerWatcher(consumer_readers(aws), is_active=oidc_peer.introspect, interval=0.1)
    with Daemon(env, tmp_path, args=("--config", config)) as daemon, watcher:
        rotate_three_times(daemon, watcher, lambda: token_requests(oidc_peer))
    assert oidc_peer.stats()["by_grant"]["client_credentials"].keys() == {"ok"}
    assert daemon.stdout == ""
    assert_clean([daemon], [oidc_peer.client_secret, *watcher.seen["ssm"]])
