"""Issue 13 against the real Keycloak: a published token revoked through the admin API is
replaced at once (introspection and verify_url probes, one daemon and three replicas), a
realm that refuses every new token makes the daemon back off rather than loop, and a reload
adds, removes and changes Keycloak clients under a running daemon.

What revokes a ``client_credentials`` token at Keycloak 26.7's introspection endpoint
(``test_which_admin_action_revokes_a_client_credentials_token`` records it): the client's
``notBefore`` set to now (``KeycloakAdmin.set_client_not_before``), and the logout of the
service-account user's sessions (it sets that user's ``notBefore``); ``push-revocation``
alone changes nothing. The tests revoke with the client's ``notBefore``. And Keycloak
answers ``active: false`` to an introspecting client that is not in the token's ``aud``,
even the client the token was issued to: for ``probe = "introspection"`` each client gets
an audience mapper putting it in its own tokens' audience (removed after the test).

The clients' ``access.token.lifespan`` is set to LIFESPAN s for a revocation test (no
planned rotation can happen in it, so every token request after the first is caused by the
revocation) and restored, with ``notBefore``, afterwards. Token requests are counted in
Keycloak's own events (``CLIENT_LOGIN``) and the daemon's ``/metrics``. Revocation-to-
replacement times are printed and written to ``<basetemp>/kc-revocation-*.json``, never
asserted.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures.aws import AwsEnv
from tests.fixtures.keycloak import (
    CLIENTS,
    KeycloakServer,
    jwt_parts,
    published_token,
    rotator_env,
)
from tests.fixtures.keycloak_admin import KeycloakAdmin
from tests.fixtures.oms_api import OmsApi
from tests.harness.config import file_credential, probe_vars, replace_config
from tests.harness.env import rotator_env as cli_env
from tests.harness.probes import health, health_port
from tests.harness.process import Daemon, wait_for_daemons
from tests.harness.replicas import Replicas, store_target, write_figures
from tests.harness.watch import StoreWatcher, file_reader

pytestmark = pytest.mark.timeout(180)

CLIENT = "oms-client"
PROBE_INTERVAL = 1
# Three replicas probe at random phases within this interval: wider than a replacement
# takes under load, so the first replica's new token is usually visible to the others
# when they detect the revocation (the bound below is on requests, not on time).
REPLICA_PROBE_INTERVAL = 3
LIFESPAN = 120  # no planned rotation during a revocation test
WAIT = 40.0  # generous: the machine is loaded; no assertion is on time


@pytest.fixture
def admin(real_kc: KeycloakServer) -> KeycloakAdmin:
    return KeycloakAdmin(real_kc)


SELF_AUDIENCE = "rotator-test-self-audience"


def add_self_audience(admin: KeycloakAdmin, client_id: str) -> None:
    """An audience mapper putting the client into its own tokens' ``aud``: Keycloak 26
    answers ``active: false`` to an introspecting client that is not in ``aud``."""
    mapper = {
        "name": SELF_AUDIENCE,
        "protocol": "openid-connect",
        "protocolMapper": "oidc-audience-mapper",
        "config": {
            "included.client.audience": client_id,
            "access.token.claim": "true",
            "id.token.claim": "false",
            "introspection.token.claim": "true",
        },
    }
    admin.call("POST", f"/clients/{admin.client_uuid(client_id)}/protocol-mappers/models", mapper)


def remove_self_audience(admin: KeycloakAdmin, client_id: str) -> None:
    base = f"/clients/{admin.client_uuid(client_id)}/protocol-mappers/models"
    for mapper in admin.call("GET", base):
        if mapper["name"] == SELF_AUDIENCE:
            admin.call("DELETE", f"{base}/{mapper['id']}")


@pytest.fixture
def clients(admin: KeycloakAdmin) -> Iterator[Callable[..., None]]:
    """``clients(lifespan, *client_ids, self_audience=True)``: set the clients' token
    lifespan (and put each in its own audience, for the introspection probe); afterwards
    every touched client gets its lifespan, ``notBefore`` and mappers back."""
    saved: dict[str, tuple[str | None, int]] = {}

    def setup(lifespan: int, *client_ids: str, self_audience: bool = True) -> None:
        for client_id in client_ids:
            client = admin.client(client_id)
            attrs = client.get("attributes", {})
            saved.setdefault(
                client_id, (attrs.get("access.token.lifespan"), int(client.get("notBefore", 0)))
            )
            admin.update_client_attributes(client_id, {"access.token.lifespan": str(lifespan)})
            if self_audience:
                add_self_audience(admin, client_id)
        admin.clear_events()

    yield setup
    for client_id, (lifespan, not_before) in saved.items():
        remove_self_audience(admin, client_id)
        client = admin.client(client_id)
        client["notBefore"] = not_before
        if lifespan is not None:
            client.setdefault("attributes", {})["access.token.lifespan"] = lifespan
        admin.call("PUT", f"/clients/{client['id']}", client)
    admin.clear_events()


def logins(admin: KeycloakAdmin, client_id: str = CLIENT) -> int:
    """Successful token requests Keycloak recorded for the client (client_credentials, and
    refresh_token for a client that gets refresh tokens)."""
    return len(admin.events(client_id, "CLIENT_LOGIN", "REFRESH_TOKEN"))


def wait_for(what: str, ready: Callable[[], bool], daemons: list[Daemon]) -> None:
    wait_for_daemons(what, ready, daemons, timeout=WAIT)


def metrics_text(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text


def revoke(admin: KeycloakAdmin, token_issued_at: float) -> float:
    """Push a not-before revocation for the client; returns when it was sent. Keycloak
    compares whole seconds (``iat < notBefore``): wait for the next second first."""
    time.sleep(max(0.0, int(token_issued_at) + 1.05 - time.time()))
    revoked_at = time.time()
    admin.set_client_not_before(CLIENT)
    return revoked_at


def report(name: str, factory: pytest.TempPathFactory, figures: dict[str, object]) -> None:
    write_figures(factory, f"kc-revocation-{name}", f"Keycloak revocation report ({name})", figures)


def daemon_env(
    real_kc: KeycloakServer, path: Path, probe: str, api: OmsApi | None
) -> dict[str, str]:
    verify_url = None if api is None else api.url
    return rotator_env(real_kc, CLIENT, **probe_vars(path, probe, verify_url, PROBE_INTERVAL))


def test_which_admin_action_revokes_a_client_credentials_token(
    real_kc: KeycloakServer, admin: KeycloakAdmin, clients: Callable[..., None]
) -> None:
    clients(LIFESPAN, CLIENT, self_audience=False)
    secret = CLIENTS[CLIENT]

    def fresh() -> str:
        answer = real_kc.request_token(CLIENT, secret)
        assert answer.status_code == 200, answer.text
        time.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))  # iat < the next second
        return str(answer.json()["access_token"])

    def active_for_itself(token: str) -> object:
        answer = requests.post(
            real_kc.introspection_url, data={"token": token}, auth=(CLIENT, secret), timeout=30
        )
        return answer.json()["active"]

    token = fresh()
    findings = {
        # the client itself, not in its token's aud (oms-api, account): never active
        "own_credentials_without_self_audience": active_for_itself(token),
        "fresh_for_oms_api": real_kc.introspect(token)["active"],
    }
    admin.push_revocation(CLIENT)
    findings["after_push_revocation_alone"] = real_kc.introspect(token)["active"]
    admin.logout_service_account(CLIENT)  # sets the service-account user's notBefore
    findings["after_service_account_logout"] = real_kc.introspect(token)["active"]
    token = fresh()
    revoke(admin, time.time())
    findings["after_client_not_before_now"] = real_kc.introspect(token)["active"]
    add_self_audience(admin, CLIENT)
    token = fresh()
    findings["own_credentials_with_self_audience"] = active_for_itself(token)
    print(f"\nKeycloak admin actions and introspection: {findings}")
    assert findings == {
        "own_credentials_without_self_audience": False,
        "fresh_for_oms_api": True,
        "after_push_revocation_alone": True,
        "after_service_account_logout": False,
        "after_client_not_before_now": False,
        "own_credentials_with_self_audience": True,
    }


@pytest.mark.parametrize("probe", ["introspection", "verify_url"])
def test_a_revoked_keycloak_token_is_replaced_with_one_token_request(
    probe: str,
    real_kc: KeycloakServer,
    admin: KeycloakAdmin,
    clients: Callable[..., None],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    clients(LIFESPAN, CLIENT)
    path = tmp_path / "token.json"
    watcher = StoreWatcher("file", file_reader(path), interval=0.01)
    with OmsApi(real_kc) as api:
        env = daemon_env(real_kc, path, probe, api)
        with Daemon(env, tmp_path / "logs") as daemon, watcher:
            port = health_port(daemon, timeout=WAIT)
            wait_for("first token", lambda: len(watcher.distinct_tokens()) == 1, [daemon])
            first = watcher.distinct_tokens()[0]
            issued = float(jwt_parts(first)[1]["iat"])
            wait_for("first probe", lambda: api.answers[200] > 1 or probe != "verify_url", [daemon])
            revoked_at = revoke(admin, issued)
            wait_for("replacement", lambda: len(watcher.distinct_tokens()) == 2, [daemon])
            replaced_at = next(
                o.at for o in watcher.observations if o.value and first not in o.value
            )
            time.sleep(3 * PROBE_INTERVAL)  # the replacement is probed, and kept
            metrics = metrics_text(port)
            ready, _ = health(port, "/readyz")
            result = daemon.stop()
        api_answers = dict(api.answers)
    new = watcher.distinct_tokens()[1]
    figures = {
        "probe": probe,
        "probe_interval_seconds": PROBE_INTERVAL,
        "revocation_to_replacement_seconds": round(replaced_at - revoked_at, 3),
        "keycloak_client_logins": logins(admin),
        "oms_api_answers": api_answers,
    }
    report(probe, tmp_path_factory, figures)
    assert result.returncode == 0, result.describe()
    assert len(watcher.distinct_tokens()) == 2, figures
    assert real_kc.introspect(first)["active"] is False
    assert real_kc.introspect(new)["active"] is True
    assert logins(admin) == 2, figures  # the first token and exactly one replacement
    assert 'rotator_revocations_total{credential="default"} 1.0' in metrics
    assert re.search(
        r'rotator_token_requests_total\{credential="default",grant="client_credentials",'
        r'outcome="ok"\} 2\.0',
        metrics,
    ), metrics
    assert re.search(r" rotated credential=default reason=revoked ", result.stderr)
    assert ready == 200
    if probe == "verify_url":
        assert api_answers.get(401, 0) >= 1
    verdict = watcher.check(watcher.distinct_tokens())
    assert not verdict.problems, verdict.problems[:5]


@pytest.mark.parametrize("refuser", ["keycloak", "oms_api"])
def test_the_daemon_backs_off_when_every_new_keycloak_token_is_refused(
    refuser: str,
    real_kc: KeycloakServer,
    admin: KeycloakAdmin,
    clients: Callable[..., None],
    tmp_path: Path,
) -> None:
    clients(LIFESPAN, CLIENT)
    path = tmp_path / "token.json"
    probe = "introspection" if refuser == "keycloak" else "verify_url"
    with OmsApi(real_kc) as api:
        env = daemon_env(real_kc, path, probe, api)
        with Daemon(env, tmp_path / "logs") as daemon:
            port = health_port(daemon, timeout=WAIT)
            wait_for("ready", lambda: health(port, "/readyz")[0] == 200, [daemon])
            if refuser == "keycloak":  # every token issued from now on is inactive
                admin.set_client_not_before(CLIENT, int(time.time()) + 3600)
            else:
                api.refuse_all = True
            wait_for(
                "revocation seen",
                lambda: "published token revoked" in daemon.stderr_text(),
                [daemon],
            )
            window_start = logins(admin)
            wait_for("not ready", lambda: health(port, "/readyz")[0] == 503, [daemon])
            time.sleep(6)
            in_window = logins(admin) - window_start
            status, body = health(port, "/readyz")
            result = daemon.stop()
    failures = [line for line in result.stderr.splitlines() if "rotation failed" in line]
    total = logins(admin)
    # back-off 1, 2, 4, 8 s: at most 4 attempts start within ~6 s (+1 in flight when the
    # window opened), each one token request and one log line
    assert 1 <= in_window <= 5, result.stderr[-3000:]
    assert len(failures) == total - 1, result.stderr[-3000:]
    assert all("refused" in line for line in failures)
    assert status == 503 and body["credentials"]["default"]["revoked"] is True
    assert published_token(path) is not None
    assert result.returncode == 0, result.describe()


def test_three_replicas_replace_a_revoked_keycloak_token_with_at_most_two_requests(
    real_kc: KeycloakServer,
    admin: KeycloakAdmin,
    clients: Callable[..., None],
    aws: AwsEnv,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    clients(LIFESPAN, CLIENT)
    target, read = store_target("ssm", aws, "kc-revocation")
    env = rotator_env(
        real_kc,
        CLIENT,
        aws=aws,
        ROTATOR_PROBE="introspection",
        ROTATOR_PROBE_INTERVAL_SECONDS=str(REPLICA_PROBE_INTERVAL),
        **target,
    )
    watcher = StoreWatcher("ssm", read, interval=0.05)

    def revoke_all() -> tuple[float, Collection[str]]:
        before = set(watcher.distinct_tokens())
        return revoke(admin, time.time()), before

    with Replicas(env, tmp_path / "logs", watcher, timeout=WAIT) as replicas:
        # every replica probes the replacement within three intervals
        round_ = replicas.revocation_round(
            lambda: logins(admin), revoke_all, settle=3 * REPLICA_PROBE_INTERVAL
        )
    results = round_.results
    figures = {
        "replicas": 3,
        "target": "ssm",
        "cold_start_requests": round_.cold_start_requests,
        "extra_requests_for_one_revocation": round_.extra_requests,
        "revocation_to_replacement_seconds": round(round_.replaced_at - round_.revoked_at, 3),
    }
    report("replicas-ssm", tmp_path_factory, figures)
    assert [r.returncode for r in results] == [0, 0, 0], [r.describe() for r in results]
    assert 1 <= round_.extra_requests <= 2, figures
    assert real_kc.introspect(watcher.distinct_tokens()[-1])["active"] is True
    assert sum("published token revoked" in r.stderr for r in results) >= 1
    verdict = watcher.check(watcher.distinct_tokens())
    # SSM has no conditional write: two replicas replacing the revoked token at once may
    # leave the one that expires a second sooner, once; every token published after the
    # revocation must be one Keycloak still accepts
    assert not verdict.problems_beyond_the_ssm_race(races=1), verdict.problems[:5]
    assert watcher.revoked_reads_after_replacement(round_.revoked) == 0


RELOAD_CLIENTS = {"a": "oms-client", "b": "oms-regenerate", "c": "oms-refresh"}


def credential(real_kc: KeycloakServer, folder: Path, name: str, *targets: str) -> str:
    probe = f'probe = "introspection"\nprobe_interval_seconds = {PROBE_INTERVAL}\n'
    client_id = RELOAD_CLIENTS[name]
    return file_credential(name, real_kc.token_url, client_id, folder, *targets, extra=probe)


def write_config(path: Path, text: str) -> None:
    replace_config(path, text, top="readiness_margin_seconds = 5\n")


def test_reload_adds_removes_and_changes_keycloak_clients(
    real_kc: KeycloakServer,
    admin: KeycloakAdmin,
    clients: Callable[..., None],
    tmp_path: Path,
) -> None:
    # Short-lived tokens (planned rotations happen around the reload), but long enough
    # that the changed credential's published token is still fresh at the reload.
    clients(20, *RELOAD_CLIENTS.values())
    config = tmp_path / "rotator.toml"
    write_config(
        config, credential(real_kc, tmp_path, "a", "a1") + credential(real_kc, tmp_path, "b", "b1")
    )
    env = cli_env(
        ROTATOR_CONFIG=str(config),
        **{f"SECRET_{n.upper()}": CLIENTS[c] for n, c in RELOAD_CLIENTS.items()},
    )
    watchers = {
        t: StoreWatcher(t, file_reader(tmp_path / f"{t}.json"), interval=0.02)
        for t in ("a1", "a2", "b1", "c1")
    }
    for watcher in watchers.values():
        watcher.start()
    try:
        with Daemon(env, tmp_path / "logs") as daemon:
            port = health_port(daemon, timeout=WAIT)
            wait_for("ready", lambda: health(port, "/readyz")[0] == 200, [daemon])
            # a gets a second target, b is removed, c is added; by SIGHUP
            write_config(
                config,
                credential(real_kc, tmp_path, "a", "a1", "a2")
                + credential(real_kc, tmp_path, "c", "c1"),
            )
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for("c published", lambda: watchers["c1"].distinct_values >= 1, [daemon])
            wait_for("a copied", lambda: watchers["a2"].distinct_values >= 1, [daemon])
            b_token = published_token(tmp_path / "b1.json")
            time.sleep(3 * PROBE_INTERVAL)  # probes of the adopted and new tokens
            ready, body = health(port, "/readyz")
            metrics = metrics_text(port)
            result = daemon.stop()
    finally:
        for watcher in watchers.values():
            watcher.stop()
    log = result.stderr
    assert result.returncode == 0, result.describe()
    assert "configuration reloaded" in log and "added=c removed=b changed=a" in log, log[-3000:]
    after_reload = log[log.index("configuration reloaded") :]
    first_a = re.search(r" (\w+) credential=a expires_at=", after_reload)
    assert first_a is not None and first_a.group(1) == "adopted", after_reload[:2000]
    # no duplicate token requests: Keycloak saw one request per token the daemon published
    for name, client_id in RELOAD_CLIENTS.items():
        rotated = len(re.findall(rf" rotated credential={name} ", log))
        assert logins(admin, client_id) == rotated >= 1, (name, log[-3000:])
    assert len(re.findall(r" rotated credential=b ", after_reload)) == 0
    assert published_token(tmp_path / "b1.json") == b_token  # left in place
    for name, watcher in watchers.items():
        verdict = watcher.check(watcher.distinct_tokens(), fresh=True)
        assert not verdict.problems, (name, verdict.problems[:5])
    assert ready == 200 and set(body["credentials"]) == {"a", "c"}
    assert 'credential="b"' not in metrics and 'credential="c"' in metrics
    assert "published token revoked" not in log
    assert "Traceback" not in log
