"""Issue 8, point 1, end to end: the OMS team rotates the client secret at the token
endpoint, the operator then updates the stored copy; a running daemon picks the
new secret up at its next attempt (one back-off), without a restart.

``rotator run`` runs as a subprocess against the KeycloakStub (4 s tokens, so a
refresh comes every ~3 s and a failed attempt is retried after at most 1 s, a
quarter of the lifetime) and, for the Secrets Manager source, a moto server.
The assertions count requests at the stub and lines in the daemon's log; the
only waits are bounded polls for a new publish.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.fixtures.procs import Daemon, cli_env

pytestmark = pytest.mark.timeout(90)

CLIENT_ID = "oms-client"
OLD = "old-client-secret-MARKER"
NEW = "new-client-secret-MARKER"
SECRET_SOURCE_ID = "oms/client-secret"
POLL_LIMIT = 30.0  # a safety net for a broken build, never what the test asserts


def config(token_url: str, source_key: str, source_ref: str, token_path: Path) -> str:
    return (
        "[[credentials]]\n"
        'name = "oms"\n'
        f"token_url = {json.dumps(token_url)}\n"
        f"client_id = {json.dumps(CLIENT_ID)}\n"
        f"{source_key} = {json.dumps(source_ref)}\n"
        "[credentials.refresh]\n"
        "safety_margin_seconds = 1\n"
        "[[credentials.targets]]\n"
        'type = "file"\n'
        f"path = {json.dumps(str(token_path))}\n"
    )


def published_token(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["access_token"])
    except (OSError, ValueError, KeyError):
        return None


def wait_for(what: str, condition: Callable[[], bool], daemon: Daemon) -> None:
    limit = time.monotonic() + POLL_LIMIT
    while time.monotonic() < limit:
        if condition():
            return
        assert daemon.is_running, f"daemon exited waiting for {what}:\n{daemon.stderr_text()}"
        time.sleep(0.05)
    pytest.fail(f"no {what}; daemon log:\n{daemon.stderr_text()}")


@pytest.mark.parametrize("source", ["file", "secretsmanager"])
def test_rotated_client_secret_is_picked_up_without_restart(
    source: str, aws: AwsEnv, tmp_path: Path
) -> None:
    token_path = tmp_path / "token.json"
    if source == "file":
        secret_file = tmp_path / "client-secret"
        secret_file.write_text(OLD + "\n")
        key, ref = "client_secret_file", str(secret_file)

        def update_source() -> None:
            secret_file.write_text(NEW + "\n")

    else:
        aws.secretsmanager.create_secret(Name=SECRET_SOURCE_ID, SecretString=OLD)
        key, ref = "client_secret_secretsmanager", SECRET_SOURCE_ID

        def update_source() -> None:
            aws.secretsmanager.put_secret_value(SecretId=SECRET_SOURCE_ID, SecretString=NEW)

    with KeycloakStub(clients={CLIENT_ID: OLD}, access_token_lifespan=4) as stub:
        conf = tmp_path / "rotator.toml"
        conf.write_text(config(stub.token_url, key, ref, token_path))
        env = cli_env(aws, ROTATOR_CONFIG=str(conf), NO_PROXY="127.0.0.1,localhost")
        with Daemon(env, tmp_path) as daemon:
            wait_for("first publish", lambda: published_token(token_path) is not None, daemon)
            first = published_token(token_path)
            pid = daemon.proc.pid

            # The secret is rotated at Keycloak: the daemon's next refresh is refused.
            stub.set_client_secret(CLIENT_ID, NEW)
            wait_for(
                "a rejected refresh",
                lambda: stub.count(outcome="unauthorized_client") >= 1,
                daemon,
            )
            # The operator updates the stored copy.
            update_source()
            failed_jobs = daemon.stderr_text().count("rotation failed")
            rejected = stub.count(outcome="unauthorized_client")

            wait_for(
                "a token published with the new secret",
                lambda: published_token(token_path) not in (None, first),
                daemon,
            )

            assert daemon.is_running and daemon.proc.pid == pid  # no restart
            assert stub.count(outcome="ok") >= 2
            # Recovered at the next attempt: at most the job in flight when the source
            # changed failed; with the old code a cached AWS secret is refused for ever.
            assert daemon.stderr_text().count("rotation failed") <= failed_jobs + 1
            assert stub.count(outcome="unauthorized_client") <= rejected + 2
            assert OLD not in daemon.stderr_text() and NEW not in daemon.stderr_text()


def test_metrics_port_and_address_from_the_environment_with_a_config_file(
    aws: AwsEnv, tmp_path: Path
) -> None:
    """The Dockerfile bakes ROTATOR_METRICS_PORT in: switching to a TOML file must
    not silently turn /healthz off (issue 8, process-level settings)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with KeycloakStub(clients={CLIENT_ID: OLD}) as stub:
        secret_file = tmp_path / "client-secret"
        secret_file.write_text(OLD)
        conf = tmp_path / "rotator.toml"
        conf.write_text(
            config(stub.token_url, "client_secret_file", str(secret_file), tmp_path / "t.json")
        )
        env = cli_env(
            aws,
            ROTATOR_CONFIG=str(conf),
            ROTATOR_METRICS_PORT=str(port),
            ROTATOR_METRICS_ADDRESS="127.0.0.1",
            NO_PROXY="127.0.0.1,localhost",
        )
        with Daemon(env, tmp_path) as daemon:

            def healthy() -> bool:
                try:
                    return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok
                except requests.ConnectionError:
                    return False

            wait_for("/healthz on the port from the environment", healthy, daemon)
            assert f"on port {port} " in daemon.stderr_text()
            assert "address=127.0.0.1" in daemon.stderr_text()
