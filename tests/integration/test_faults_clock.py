"""The clock: expiry measured from when the request was sent, and a wall clock that
jumps while the daemon runs (in-process, on an injected clock)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.app import build
from rotator.clock import SystemClock
from rotator.config import from_mapping as config_from_mapping
from rotator.rotation import NullObserver
from rotator.scheduler import Daemon
from tests.fixtures.faults import rotator_env
from tests.harness.config import (
    credential,
    file_target,
    write_config,
)
from tests.harness.factories import ProxyFactory, StubFactory
from tests.harness.history import (
    HistoryWatcher,
    file_reader,
    jwt_exp,
    parse_time,
    stub_active_at,
    token_of,
)
from tests.harness.process import run_once, wait_until
from tests.harness.schedule import (
    ROUNDING,
)

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------- 9. clock

ROTATIONS_AFTER_JUMP = 3


def test_expiry_is_measured_from_when_the_request_was_sent(
    tmp_path: Path, make_stub: StubFactory, make_proxy: ProxyFactory
) -> None:
    """A token endpoint that takes 2 s to answer: the published expires_at counts the
    lifetime from when the request left, never from when the answer came."""
    lifetime, latency = 6, 2.0
    kc = make_stub(access_token_lifespan=lifetime)
    proxy = make_proxy(kc.base_url)
    proxy.add_latency(latency, times=1)
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", proxy.url + kc.token_path, [file_target(path)])],
    )
    result = run_once(config, rotator_env())
    assert result.returncode == 0, result.stderr
    [sent] = proxy.requests()
    [arrived] = kc.requests()
    assert arrived.time - sent.time >= latency
    doc = json.loads(path.read_text())
    assert parse_time(doc["issued_at"]) <= sent.time
    assert parse_time(doc["expires_at"]) <= sent.time + lifetime
    # measured from the answer it would have been about `latency` later
    assert parse_time(doc["expires_at"]) <= jwt_exp(doc["access_token"]) - latency + 0.01


class JumpingClock:
    """The system clock shifted by ``offset`` seconds; waits are real."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def wait(self, seconds: float, event: threading.Event | None = None) -> bool:
        return SystemClock().wait(seconds, event)


class CountingObserver(NullObserver):
    def __init__(self) -> None:
        self.steps: list[tuple[float, str]] = []

    def rotation(self, credential: str, result: str) -> None:
        self.steps.append((time.time(), result))


def _shifted_datetime(clock: JumpingClock) -> type[datetime]:
    class Shifted(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.now(tz) + timedelta(seconds=clock.offset)

    return Shifted


@pytest.mark.parametrize(
    ("jump", "whole_process"),
    [
        pytest.param(3600.0, True, id="forward"),
        pytest.param(
            -3600.0,
            True,
            id="backward",
        ),
        pytest.param(
            3600.0,
            False,
            id="forward-injected-clock-only",
        ),
        pytest.param(
            -3600.0,
            False,
            id="backward-injected-clock-only",
        ),
    ],
)
def test_wall_clock_jump_neither_storms_nor_misses(
    jump: float,
    whole_process: bool,
    tmp_path: Path,
    make_stub: StubFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In-process daemon on an injected clock that jumps by an hour between two
    rotations. ``whole_process``: APScheduler's own wall clock jumps with it, as a real
    step of the system clock would; otherwise only the injected clock does."""
    lifetime = 2.0
    kc = make_stub(access_token_lifespan=lifetime)  # the server keeps the true time
    path = tmp_path / "token.json"
    settings = config_from_mapping(
        {"credentials": [credential("oms", kc.token_url, [file_target(path)])]}
    )
    clock = JumpingClock()
    scheduler_now = None
    if whole_process:
        shifted = _shifted_datetime(clock)
        monkeypatch.setattr("apscheduler.schedulers.base.datetime", shifted)
        monkeypatch.setattr("apscheduler.executors.base.datetime", shifted)
        scheduler_now = lambda: shifted.now(UTC)  # noqa: E731 - one system clock for all
    observer = CountingObserver()
    app = build(settings, clock=clock, observer=observer, env=rotator_env())
    daemon = Daemon(
        [app.rotator(settings.credentials[0])],
        clock=clock,
        backoff=app.backoff(),
        observer=observer,
        stop_event=app.stop_event,
        **({"scheduler_now": scheduler_now} if scheduler_now else {}),
    )
    with HistoryWatcher({"file": file_reader(path)}) as watcher:
        runner = threading.Thread(target=daemon.run_until_stopped, kwargs={"poll": 0.2})
        runner.start()  # run_until_stopped also runs the monotonic watchdog
        try:
            wait_until(lambda: kc.count() >= 2, 60, "two rotations")
            time.sleep(0.2)  # between two rotations
            jumped_at = time.time()
            clock.offset = jump
            # none missed: rotations go on after the jump (counted, however slow the machine)
            wait_until(
                lambda: sum(r.time > jumped_at for r in kc.requests()) >= ROTATIONS_AFTER_JUMP,
                60,
                f"{ROTATIONS_AFTER_JUMP} rotations after the jump",
            )
        finally:
            daemon.shutdown()
            runner.join(timeout=10)
    after = [r.time for r in kc.requests() if r.time > jumped_at]
    steps = [t for t, _ in observer.steps if t > jumped_at]
    assert len(after) >= ROTATIONS_AFTER_JUMP
    assert len(after) <= len(steps)
    # no storm: steps come with fetches, not in a loop of their own, and no two token
    # requests closer than 70 % of a lifetime planned from whole seconds (0.4 s for 2 s)
    assert len(steps) <= 2 * len(after) + 2, (len(steps), len(after))
    for prev, nxt in itertools.pairwise(after):
        assert nxt - prev >= 0.7 * lifetime - 1.0 - ROUNDING, (prev, nxt)
    # and always an active token
    for obs in watcher.snapshot("file"):
        if obs.value is not None:
            token = token_of(obs.value)
            assert token in kc.issued_tokens()
            assert stub_active_at(token, obs.ended), f"expired token at {obs.ended}"
