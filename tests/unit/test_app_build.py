"""The composition root builds every part (issue 11, part 3): stores, schedule and
retry policy per credential, the daemon and its health server, the metrics observer."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from rotator.app import build, job_deadline, probe_interval
from rotator.config import Settings, from_mapping
from rotator.health import HealthServer, Metrics
from rotator.rotation import NullObserver, Schedule
from rotator.stores.file import FileStore
from tests.fakes import FakeClock, make_token


def settings(tmp_path: Path, *, sm: bool = False, **top: Any) -> Settings:
    """Two credentials with file targets (with a Secrets Manager one if `sm`: never
    built here, a boto3 client would look for credentials over the network)."""

    def cred(name: str, **refresh: float) -> dict[str, Any]:
        second = {"type": "file", "path": str(tmp_path / f"{name}.2.json")}
        if sm:
            second = {"type": "secretsmanager", "secret_id": f"{name}/token"}
        return {
            "name": name,
            "token_url": "https://sso.example.com/token",
            "client_id": name,
            "client_secret_env": "OMS_SECRET",
            "refresh": refresh,
            "targets": [
                {"type": "file", "path": str(tmp_path / f"{name}.json")},
                second,
            ],
        }

    fast = cred("fast", ratio=0.5, jitter_ratio=0.1, safety_margin_seconds=10)
    slow = cred("slow", max_retry_wait_seconds=5, request_deadline_seconds=12)
    return from_mapping({"credentials": [fast, slow], **top})


def test_schedule_and_retry_policy_per_credential(tmp_path: Path) -> None:
    app = build(settings(tmp_path), clock=FakeClock(), env={})
    fast, slow = app.settings.credentials
    assert app.schedule(fast) == Schedule(0.5, 0.1, timedelta(seconds=10))
    assert app.schedule(slow) == Schedule()
    assert app.rotator(fast).schedule == app.schedule(fast)
    assert (app.backoff(fast).cap, app.backoff(slow).cap) == (30.0, 5.0)


def test_stores_are_built_by_the_app(tmp_path: Path) -> None:
    app = build(settings(tmp_path), clock=FakeClock(), env={})
    fast = app.settings.credentials[0]
    store = app.store(fast.targets[0], fast)
    assert isinstance(store, FileStore)
    assert [s.name for s in app.stores(fast)] == [store.name, f"file:{tmp_path}/fast.2.json"]


def test_the_daemon_gets_each_credentials_policies(tmp_path: Path) -> None:
    app = build(settings(tmp_path, max_workers=3), clock=FakeClock(), env={})
    rotators = [app.rotator(c) for c in app.settings.credentials]
    daemon = app.daemon(rotators)
    assert daemon.rotators == rotators
    assert daemon.stop_event is app.stop_event
    assert daemon._max_workers == 3
    slow = app.settings.credentials[1]
    assert daemon._backoffs["slow"].cap == 5.0
    assert daemon._job_deadlines["slow"] == job_deadline(slow)
    assert daemon._probe_intervals["slow"] == probe_interval(slow) == timedelta(0)


def test_metrics_observer_and_health_server_only_for_a_daemon_with_a_port(
    tmp_path: Path,
) -> None:
    plain = settings(tmp_path)
    with_port = settings(tmp_path, metrics_port=0, metrics_address="127.0.0.1")
    assert isinstance(build(with_port, env={}).observer, NullObserver)  # once, check...
    assert isinstance(build(plain, env={}, daemon=True).observer, NullObserver)
    assert isinstance(build(with_port, env={}, daemon=True).observer, Metrics)
    flagged = build(plain, env={}, daemon=True, metrics_port=0)
    assert isinstance(flagged.observer, Metrics)
    assert flagged.serving_port == 0

    app = build(plain, clock=FakeClock(), env={}, daemon=True)
    assert app.health_server(app.daemon([])) is None
    app = build(with_port, clock=FakeClock(), env={}, daemon=True)
    server = app.health_server(app.daemon([]))
    assert isinstance(server, HealthServer)
    server.start()
    try:
        assert server.port > 0
    finally:
        server.stop()


def test_write_rate_advice_feeds_the_gauge_for_a_running_credential(tmp_path: Path) -> None:
    metrics = Metrics()
    clock = FakeClock()
    app = build(settings(tmp_path, sm=True), clock=clock, env={}, observer=metrics)
    token = make_token(clock.now(), 300)
    advice = app.advise("fast", token)
    assert advice is not None and "credential=fast" in advice and "every ~150 s" in advice
    assert metrics.sm_interval.labels("fast")._value.get() == 150.0
    assert app.advise("removed-by-a-reload", token) is None


def test_a_reload_restarts_chains_with_their_credentials_policies(tmp_path: Path) -> None:
    app = build(settings(tmp_path), clock=FakeClock(), env={})
    fast, slow = app.settings.credentials
    daemon = app.daemon([app.rotator(fast)])
    changed = from_mapping(
        {
            "credentials": [
                {
                    "name": "slow",
                    "token_url": "https://sso.example.com/token",
                    "client_id": "slow",
                    "client_secret_env": "OMS_SECRET",
                    "refresh": {"max_retry_wait_seconds": 7},
                    "targets": [{"type": "file", "path": str(tmp_path / "slow.json")}],
                }
            ]
        }
    ).credentials[0]
    rotator = app.rotator(changed)
    app.restart_chains(daemon, [changed], [rotator], ["fast"])
    assert [r.name for r in daemon.rotators] == ["slow"]
    assert daemon._backoffs == {"slow": app.backoff(changed)}
    assert daemon._backoffs["slow"].cap == 7.0
    assert daemon._job_deadlines == {"slow": job_deadline(changed)}
    assert slow.refresh != changed.refresh
