"""The introspection probe against a real RFC 7662 implementation (npm oidc-provider):
a token revoked through the server's RFC 7009 revocation endpoint is reported not
active, and the daemon replaces it with one token request."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.fixtures.oidc import OidcPeer
from tests.fixtures.procs import Daemon, StoreWatcher, cli_env, file_reader
from tests.harness.process import wait_for_daemons

pytestmark = pytest.mark.timeout(120)

WAIT = 30.0


def ok_requests(peer: OidcPeer) -> int:
    by_grant = peer.stats().get("by_grant", {})
    return int(by_grant.get("client_credentials", {}).get("ok", 0))


def test_introspection_probe_replaces_a_token_revoked_at_the_server(
    oidc_peer_factory: Callable[..., OidcPeer], tmp_path: Path
) -> None:
    peer = oidc_peer_factory(ttl=300)
    path = tmp_path / "token.json"
    env = cli_env(
        ROTATOR_TOKEN_URL=peer.token_url,
        ROTATOR_CLIENT_ID=peer.client_id,
        ROTATOR_CLIENT_SECRET=peer.client_secret,
        ROTATOR_AUTH_METHOD="client_secret_basic",
        ROTATOR_FILE_PATH=str(path),
        ROTATOR_PROBE="introspection",
        ROTATOR_PROBE_INTERVAL_SECONDS="1",
    )
    watcher = StoreWatcher("file", file_reader(path), interval=0.02)

    def wait_for(what: str, ready: Callable[[], bool], daemon: Daemon) -> None:
        wait_for_daemons(what, ready, [daemon], timeout=WAIT)

    with Daemon(env, tmp_path / "logs") as daemon, watcher:
        wait_for("first token", lambda: len(watcher.distinct_tokens()) == 1, daemon)
        wait_for("probed", lambda: peer.stats()["introspection_requests"] >= 2, daemon)
        first = watcher.distinct_tokens()[0]
        assert peer.introspect(first)
        revoke = requests.post(
            peer.token_url.rsplit("/token", 1)[0] + "/revoke",
            data={"token": first, "token_type_hint": "access_token"},
            auth=(peer.client_id, peer.client_secret),
            timeout=5,
        )
        assert revoke.status_code == 200, revoke.text
        assert not peer.introspect(first)
        wait_for("replacement", lambda: len(watcher.distinct_tokens()) == 2, daemon)
        time.sleep(2)  # two more probes of the replacement
        result = daemon.stop()
    replacement = watcher.distinct_tokens()[1]
    assert peer.introspect(replacement)
    assert ok_requests(peer) == 2, json.dumps(peer.stats())
    assert result.returncode == 0, result.describe()
    assert "reason=revoked" in result.stderr
    assert " ERROR " not in result.stderr
