"""The daemon and ``once`` under token-endpoint faults, with the stores watched.

Down for longer than a lifetime, stalled, answering nonsense, or asking to slow down
(429 Retry-After): every test runs the real CLI as a subprocess against the
Keycloak-faithful stub (``FaultProxy`` in front where needed) while a
``HistoryWatcher`` reads every target and checks afterwards what a consumer could have
seen at each moment. Token lifetimes are seconds long, so the back-off cap (a quarter
of the lifetime at most) is about a second; waits are asserted as the daemon planned
them (``tests/harness/schedule.py``), never as wall-clock windows.
"""

from __future__ import annotations

import json
import math
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.aws import AwsEnv
from tests.fixtures.faults import rotator_env
from tests.harness.config import (
    credential,
    file_target,
    sm_target,
    ssm_target,
    write_config,
)
from tests.harness.factories import ProxyFactory, Spawn, StubFactory
from tests.harness.history import (
    HistoryWatcher,
    aws_readers,
    file_reader,
    stub_active_at,
    token_of,
)
from tests.harness.probes import health, metric, state_between_attempts
from tests.harness.process import assert_no_traceback, log_time, run_once, wait_until
from tests.harness.schedule import (
    RETRY_IN,
    ROUNDING,
    assert_never_early,
    assert_on_schedule,
    planned_waits,
)

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------- 1. endpoint down


def test_endpoint_down_longer_than_a_lifetime(
    tmp_path: Path, aws: AwsEnv, make_stub: StubFactory, make_proxy: ProxyFactory, spawn: Spawn
) -> None:
    """5xx, then connection refused, for longer than a token's lifetime: the daemon stays
    up, backs off at its cap (a quarter of the lifetime), says so in its log and health,
    keeps the last good token published and publishes a fresh one within one cap of
    recovery."""
    lifetime, cap = 4.0, 1.0  # cap: a quarter of the lifetime (max_retry_wait stays 30)
    kc = make_stub(access_token_lifespan=lifetime)
    proxy = make_proxy(kc.base_url)
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [
            credential(
                "oms",
                proxy.url + kc.token_path,
                [sm_target(), ssm_target(), file_target(path)],
            )
        ],
        metrics_host="127.0.0.1",
        readiness_margin_seconds=0.5,
    )
    with HistoryWatcher({**aws_readers(aws), "file": file_reader(path)}) as watcher:
        daemon = spawn(
            "run", "--config", config, "--metrics-port", "0", env=rotator_env(aws.endpoint)
        )
        port = daemon.metrics_port()
        for store in ("secretsmanager", "ssm", "file"):
            watcher.wait_for_token(store, timeout=10)
        good = token_of(watcher.current("file"))
        assert good is not None
        assert health(port, "/readyz")[0] == 200

        # -- the outage: 5xx first
        down_at = time.time()
        proxy.fail(503, times=None)
        wait_until(lambda: sum(r.fault == "fail" for r in proxy.requests()) >= 3, 60, "three 503s")
        # the last good token has expired by now or soon; then connection refused
        refused_at = time.time()
        proxy_port = proxy.port
        proxy.stop()
        daemon.wait_for(r"is unreachable", count=2, timeout=60)
        # an outage longer than a lifetime: the last good token has expired by the server's rule
        wait_until(lambda: not stub_active_at(good or "", time.time()), 60, "an outage > lifetime")
        assert daemon.proc.poll() is None, daemon.log()
        state = state_between_attempts(port, "oms")
        assert state["consecutive_failures"] >= 3
        assert state["state"] == "failing" and "last_error" not in state  # details: the log
        assert "unreachable" in daemon.log()
        status, ready = health(port, "/readyz")
        assert status == 503, ready
        assert metric(port, 'rotator_credential_healthy{credential="oms"}') == 0
        # the stores still hold the last good token
        for store in ("secretsmanager", "ssm", "file"):
            assert token_of(watcher.current(store)) == good

        # -- recovery
        recovered_at = time.time()
        revived = make_proxy(kc.base_url, port=proxy_port)
        fresh = {
            store: watcher.wait_for_token(store, other_than=[good], timeout=60)
            for store in ("secretsmanager", "ssm", "file")
        }
        wait_until(lambda: health(port, "/readyz")[0] == 200, 30, "ready again")
        assert health(port, "/healthz")[1]["credentials"]["oms"]["consecutive_failures"] == 0
        issued = len(kc.issued_tokens())
        wait_until(lambda: len(kc.issued_tokens()) > issued, 60, "one more regular rotation")
        # stopped while watched (SIGTERM lets a publish finish), then every store read once
        # more: what that rotation published is seen, with no time window
        daemon.stop()
        watcher.wait_for_reads_after(time.time())
    assert daemon.proc.returncode == 0

    # expired tokens are allowed from the outage until each store showed the fresh one
    republished = max(obs.time for obs in fresh.values())
    histories = watcher.check(kc.issued_tokens(), expiry_allowed=[(down_at, republished)])
    # published by the first attempt after recovery: no failed attempt in between
    assert [r.status for r in revived.requests()][:1] == [200], revived.requests()
    for store in fresh:
        # nothing was published during the outage
        assert not any(down_at < t < recovered_at for t in histories[store].first_seen.values()), (
            store
        )
        assert len(histories[store].tokens) >= 3
    # back-off: during the 5xx phase the attempts came at the cap, not faster
    failed = [r.time for r in proxy.requests() if r.fault == "fail"]
    assert len(failed) >= 3
    assert failed[-1] < refused_at
    attempts = daemon.lines(r"rotation failed credential=oms attempt=\d+")
    assert len(attempts) >= 5
    waits = planned_waits(attempts)
    assert len(waits) == len(attempts)
    assert all(w == cap for w in waits), waits  # at the cap (a quarter of the lifetime)
    assert_never_early(failed, waits)
    assert any("HTTP 503" in line.text for line in attempts)
    assert any("unreachable" in line.text for line in attempts)
    assert_no_traceback(daemon.log())


# ---------------------------------------------------------------- 2. stall


def _proc_counts(pid: int) -> tuple[int, int]:
    """(threads, open file descriptors) of a running process."""
    return len(list(Path(f"/proc/{pid}/task").iterdir())), len(
        list(Path(f"/proc/{pid}/fd").iterdir())
    )


def test_stalled_endpoint_times_out_without_leaks_and_never_delays_another(
    tmp_path: Path, make_stub: StubFactory, make_proxy: ProxyFactory, spawn: Spawn
) -> None:
    """One credential's endpoint accepts and never answers: every attempt ends at its read
    timeout, the daemon's threads and file descriptors stay flat over many cycles, and a
    second credential on a healthy endpoint keeps its own schedule all along."""
    lifetime, read_timeout, cap = 3.0, 0.5, 0.5
    kc = make_stub(access_token_lifespan=lifetime)
    proxy = make_proxy(kc.base_url)
    proxy.stall(times=None)
    stuck_path, healthy_path = tmp_path / "stuck.json", tmp_path / "healthy.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [
            credential(
                "stuck",
                proxy.url + kc.token_path,
                [file_target(stuck_path)],
                read_timeout_seconds=read_timeout,
                connect_timeout_seconds=read_timeout,
                max_retry_wait_seconds=cap,
            ),
            credential("healthy", kc.token_url, [file_target(healthy_path)]),
        ],
    )
    readers = {"stuck": file_reader(stuck_path), "healthy": file_reader(healthy_path)}
    with HistoryWatcher(readers) as watcher:
        daemon = spawn("run", "--config", config, env=rotator_env())
        watcher.wait_for_token("healthy", timeout=10)
        daemon.wait_for(r"credential=stuck .*timed out", count=2, timeout=60)
        baseline = _proc_counts(daemon.pid)
        samples = [baseline]
        # many cycles, counted, however long a loaded machine takes for them
        deadline = time.monotonic() + 60
        while sum(r.fault == "stall" for r in proxy.requests()) < 10:
            assert time.monotonic() < deadline, "fewer than 10 stalled attempts in 60 s"
            time.sleep(0.25)
            samples.append(_proc_counts(daemon.pid))
        final = _proc_counts(daemon.pid)
    proxy.clear()
    daemon.stop()
    assert daemon.proc.returncode == 0

    stalled = [r for r in proxy.requests() if r.fault == "stall"]
    assert len(stalled) >= 10, len(stalled)  # many cycles
    timeouts = daemon.lines(r"rotation failed credential=stuck .*timed out")
    assert len(timeouts) >= len(stalled) - 1
    # each cycle is one read timeout plus one capped back-off, no faster
    waits = planned_waits(timeouts)
    assert all(w == cap for w in waits), waits
    # the next stalled request reached the proxy no sooner than the back-off planned at
    # the timeout before it (from the daemon's log line: the proxy's own arrival times
    # can be late under load, which would make the next interval look short)
    pairs = min(len(timeouts), len(stalled) - 1)
    assert pairs >= 9, (len(timeouts), len(stalled))
    for line, nxt, wait in zip(timeouts[:pairs], stalled[1 : pairs + 1], waits, strict=False):
        assert nxt.time - log_time(line.text) >= wait - ROUNDING, (line.text, nxt.time, wait)
    # no leak: threads and descriptors stay where they were after warm-up
    threads, fds = zip(*samples, strict=True)
    assert final[0] <= baseline[0] + 1 and max(threads) <= baseline[0] + 2, samples
    assert final[1] <= baseline[1] + 2 and max(fds) <= baseline[1] + 4, samples
    # the healthy credential kept its schedule: one request per ~0.7-0.75 lifetime
    histories = watcher.check(kc.issued_tokens())
    assert histories["stuck"].tokens == []
    healthy = [r.time for r in kc.requests()]
    assert len(healthy) >= 5
    assert assert_on_schedule(daemon, "healthy", lifetime, healthy) >= len(healthy) - 1
    assert_no_traceback(daemon.log())


# ---------------------------------------------------------------- 3. nonsense


def _body(**fields: Any) -> str:
    doc = {"access_token": "canned-not-issued-token", "token_type": "Bearer", "expires_in": 60}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not _DROP})


_DROP = object()
_BIG = '{"access_token": "' + "A" * (5 << 20) + '", "token_type": "Bearer", "expires_in": 60}'

# case -> (status, body, what the one-line error must say)
NONSENSE: dict[str, tuple[int, str, str]] = {
    "html-200": (200, "<html><body><h1>Welcome</h1></body></html>", "HTML body, not a token"),
    "no-access-token": (200, _body(access_token=_DROP), "no access_token string"),
    "expires-in-negative": (200, _body(expires_in=-5), "expires_in must be positive"),
    "expires-in-zero": (200, _body(expires_in=0), "expires_in must be positive"),
    "expires-in-string": (200, _body(expires_in="soon"), "expires_in must be a number"),
    "expires-in-huge": (200, _body(expires_in=10**12), "expires_in is absurdly large"),
    "access-token-number": (200, _body(access_token=12345), "no access_token string"),
    "body-5-mb": (200, _BIG, "response body is larger than"),
    "token-type-mac": (200, _body(token_type="mac"), "token_type must be Bearer"),
}


@pytest.mark.parametrize("case", list(NONSENSE))
def test_once_refuses_nonsense(case: str, tmp_path: Path, make_stub: StubFactory) -> None:
    """`once --force` against a nonsense answer: exit 1 with one clear line, the
    previous token untouched."""
    status, body, message = NONSENSE[case]
    kc = make_stub(access_token_lifespan=60)
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [file_target(path)], retry_budget_seconds=1.0)],
    )
    env = rotator_env()
    assert run_once(config, env).returncode == 0
    before = path.read_bytes()
    kc.enqueue(status, body)
    result = run_once(config, env, "--force")
    assert result.returncode == 1, result.stderr
    assert path.read_bytes() == before
    assert kc.count() == 2  # not retried: a nonsense answer is not transient
    errors = [line for line in result.lines if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert message in errors[0], errors[0]
    assert "rotation failed credential=oms" in errors[0]
    assert len(errors[0]) < 400
    assert "canned-not-issued-token" not in result.stderr
    assert "AAAAAAAA" not in result.stderr
    assert_no_traceback(result.stderr)


def test_daemon_survives_nonsense_and_keeps_the_previous_token(
    tmp_path: Path, aws: AwsEnv, make_stub: StubFactory, spawn: Spawn
) -> None:
    """Every kind of nonsense in a row, to a running daemon: one line per attempt,
    nothing published, the previous token stays until a real one comes."""
    lifetime, cap = 4.0, 0.25
    kc = make_stub(access_token_lifespan=lifetime)
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [
            credential(
                "oms",
                kc.token_url,
                [ssm_target(), file_target(path)],
                max_retry_wait_seconds=cap,
            )
        ],
    )
    readers = {"ssm": aws_readers(aws)["ssm"], "file": file_reader(path)}
    with HistoryWatcher(readers) as watcher:
        daemon = spawn("run", "--config", config, env=rotator_env(aws.endpoint))
        first = watcher.wait_for_token("file", timeout=30)
        watcher.wait_for_token("ssm", timeout=30)
        for status, body, _ in NONSENSE.values():
            kc.enqueue(status, body)
        fresh = watcher.wait_for_token("file", other_than=[first.value], timeout=60)
        fresh_ssm = watcher.wait_for_token("ssm", other_than=[first.value], timeout=30)
    daemon.stop()
    assert daemon.proc.returncode == 0
    injected = [r.time for r in kc.requests() if r.outcome == "injected"]
    assert len(injected) == len(NONSENSE)
    # expiry allowed from the first nonsense answer until both stores showed the fresh token
    histories = watcher.check(
        kc.issued_tokens(), expiry_allowed=[(injected[0], max(fresh.time, fresh_ssm.time))]
    )
    for store, obs in (("file", fresh), ("ssm", fresh_ssm)):
        # nothing new appeared while the endpoint answered nonsense
        assert histories[store].tokens[0] == token_of(first.value)
        assert obs.time > injected[-1]
    failures = daemon.lines(r"rotation failed credential=oms")
    assert len(failures) == len(NONSENSE)
    for (_, _, message), line in zip(NONSENSE.values(), failures, strict=True):
        assert message in line.text, line.text
    log = daemon.log()
    assert "canned-not-issued-token" not in log
    assert "AAAAAAAA" not in log
    assert_no_traceback(log)


# ---------------------------------------------------------------- 4. 429 Retry-After


@pytest.mark.parametrize(
    ("retry_after", "cap"),
    [("3", 5.0), ("http-date", 5.0), ("120", 1.5)],
    ids=["seconds", "http-date", "above-cap"],
)
def test_once_honours_retry_after_within_the_cap(
    retry_after: str, cap: float, tmp_path: Path, make_stub: StubFactory
) -> None:
    """429 with Retry-After (delta-seconds or an HTTP date): the next request comes when
    the server asked, or at the cap if it asked for longer."""
    kc = make_stub(access_token_lifespan=60)
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [
            credential(
                "oms",
                kc.token_url,
                [file_target(path)],
                max_retry_wait_seconds=cap,
                retry_budget_seconds=10.0,
            )
        ],
    )
    if retry_after == "http-date":
        at = math.ceil(time.time()) + 4
        kc.enqueue(429, "", headers={"Retry-After": formatdate(at, usegmt=True)})
    else:
        kc.enqueue(429, "", headers={"Retry-After": retry_after})
    result = run_once(config, rotator_env())
    assert result.returncode == 0, result.stderr
    first, second = kc.requests()
    assert (first.outcome, second.outcome) == ("injected", "ok")
    [warning] = [line for line in result.lines if "attempt 1 failed" in line]
    assert "HTTP 429" in warning and "Retry-After" in warning, warning
    match = RETRY_IN.search(warning)
    assert match is not None, warning
    planned = float(match.group(1))
    if retry_after == "http-date":
        # the date, less the time it took to read it: more than any exponential first
        # wait (at most 2 s), never more than the date
        assert 2.0 < planned <= at - first.time + ROUNDING, (planned, at - first.time)
    else:
        assert planned == min(float(retry_after), cap)
    assert second.time - first.time >= planned - ROUNDING  # and it waited that long
    assert_no_traceback(result.stderr)


def test_daemon_honours_retry_after(tmp_path: Path, make_stub: StubFactory, spawn: Spawn) -> None:
    kc = make_stub(access_token_lifespan=60)
    kc.enqueue(429, "", headers={"Retry-After": "3"})
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [file_target(path)], max_retry_wait_seconds=10.0)],
    )
    daemon = spawn("run", "--config", config, env=rotator_env())
    daemon.wait_for(r"^\S+ INFO +rotated credential=oms", timeout=10)
    daemon.stop()
    first, second = kc.requests()
    assert (first.outcome, second.outcome) == ("injected", "ok")
    assert daemon.lines(r"rotation failed .*HTTP 429, Retry-After 3 s .*retry_in=3.0s")
    assert second.time - first.time >= 3.0 - ROUNDING  # never sooner than asked
