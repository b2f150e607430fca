"""The daemon's /metrics, /healthz and /readyz, end to end: ``python -m rotator run
--metrics-port PORT`` as a subprocess against the KeycloakStub (and a moto server for a
Secrets Manager target), everything on 127.0.0.1. Plus the Metrics observer's exposition.

The daemon is configured by a TOML file named in ROTATOR_CONFIG: only the file can set
``metrics_host`` (127.0.0.1 here; the ROTATOR_* variables alone would bind 0.0.0.0).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from rotator.health import Metrics
from rotator.stores import FileStore
from rotator.testing import FaultProxy, KeycloakStub
from rotator.token import Token, decode_document
from tests.harness.env import rotator_env

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[2]
CREDENTIAL = "oms"
SECRET_ID = "oms/token"
SECRET_ENV = "OMS_CLIENT_SECRET"
GOOD_SECRET = "oms-secret"
WRONG_SECRET = "wrong-secret-MARKER"
START_TIMEOUT = 20.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def toml_config(
    *,
    token_url: str,
    targets: list[dict[str, Any]],
    verify_url: str | None = None,
    refresh: dict[str, float] | None = None,
) -> str:
    def value(v: Any) -> str:
        return json.dumps(v)  # a JSON string/number/bool is a valid TOML value

    lines = [
        'metrics_host = "127.0.0.1"',
        "readiness_margin_seconds = 30",
        "",
        "[[credentials]]",
        f"name = {value(CREDENTIAL)}",
        f"token_url = {value(token_url)}",
        'client_id = "oms-client"',
        f"client_secret_env = {value(SECRET_ENV)}",
    ]
    if verify_url:
        lines.append(f"verify_url = {value(verify_url)}")
    if refresh:
        lines += ["", "[credentials.refresh]"]
        lines += [f"{k} = {value(v)}" for k, v in refresh.items()]
    for target in targets:
        lines += ["", "[[credentials.targets]]"]
        lines += [f"{k} = {value(v)}" for k, v in target.items()]
    return "\n".join(lines) + "\n"


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@dataclass
class DaemonProcess:
    """``rotator run`` in a subprocess; its stderr (the log) goes to a file."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, timeout=30)

    def metrics(self) -> Samples:
        response = self.get("/metrics")
        assert response.status_code == 200
        return parse_metrics(response.text)

    def wait_until(self, what: str, condition: Callable[[], bool], timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"daemon exited ({self.proc.returncode}) waiting for {what}:\n{self.log()}"
                )
            try:
                if condition():
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}; daemon log:\n{self.log()}")

    def terminate(self, timeout: float = 15) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def start_daemon(tmp_path: Path, moto_server: Any) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(config: str, *, secret: str = GOOD_SECRET) -> DaemonProcess:
        n = len(started)
        config_path = tmp_path / f"rotator-{n}.toml"
        config_path.write_text(config)
        env = rotator_env(
            moto_server.endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            ROTATOR_CONFIG=str(config_path),
            **{SECRET_ENV: secret},
        )
        port = free_port()
        log_path = tmp_path / f"daemon-{n}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rotator", "run", "--metrics-port", str(port)],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        daemon = DaemonProcess(proc, port, log_path)
        started.append(daemon)
        daemon.wait_until("the health server", lambda: daemon.get("/healthz").ok)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def stub() -> Iterator[KeycloakStub]:
    with KeycloakStub() as kc:
        yield kc


# ------------------------------------------------------------------------------------------
# a healthy daemon
# ------------------------------------------------------------------------------------------


def test_metrics_health_and_readiness_of_a_healthy_daemon(
    aws: Any, stub: KeycloakStub, start_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    token_file = tmp_path / "token.json"
    began = time.time()
    daemon = start_daemon(
        toml_config(
            token_url=stub.token_url,
            verify_url=stub.verify_url,
            targets=[
                {"type": "file", "path": str(token_file)},
                {"type": "secretsmanager", "secret_id": SECRET_ID, "create": True},
            ],
        )
    )
    daemon.wait_until("readiness", lambda: daemon.get("/readyz").status_code == 200)

    # What the stores hold is what the metrics say.
    published = FileStore(token_file).get().token
    assert published is not None
    current = aws.secretsmanager.get_secret_value(SecretId=SECRET_ID, VersionStage="AWSCURRENT")
    assert decode_document(current["SecretString"]) == published
    assert stub.is_active(published.access_token)

    m = daemon.metrics()
    now = time.time()
    cred = {"credential": CREDENTIAL}
    expiry = sample(m, "rotator_token_expiry_timestamp_seconds", **cred)
    assert expiry is not None
    # The document holds whole seconds (truncated); the gauge the in-memory instant.
    assert 0 <= expiry - published.expires_at.timestamp() < 1
    assert expiry > now + 250
    next_rotation = sample(m, "rotator_next_rotation_timestamp_seconds", **cred)
    assert next_rotation is not None
    # The daemon fetched this token at its start (a cold start): its first refresh is
    # spread over the second half of the planned 75 % of a 300 s lifetime.
    assert published.issued_at.timestamp() + 0.375 * 300 - 1 <= next_rotation
    assert next_rotation <= published.issued_at.timestamp() + 0.75 * 300 + 1
    assert now < next_rotation < expiry
    last_success = sample(m, "rotator_last_success_timestamp_seconds", **cred)
    assert last_success is not None
    assert began <= last_success <= now
    assert sample(m, "rotator_credential_healthy", **cred) == 1
    assert sample(m, "rotator_rotations_total", result="rotated", **cred) == 1
    assert (
        sample(m, "rotator_rotations_total", result="error", **cred) == 0
    )  # pre-created: visible to rate() from the start
    assert (
        sample(
            m,
            "rotator_token_requests_total",
            grant="client_credentials",
            outcome="ok",
            **cred,
        )
        == 1
        == stub.count(grant_type="client_credentials", outcome="ok")
    )
    for target in (f"file:{token_file}", f"secretsmanager:{SECRET_ID}"):
        assert sample(m, "rotator_publishes_total", target=target, outcome="ok", **cred) == 1
    assert sample(m, "rotator_secretsmanager_write_interval_seconds", **cred) == 0.75 * 300
    # No retry happened: the series exists from the start and says 0.
    assert sample(m, "rotator_retries_total", **cred) == 0

    response = daemon.get("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain")
    assert published.access_token not in response.text

    health = daemon.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["credentials"][CREDENTIAL]["consecutive_failures"] == 0
    ready = daemon.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["credentials"][CREDENTIAL]["ready"] is True
    assert 250 < body["credentials"][CREDENTIAL]["seconds_left"] <= 300
    assert daemon.get("/nope").status_code == 404

    assert daemon.terminate() == 0
    log = daemon.log()
    assert "daemon stopped" in log
    assert published.access_token not in log
    assert GOOD_SECRET not in log


def test_retries_series_exists_before_the_first_retry(
    stub: KeycloakStub, start_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    daemon = start_daemon(
        toml_config(
            token_url=stub.token_url,
            targets=[{"type": "file", "path": str(tmp_path / "token.json")}],
        )
    )
    daemon.wait_until("readiness", lambda: daemon.get("/readyz").status_code == 200)
    m = daemon.metrics()
    assert daemon.terminate() == 0
    assert sample(m, "rotator_retries_total", credential=CREDENTIAL) == 0


# ------------------------------------------------------------------------------------------
# a daemon that never gets a token
# ------------------------------------------------------------------------------------------


def test_never_ready_when_the_token_endpoint_rejects_the_client(
    stub: KeycloakStub, start_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    token_file = tmp_path / "token.json"
    daemon = start_daemon(
        toml_config(
            token_url=stub.token_url,
            targets=[{"type": "file", "path": str(token_file)}],
            refresh={"max_retry_wait_seconds": 1},
        ),
        secret=WRONG_SECRET,
    )
    rejected = {
        "credential": CREDENTIAL,
        "grant": "client_credentials",
        "outcome": "unauthorized_client",
    }
    seen_ready: list[int] = []

    def two_failed_attempts() -> bool:
        seen_ready.append(daemon.get("/readyz").status_code)
        value = sample(daemon.metrics(), "rotator_token_requests_total", **rejected)
        return value is not None and value >= 2

    daemon.wait_until("two rejected token requests", two_failed_attempts)
    assert set(seen_ready) == {503}

    ready = daemon.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready"
    assert ready.json()["credentials"][CREDENTIAL] == {
        "ready": False,
        "seconds_left": None,
        "targets_behind": [],
    }
    health = daemon.get("/healthz")
    assert health.status_code == 200  # alive: the scheduler keeps trying
    state = health.json()["credentials"][CREDENTIAL]
    assert state["consecutive_failures"] >= 2
    assert state["state"] == "failing" and "last_error" not in state  # details: the log
    assert "Invalid client or Invalid client credentials" in daemon.log()

    m = daemon.metrics()
    cred = {"credential": CREDENTIAL}
    requests_seen = sample(m, "rotator_token_requests_total", **rejected)
    errors = sample(m, "rotator_rotations_total", result="error", **cred)
    retries = sample(m, "rotator_retries_total", **cred)
    assert requests_seen is not None
    assert errors is not None
    assert retries is not None
    assert requests_seen >= 2
    assert errors >= 2
    assert retries >= 2
    assert abs(errors - retries) <= 1  # read while a step may be finishing
    assert sample(m, "rotator_credential_healthy", **cred) == 0
    assert sample(m, "rotator_token_expiry_timestamp_seconds", **cred) is None
    assert sample(m, "rotator_last_success_timestamp_seconds", **cred) is None
    assert sample(m, "rotator_rotations_total", result="rotated", **cred) is None
    assert not token_file.exists()

    assert daemon.terminate() == 0
    for text in (daemon.log(), json.dumps(health.json()), json.dumps(ready.json())):
        assert WRONG_SECRET not in text


def test_not_ready_while_the_published_token_has_less_than_the_margin_left(
    start_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    token_file = tmp_path / "token.json"
    # A 20 s token against the 30 s readiness margin: published, never enough margin.
    with KeycloakStub(access_token_lifespan=20) as short:
        daemon = start_daemon(
            toml_config(
                token_url=short.token_url,
                targets=[{"type": "file", "path": str(token_file)}],
            )
        )
        daemon.wait_until(
            "a published token", lambda: FileStore(token_file).get().token is not None
        )
        rotated = {"credential": CREDENTIAL, "result": "rotated"}
        daemon.wait_until(
            "the rotation to be counted",
            lambda: sample(daemon.metrics(), "rotator_rotations_total", **rotated) == 1,
        )
        ready = daemon.get("/readyz")
        assert ready.status_code == 503
        state = ready.json()["credentials"][CREDENTIAL]
        assert state["ready"] is False
        assert 0 < state["seconds_left"] <= 20
        assert daemon.get("/healthz").status_code == 200
        assert daemon.terminate() == 0


# ------------------------------------------------------------------------------------------
# probes while a rotation is stuck
# ------------------------------------------------------------------------------------------


def test_probes_answer_at_once_while_a_rotation_is_stuck(
    stub: KeycloakStub, start_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    token_file = tmp_path / "token.json"
    with FaultProxy(stub.base_url) as proxy:
        proxy.stall(times=None, path_prefix=stub.token_path)
        daemon = start_daemon(
            toml_config(
                token_url=proxy.url + stub.token_path,
                targets=[{"type": "file", "path": str(token_file)}],
                # a stall far longer than the test: every probe below is answered inside it
                refresh={"read_timeout_seconds": 600, "max_retry_wait_seconds": 1},
            )
        )
        daemon.wait_until(
            "the stuck token request", lambda: proxy.count(path_prefix=stub.token_path) >= 1
        )
        assert stub.count() == 0

        for _ in range(5):
            for path, status in (("/healthz", 200), ("/readyz", 503), ("/metrics", 200)):
                assert daemon.get(path).status_code == status, path
        # order, not speed: all fifteen answers came while the token request was still stuck
        [stuck] = proxy.requests()
        assert (stuck.fault, stuck.status) == ("stall", None)
        health = daemon.get("/healthz").json()["credentials"][CREDENTIAL]
        assert health["consecutive_failures"] == 0  # stuck, not failed
        assert proxy.count(path_prefix=stub.token_path) == 1
        assert stub.count() == 0

        # Release the stall: the stuck request fails, the next attempt gets a token.
        proxy.clear()
        daemon.wait_until("readiness", lambda: daemon.get("/readyz").status_code == 200)
        published = FileStore(token_file).get().token
        assert published is not None
        assert stub.is_active(published.access_token)
        m = daemon.metrics()
        cred = {"credential": CREDENTIAL}
        assert sample(m, "rotator_retries_total", **cred) == 1
        assert sample(m, "rotator_rotations_total", result="error", **cred) == 1
        assert sample(m, "rotator_rotations_total", result="rotated", **cred) == 1
        ok = {"grant": "client_credentials", "outcome": "ok", **cred}
        assert sample(m, "rotator_token_requests_total", **ok) == 1
        failed = sum(
            value
            for (name, labels), value in m.items()
            if name == "rotator_token_requests_total"
            and ("outcome", "ok") not in labels
            and ("credential", CREDENTIAL) in labels
        )
        assert failed == 1
        assert daemon.terminate() == 0


# ------------------------------------------------------------------------------------------
# the Metrics observer on its own
# ------------------------------------------------------------------------------------------

EXPECTED_FAMILIES = {
    "rotator_token_expiry_timestamp_seconds": ("gauge", {"credential"}),
    "rotator_next_rotation_timestamp_seconds": ("gauge", {"credential"}),
    "rotator_last_success_timestamp_seconds": ("gauge", {"credential"}),
    "rotator_credential_healthy": ("gauge", {"credential"}),
    "rotator_secretsmanager_write_interval_seconds": ("gauge", {"credential"}),
    "rotator_rotations_total": ("counter", {"credential", "result"}),
    "rotator_token_requests_total": ("counter", {"credential", "grant", "outcome"}),
    "rotator_publishes_total": ("counter", {"credential", "target", "outcome"}),
    "rotator_retries_total": ("counter", {"credential"}),
    "rotator_probes_total": ("counter", {"credential", "outcome"}),
    "rotator_revocations_total": ("counter", {"credential"}),
    "rotator_config_reloads_total": ("counter", {"result"}),
}


def test_metrics_observer_exposition_follows_prometheus_conventions() -> None:
    metrics = Metrics()
    issued = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)
    token = Token("access-token-MARKER", "Bearer", issued, issued + timedelta(seconds=300))
    metrics.token_request("oms", "refresh_token", "invalid_grant")
    metrics.token_request("oms", "client_credentials", "ok")
    metrics.publish("oms", "ssm:/oms/token", "ok")
    metrics.publish("oms", "secretsmanager:oms/token", "kept_newer")
    metrics.published("oms", token)
    metrics.scheduled("oms", issued + timedelta(seconds=225))
    before = time.time()
    metrics.rotation("oms", "rotated")
    metrics.retry("billing", RuntimeError("boom"))
    metrics.rotation("billing", "error")
    metrics.secretsmanager_interval("oms", 225.0)

    text = metrics.exposition().decode()
    assert "MARKER" not in text
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    helps = dict(re.findall(r"^# HELP (\S+) (.+)$", text, re.MULTILINE))
    samples = parse_metrics(text)
    # prometheus_client adds a <name>_created gauge per counter: a client-library artefact.
    ours = {name for name in types if not name.endswith("_created")}
    assert ours == set(EXPECTED_FAMILIES)
    for name, (kind, labels) in EXPECTED_FAMILIES.items():
        assert types[name] == kind, name
        assert helps[name].strip(), name
        assert re.fullmatch(r"rotator_[a-z][a-z0-9_]*", name), name
        if kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        if "timestamp" in name or "interval" in name:
            assert name.endswith("_seconds"), name
        for sample_name, sample_labels in samples:
            if sample_name == name:
                assert {k for k, _ in sample_labels} == labels, name

    oms = {"credential": "oms"}
    assert sample(samples, "rotator_token_expiry_timestamp_seconds", **oms) == (
        token.expires_at.timestamp()
    )
    assert sample(samples, "rotator_next_rotation_timestamp_seconds", **oms) == (
        issued.timestamp() + 225
    )
    last = sample(samples, "rotator_last_success_timestamp_seconds", **oms)
    assert last is not None
    assert before <= last <= time.time()
    assert sample(samples, "rotator_credential_healthy", **oms) == 1
    assert sample(samples, "rotator_credential_healthy", credential="billing") == 0
    assert sample(samples, "rotator_last_success_timestamp_seconds", credential="billing") is None
    assert sample(samples, "rotator_rotations_total", result="rotated", **oms) == 1
    assert sample(samples, "rotator_rotations_total", result="error", credential="billing") == 1
    assert sample(samples, "rotator_retries_total", credential="billing") == 1
    assert (
        sample(
            samples,
            "rotator_token_requests_total",
            grant="refresh_token",
            outcome="invalid_grant",
            **oms,
        )
        == 1
    )
    assert (
        sample(
            samples,
            "rotator_publishes_total",
            target="secretsmanager:oms/token",
            outcome="kept_newer",
            **oms,
        )
        == 1
    )
    assert sample(samples, "rotator_secretsmanager_write_interval_seconds", **oms) == 225.0

    # A second Metrics has its own registry: two daemons in one process do not collide.
    assert "rotator_rotations_total{" not in Metrics().exposition().decode()
