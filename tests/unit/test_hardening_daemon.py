"""Issue 8 in the daemon and the CLI: stuck jobs are visible (point 4), debug shows
the scrubbed chain of causes (point 10), each credential's own back-off and AWS
timeouts apply (design point), and a cron interval that lets the token lapse is
named (design point)."""

from __future__ import annotations

import io
import logging
from datetime import timedelta

import pytest

from rotator import logs
from rotator.app import AwsClients, build, job_deadline
from rotator.config import from_mapping
from rotator.errors import TokenEndpointUnavailable
from rotator.retry import Backoff
from rotator.rotation import CredentialRotator, NullObserver, Schedule, missed_run_advice
from rotator.scheduler import STUCK_MARGIN, Daemon
from rotator.secret import register
from rotator.stores.memory import MemoryStore
from tests.fakes import FakeClock, FakeFetcher, FakeScheduler, make_token


def two_credentials(**refresh: float) -> dict[str, object]:
    def cred(name: str, extra: dict[str, float]) -> dict[str, object]:
        return {
            "name": name,
            "token_url": "https://sso.example.com/token",
            "client_id": name,
            "client_secret_env": "X",
            "refresh": extra,
            "targets": [{"type": "ssm", "parameter": f"/{name}/token"}],
        }

    return {"credentials": [cred("first", {}), cred("second", dict(refresh))]}


# ---------------------------------------------------------------- point 4: stuck jobs


def daemon_with(clock: FakeClock, names: list[str], **kw: object) -> Daemon:
    rotators = [
        CredentialRotator(n, fetcher=FakeFetcher(clock), stores=[MemoryStore(n)], clock=clock)
        for n in names
    ]
    daemon = Daemon(
        rotators,
        clock=clock,
        observer=NullObserver(),
        scheduler_now=clock.now,
        **kw,  # type: ignore[arg-type]
    )
    daemon._scheduler = FakeScheduler()
    return daemon


def test_a_job_running_past_its_deadline_is_stuck(clock: FakeClock) -> None:
    deadline = timedelta(seconds=100)
    daemon = daemon_with(
        clock,
        ["oms"],
        backoff=Backoff(),
        job_deadlines={"oms": deadline},
    )
    daemon.states["oms"].running_since = clock.now()
    clock.advance((deadline + STUCK_MARGIN).total_seconds())
    assert daemon.stuck() == []
    clock.advance(1)
    assert daemon.stuck() == ["oms"]
    daemon.states["oms"].running_since = None
    assert daemon.stuck() == []


def test_job_deadline_covers_every_call_of_a_step() -> None:
    settings = from_mapping(two_credentials(request_deadline_seconds=10))
    second = settings.credentials[1]
    # 4 token/verify exchanges of 10 s, 3 AWS calls (read, write, secret) of 5 + 10 s
    assert job_deadline(second) == timedelta(seconds=4 * 10 + 3 * 15)


# ---------------------------------------------------------------- per-credential settings


def test_each_credential_backs_off_by_its_own_policy(clock: FakeClock) -> None:
    settings = from_mapping(two_credentials(max_retry_wait_seconds=2))
    app = build(settings, clock=clock, env={})
    daemon = daemon_with(
        clock,
        ["first", "second"],
        backoff={c.name: app.backoff(c) for c in settings.credentials},
    )
    for rot in daemon.rotators:
        rot._fetcher.script.extend([TokenEndpointUnavailable("down")] * 6)  # type: ignore[attr-defined]
        for _ in range(6):
            daemon._run(rot)
    waits = {
        name: (state.next_run_at - clock.now()).total_seconds()  # type: ignore[operator]
        for name, state in daemon.states.items()
    }
    assert waits["second"] <= 2.0
    assert waits["first"] > 2.0


def test_each_credential_gets_aws_clients_with_its_own_timeouts() -> None:
    settings = from_mapping(two_credentials(connect_timeout_seconds=1, read_timeout_seconds=2))
    app = build(settings, clock=FakeClock(), env={}, aws=AwsClients())
    built: list[tuple[float, float]] = []
    app.aws._build = lambda service, region, timeouts: built.append(timeouts) or object()  # type: ignore[method-assign]
    for cred in settings.credentials:
        app.stores(cred)
    assert built == [(5.0, 10.0), (1.0, 2.0)]


# ---------------------------------------------------------------- point 10: debug chains


def test_debug_shows_the_scrubbed_chain_of_causes() -> None:
    secret = "client-secret-MARKER-chain"
    register(secret)
    stream = io.StringIO()
    logs.setup("debug", "text", stream=stream)
    try:
        try:
            raise ValueError(f"bad value {secret}")
        except ValueError as inner:
            raise KeyError("missing-key") from inner
    except KeyError as exc:
        logging.getLogger("rotator").debug("internal error detail", exc_info=exc)
    out = stream.getvalue()
    assert "KeyError: 'missing-key'" in out
    assert "caused by ValueError: bad value" in out
    assert secret not in out
    assert "Traceback" not in out and out.count("\n") == 1


def test_above_debug_only_the_class_name() -> None:
    stream = io.StringIO()
    logs.setup("info", "text", stream=stream)
    try:
        raise KeyError("detail-MARKER")
    except KeyError as exc:
        logging.getLogger("rotator").error("failed", exc_info=exc)
    assert "failed: KeyError" in stream.getvalue()
    assert "detail-MARKER" not in stream.getvalue()


# ---------------------------------------------------------------- once --interval


def test_interval_that_lets_the_token_lapse_is_named(clock: FakeClock) -> None:
    schedule = Schedule()  # 30 s safety margin
    lifetime = make_token(clock.now(), 300).lifetime
    advice = missed_run_advice(schedule, lifetime, timedelta(seconds=300))
    assert advice is not None
    assert "lapse between runs" in advice
    assert "--interval 135" in advice  # (300 s lifetime - 30 s margin) / 2
    missed = missed_run_advice(schedule, lifetime, timedelta(seconds=200))
    assert missed is not None and "lapse" not in missed  # survives no miss, but no lapse
    assert missed_run_advice(schedule, lifetime, timedelta(seconds=135)) is None
    assert missed_run_advice(schedule, lifetime, timedelta(0)) is None


@pytest.mark.parametrize("interval", [270.0, 3600.0])
def test_interval_at_or_beyond_lifetime_minus_margin_warns(
    clock: FakeClock, interval: float
) -> None:
    lifetime = make_token(clock.now(), 300).lifetime
    advice = missed_run_advice(Schedule(), lifetime, timedelta(seconds=interval))
    assert advice is not None and "lapse between runs" in advice
