"""The daemon's /metrics, /healthz and /readyz, end to end, for a healthy daemon:
``python -m rotator run --metrics-port PORT`` as a subprocess (``start_daemon``, from
``tests/integration/conftest.py``) against the KeycloakStub (and a moto server for a
Secrets Manager target), everything on 127.0.0.1. Plus the Metrics observer's exposition.
Daemons that are not ready: ``test_health_readiness.py``.

The daemon is configured by a TOML file named in ROTATOR_CONFIG: only the file can set
``metrics_host`` (127.0.0.1 here; the ROTATOR_* variables alone would bind 0.0.0.0).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.health import Metrics
from rotator.stores import FileStore
from rotator.testing import KeycloakStub
from rotator.token import Token, decode_document
from tests.harness.health import (
    CREDENTIAL,
    GOOD_SECRET,
    SECRET_ID,
    metrics,
    parse_metrics,
    sample,
    toml_config,
)
from tests.harness.process import Daemon

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------------------------------
# a healthy daemon
# ------------------------------------------------------------------------------------------


def test_metrics_health_and_readiness_of_a_healthy_daemon(
    aws: Any, stub: KeycloakStub, start_daemon: Callable[..., Daemon], tmp_path: Path
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
    daemon.wait_for("readiness", lambda: daemon.get("/readyz").status_code == 200)

    # What the stores hold is what the metrics say.
    published = FileStore(token_file).get().token
    assert published is not None
    current = aws.secretsmanager.get_secret_value(SecretId=SECRET_ID, VersionStage="AWSCURRENT")
    assert decode_document(current["SecretString"]) == published
    assert stub.is_active(published.access_token)

    m = metrics(daemon)
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
    log = daemon.stderr
    assert "daemon stopped" in log
    assert published.access_token not in log
    assert GOOD_SECRET not in log


def test_retries_series_exists_before_the_first_retry(
    stub: KeycloakStub, start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    daemon = start_daemon(
        toml_config(
            token_url=stub.token_url,
            targets=[{"type": "file", "path": str(tmp_path / "token.json")}],
        )
    )
    daemon.wait_for("readiness", lambda: daemon.get("/readyz").status_code == 200)
    m = metrics(daemon)
    assert daemon.terminate() == 0
    assert sample(m, "rotator_retries_total", credential=CREDENTIAL) == 0


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
