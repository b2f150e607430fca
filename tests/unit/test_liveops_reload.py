"""Reload diffing and its application to a running daemon, and the probe settings."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator import config
from rotator.app import build
from rotator.config import Settings
from rotator.errors import ConfigError
from rotator.health import Metrics
from rotator.reload import FileWatch, Reloader, plan
from rotator.retry import Backoff
from rotator.scheduler import Daemon
from rotator.stores.file import FileStore
from tests.fakes import FakeClock, FakeSession, make_token
from tests.unit.liveops_fakes import JobScheduler


def _cred(name: str, folder: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "token_url": "http://127.0.0.1:9/realms/r/protocol/openid-connect/token",
        "client_id": "oms-client",
        "client_secret_env": "OMS_SECRET",
        "targets": [{"type": "file", "path": str(folder / f"{name}.json")}],
        **extra,
    }


def _settings(folder: Path, *creds: dict[str, Any]) -> Settings:
    return config.from_mapping({"credentials": list(creds)}, source="test.toml")


# ---------------------------------------------------------------- plan


def test_plan_names_added_removed_and_changed(tmp_path: Path) -> None:
    old = _settings(tmp_path, _cred("a", tmp_path), _cred("b", tmp_path), _cred("c", tmp_path))
    new = _settings(
        tmp_path,
        _cred("a", tmp_path),
        _cred("b", tmp_path, auth_method="client_secret_basic"),
        _cred("d", tmp_path),
    )
    diff = plan(old, new)
    assert (diff.added, diff.removed, diff.changed) == (("d",), ("c",), ("b",))
    assert diff.needs_restart == () and not diff.is_empty
    assert diff.describe() == "added=d removed=c changed=b"


@pytest.mark.parametrize(
    "change",
    [
        {"client_secret_file": "/run/secret"},
        {"refresh": {"ratio": 0.5}},
        {"verify_url": "http://127.0.0.1:9/api"},
        {"probe_interval_seconds": 10, "verify_url": "http://127.0.0.1:9/api"},
    ],
)
def test_any_setting_of_a_credential_changes_it(tmp_path: Path, change: dict[str, Any]) -> None:
    base = _cred("a", tmp_path)
    changed = {**base, **change}
    if "client_secret_file" in change:
        del changed["client_secret_env"]
    diff = plan(_settings(tmp_path, base), _settings(tmp_path, changed))
    assert diff.changed == ("a",)


def test_same_configuration_is_an_empty_plan_and_process_keys_need_a_restart(
    tmp_path: Path,
) -> None:
    old = _settings(tmp_path, _cred("a", tmp_path))
    assert plan(old, _settings(tmp_path, _cred("a", tmp_path))).is_empty
    diff = plan(old, replace(old, metrics_port=9102, max_workers=4))
    assert diff.is_empty and diff.needs_restart == ("metrics_port", "max_workers")


def test_file_watch_sees_content_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text("a")
    watch = FileWatch(path)
    assert not watch.changed()
    path.write_text("a")  # rewritten, same content
    assert not watch.changed()
    path.unlink()  # a ConfigMap update swaps files: missing for a moment
    assert not watch.changed()
    path.write_text("b")
    assert watch.changed() and not watch.changed()
    assert not FileWatch(None).changed()


def test_file_watch_reads_the_file_only_after_its_stat_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rotator.toml"
    path.write_text("a" * 100)
    now = [time.time() + 60]  # the file's last change is a minute old
    watch = FileWatch(path, clock=lambda: now[0])
    reads: list[Path] = []
    read_bytes = Path.read_bytes

    def counted(self: Path) -> bytes:
        reads.append(self)
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", counted)
    for _ in range(10):  # ten idle polls
        assert not watch.changed()
    assert reads == []
    path.write_text("b" * 101)
    assert watch.changed()
    assert len(reads) == 1
    now[0] = time.time()  # within the settle window of that change: read at every poll
    assert not watch.changed()
    assert not watch.changed()
    assert len(reads) == 3


# ---------------------------------------------------------------- the reloader


class Harness:
    def __init__(self, tmp_path: Path, clock: FakeClock, *creds: dict[str, Any]) -> None:
        self.folder = tmp_path
        self.session = FakeSession()  # scripted nothing: any token request fails the test
        self.metrics = Metrics()
        settings = _settings(tmp_path, *creds)
        names = {c["name"] for c in creds}
        self.app = build(
            settings,
            clock=clock,
            observer=self.metrics,
            session=self.session,
            env={"OMS_SECRET": "oms-secret"},
        )
        self.daemon = Daemon(
            [self.app.rotator(c) for c in settings.credentials],
            clock=clock,
            backoff={n: Backoff(initial=1.0, cap=30.0, jitter=0.0) for n in names},
            observer=self.metrics,
            scheduler_now=clock.now,
        )
        self.scheduler = JobScheduler()
        self.daemon._scheduler = self.scheduler
        self.daemon._started.set()
        for rot in self.daemon.rotators:
            self.daemon._schedule(rot, clock.now())
        self.next: Settings | Exception = settings
        self.reloader = Reloader(
            self.app, self.daemon, load=self.load, path=None, on_apply=self.on_apply
        )

    def load(self) -> Settings:
        if isinstance(self.next, Exception):
            raise self.next
        return self.next

    def on_apply(self, diff: Any) -> None:
        for name in diff.removed:
            self.metrics.forget(name)

    def names(self) -> list[str]:
        return [r.name for r in self.daemon.rotators]


def _publish_fresh(folder: Path, name: str, clock: FakeClock) -> str:
    token = make_token(clock.now(), access_token=f"access-token-MARKER-{name}")
    FileStore(folder / f"{name}.json").put(token)
    return token.access_token


def test_reload_adds_removes_and_restarts_changed_chains(tmp_path: Path, clock: FakeClock) -> None:
    h = Harness(tmp_path, clock, _cred("a", tmp_path), _cred("b", tmp_path))
    for name in ("a", "b", "c"):
        _publish_fresh(tmp_path, name, clock)
    h.metrics.published("b", make_token(clock.now()))
    old_a = h.daemon.rotators[0]
    h.next = _settings(tmp_path, _cred("a", tmp_path, scope="orders"), _cred("c", tmp_path))
    diff = h.reloader.reload("SIGHUP")
    assert diff is not None and (diff.added, diff.removed, diff.changed) == (("c",), ("b",), ("a",))
    assert sorted(h.names()) == ["a", "c"] and set(h.daemon.states) == {"a", "c"}
    assert h.app.settings is h.next
    # the removed and the replaced chains' jobs are gone; the new ones run now
    assert {j.id for j in h.scheduler.jobs if j.id in h.scheduler.removed} >= {"a#0", "b#1"}
    new_jobs = h.scheduler.pending()
    assert sorted(j.id.split("#")[0] for j in new_jobs) == ["a", "c"]
    assert all(j.run_date <= clock.now() + timedelta(seconds=1) for j in new_jobs)
    # a job of the replaced chain still running ends there
    h.daemon._run(old_a)
    assert len(h.scheduler.pending()) == 2
    # the new chains adopt what is published: no token request at all
    for job in new_jobs:
        h.scheduler.take(job)
    assert h.session.sent == []
    assert all(r.token is not None for r in h.daemon.rotators)
    text = h.metrics.exposition().decode()
    assert 'credential="b"' not in text and 'credential="c"' in text


def test_an_invalid_reload_changes_nothing(tmp_path: Path, clock: FakeClock) -> None:
    h = Harness(tmp_path, clock, _cred("a", tmp_path))
    before = (h.app.settings, list(h.daemon.rotators), list(h.scheduler.jobs))
    h.next = ConfigError("credentials[a].token_url must be a non-empty string: ''")
    assert h.reloader.reload("SIGHUP") is None
    assert (h.app.settings, h.daemon.rotators, h.scheduler.jobs) == before
    assert h.scheduler.removed == []
    text = h.metrics.exposition().decode()
    assert 'rotator_config_reloads_total{result="refused"} 1.0' in text


def test_a_credential_that_cannot_be_built_refuses_the_whole_reload(
    tmp_path: Path, clock: FakeClock
) -> None:
    h = Harness(tmp_path, clock, _cred("a", tmp_path))
    h.next = _settings(tmp_path, _cred("a", tmp_path, scope="x"), _cred("b", tmp_path))
    # the CA bundle named by the environment is gone: building a chain fails (exit 2)
    h.app.env = {"OMS_SECRET": "oms-secret", "REQUESTS_CA_BUNDLE": str(tmp_path / "gone.pem")}
    before = list(h.daemon.rotators)
    assert h.reloader.reload("SIGHUP") is None
    assert h.daemon.rotators == before and h.scheduler.removed == []
    assert h.app.settings.credentials[0].scope is None


class RecordingReloader(Reloader):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.calls: list[str] = []

    def reload(self, why: str) -> None:  # type: ignore[override]
        self.calls.append(why)


def test_sighup_and_file_changes_are_picked_up_on_the_poll(
    tmp_path: Path, clock: FakeClock
) -> None:
    h = Harness(tmp_path, clock, _cred("a", tmp_path))
    path = tmp_path / "rotator.toml"
    path.write_text("# v1\n")
    reloader = RecordingReloader(h.app, h.daemon, load=h.load, path=path)
    reloader.poll()
    reloader.requested.set()
    reloader.poll()
    reloader.poll()
    path.write_text("# v2\n")
    reloader.poll()
    reloader.poll()
    assert reloader.calls == ["SIGHUP", "config file changed"]


# ---------------------------------------------------------------- probe settings


def test_probe_settings_from_toml(tmp_path: Path) -> None:
    token_url = "https://kc.example/realms/r/protocol/openid-connect/token"
    plain = _settings(tmp_path, _cred("a", tmp_path)).credentials[0]
    assert plain.probe is None and plain.probe_url is None
    verify = _cred("a", tmp_path, verify_url="https://api.example/")
    cred = _settings(tmp_path, verify).credentials[0]
    assert (cred.probe, cred.probe_interval_seconds, cred.probe_url) == (
        "verify_url",
        60.0,
        "https://api.example/",
    )
    off = _settings(tmp_path, {**verify, "probe_interval_seconds": 0}).credentials[0]
    assert off.probe_url is None
    intro = _cred("a", tmp_path, token_url=token_url, probe="introspection")
    assert _settings(tmp_path, intro).credentials[0].probe_url == token_url + "/introspect"
    explicit = {**intro, "introspection_url": "https://kc.example/introspect"}
    assert _settings(tmp_path, explicit).credentials[0].probe_url == "https://kc.example/introspect"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"probe": "verify_url"}, 'probe = "verify_url" needs a verify_url'),
        ({"probe": "ping"}, "probe must be one of verify_url, introspection, off"),
        ({"probe_interval_seconds": -1}, "probe_interval_seconds must be a positive number"),
        ({"introspection_url": "https://kc.example/i"}, 'only to probe = "introspection"'),
    ],
)
def test_bad_probe_settings_name_the_key(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        _settings(tmp_path, _cred("a", tmp_path, **extra))


def test_probe_settings_from_the_environment() -> None:
    env = {
        "ROTATOR_TOKEN_URL": "https://kc.example/realms/r/protocol/openid-connect/token",
        "ROTATOR_CLIENT_ID": "oms-client",
        "ROTATOR_CLIENT_SECRET": "oms-secret",
        "ROTATOR_FILE_PATH": "/run/rotator/token.json",
        "ROTATOR_PROBE": "introspection",
        "ROTATOR_PROBE_INTERVAL_SECONDS": "15",
    }
    cred = config.from_env(env).credentials[0]
    assert cred.probe == "introspection" and cred.probe_interval_seconds == 15.0
    with pytest.raises(ConfigError, match="ROTATOR_PROBE_INTERVAL_SECONDS must be a number"):
        config.from_env({**env, "ROTATOR_PROBE_INTERVAL_SECONDS": "soon"})
    with pytest.raises(ConfigError, match="ROTATOR_PROBE=verify_url needs a verify_url"):
        config.from_env({**env, "ROTATOR_PROBE": "verify_url"})
    assert timedelta(seconds=cred.probe_interval_seconds) == timedelta(seconds=15)
