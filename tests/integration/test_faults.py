"""Issue 3: the daemon and ``once`` under injected faults, with the stores watched.

Every test runs the real CLI (``python -m rotator run`` / ``once``) as a
subprocess, or, where only the inside can prove it, the daemon in-process via
``rotator.app.build``, against the Keycloak-faithful stub and a real moto
server, with ``FaultProxy`` in front of either. A ``StoreWatcher`` thread reads
every target every few milliseconds during the scenario and checks afterwards
what a consumer could have seen at each moment: never empty after the first
publish, always a complete document of a token the server issued, expires_at
never going backwards, and an active token whenever the endpoint was up.

Token lifetimes are seconds long (the stub's ``access_token_lifespan``), so
the daemon's back-off cap (a quarter of the lifetime at most) is about a second.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import requests

from rotator.app import build
from rotator.clock import SystemClock
from rotator.config import from_mapping as config_from_mapping
from rotator.rotation import NullObserver
from rotator.scheduler import Daemon
from rotator.testing import AwsLimitsProxy, FaultProxy, KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.fixtures.faults import (
    RotatorProcess,
    StoreWatcher,
    assert_no_traceback,
    credential,
    file_reader,
    jwt_exp,
    log_time,
    parse_time,
    rotator_env,
    run_once,
    secretsmanager_reader,
    ssm_reader,
    stub_active_at,
    token_of,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

SECRET_ID = "oms/token"
PARAMETER = "/oms/token"

StubFactory = Callable[..., KeycloakStub]
ProxyFactory = Callable[..., FaultProxy]
Spawn = Callable[..., RotatorProcess]


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def make_stub() -> Iterator[StubFactory]:
    stubs: list[KeycloakStub] = []

    def make(**kwargs: Any) -> KeycloakStub:
        stub = KeycloakStub(**kwargs)
        stubs.append(stub)
        return stub.start()

    yield make
    for stub in stubs:
        stub.stop()


@pytest.fixture
def make_proxy() -> Iterator[ProxyFactory]:
    proxies: list[FaultProxy] = []

    def make(upstream: str, **kwargs: Any) -> FaultProxy:
        proxy = AwsLimitsProxy(upstream, **kwargs)  # a FaultProxy that enforces AWS limits
        proxies.append(proxy)
        return proxy.start()

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    procs: list[RotatorProcess] = []

    def start(*args: str | Path, env: dict[str, str]) -> RotatorProcess:
        proc = RotatorProcess([str(a) for a in args], env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def sm_target(**extra: Any) -> dict[str, Any]:
    return {"type": "secretsmanager", "secret_id": SECRET_ID, "create": True, **extra}


def ssm_target() -> dict[str, Any]:
    return {"type": "ssm", "parameter": PARAMETER}


def file_target(path: Path) -> dict[str, Any]:
    return {"type": "file", "path": str(path)}


def aws_readers(aws: AwsEnv) -> dict[str, Any]:
    """Readers that talk to moto directly, never through a fault proxy."""
    return {
        "secretsmanager": secretsmanager_reader(aws.client("secretsmanager"), SECRET_ID),
        "ssm": ssm_reader(aws.client("ssm"), PARAMETER),
    }


def health(port: int, path: str) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"http://127.0.0.1:{port}{path}", timeout=3)
    return response.status_code, response.json()


def metric(port: int, name: str) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name} in:\n{text}")


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def assert_on_schedule(times: list[float], lifetime: float) -> None:
    """Each request came at 70-75 % of the previous token's lifetime, counted from its
    issued_at: the send instant rounded down to the second, as published."""
    for prev, nxt in zip(times, times[1:], strict=False):
        issued = math.floor(prev - 0.05)  # the stub logs arrival, a moment after sending
        assert issued + 0.7 * lifetime - 0.05 <= nxt, (prev, nxt)
        assert nxt <= math.floor(prev) + 0.75 * lifetime + 0.6, (prev, nxt)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


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
    with StoreWatcher({**aws_readers(aws), "file": file_reader(path)}) as watcher:
        daemon = spawn(
            "run", "--config", config, "--metrics-port", "0", env=rotator_env(aws.endpoint)
        )
        port = daemon.metrics_port()
        for store in ("secretsmanager", "ssm", "file"):
            watcher.wait_for_token(store, timeout=10)
        good = token_of(watcher.current("file"))
        assert health(port, "/readyz")[0] == 200

        # -- the outage: 5xx first
        down_at = time.time()
        proxy.fail(503, times=None)
        wait_until(lambda: sum(r.fault == "fail" for r in proxy.requests()) >= 3, 8, "three 503s")
        # the last good token has expired by now or soon; then connection refused
        refused_at = time.time()
        proxy_port = proxy.port
        proxy.stop()
        daemon.wait_for(r"is unreachable", count=2, timeout=6)
        wait_until(lambda: time.time() > down_at + lifetime + 1.5, 10, "an outage > lifetime")
        assert daemon.proc.poll() is None, daemon.log()
        status, live = health(port, "/healthz")
        assert status == 200
        state = live["credentials"]["oms"]
        assert state["consecutive_failures"] >= 3
        assert "unreachable" in state["last_error"]
        status, ready = health(port, "/readyz")
        assert status == 503, ready
        assert metric(port, 'rotator_credential_healthy{credential="oms"}') == 0
        # the stores still hold the last good token
        for store in ("secretsmanager", "ssm", "file"):
            assert token_of(watcher.current(store)) == good

        # -- recovery
        recovered_at = time.time()
        make_proxy(kc.base_url, port=proxy_port)
        fresh = {
            store: watcher.wait_for_token(store, other_than=[good], timeout=2 * cap + 3)
            for store in ("secretsmanager", "ssm", "file")
        }
        wait_until(lambda: health(port, "/readyz")[0] == 200, 3, "ready again")
        assert health(port, "/healthz")[1]["credentials"]["oms"]["consecutive_failures"] == 0
        time.sleep(lifetime)  # one more regular rotation
    daemon.stop()
    assert daemon.proc.returncode == 0

    histories = watcher.check(
        kc.issued_tokens(), expiry_allowed=[(down_at, recovered_at + cap + 1.5)]
    )
    for store, obs in fresh.items():
        # published within one back-off cap of recovery (plus the time to publish)
        assert obs.time - recovered_at < cap + 1.0, (store, obs.time - recovered_at)
        # nothing was published during the outage
        assert not any(down_at < t < recovered_at for t in histories[store].first_seen.values()), (
            store
        )
        assert len(histories[store].tokens) >= 3
    # back-off: during the 5xx phase the attempts came at the cap, not faster
    failed = [r.time for r in proxy.requests() if r.fault == "fail"]
    assert len(failed) >= 3
    assert all(cap * 0.9 <= gap <= cap + 0.7 for gap in gaps(failed)), gaps(failed)
    assert failed[-1] < refused_at
    attempts = daemon.lines(r"rotation failed credential=oms attempt=\d+")
    assert len(attempts) >= 5
    times = [log_time(line.text) for line in attempts]
    for gap in gaps(times):
        assert cap * 0.9 <= gap <= cap + 0.7, gaps(times)
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
    with StoreWatcher(readers) as watcher:
        daemon = spawn("run", "--config", config, env=rotator_env())
        watcher.wait_for_token("healthy", timeout=10)
        daemon.wait_for(r"credential=stuck .*timed out", count=2, timeout=5)
        baseline = _proc_counts(daemon.pid)
        samples = [baseline]
        start = time.time()
        while time.time() - start < 10:
            time.sleep(0.25)
            samples.append(_proc_counts(daemon.pid))
        final = _proc_counts(daemon.pid)
    proxy.clear()
    daemon.stop()
    assert daemon.proc.returncode == 0

    stalled = [r for r in proxy.requests() if r.fault == "stall"]
    assert len(stalled) >= 8, len(stalled)  # many cycles
    # each cycle is one read timeout plus one capped back-off, no faster
    for gap in gaps([r.time for r in stalled]):
        assert read_timeout + cap * 0.9 <= gap <= read_timeout + cap + 0.7, gap
    timeouts = daemon.lines(r"rotation failed credential=stuck .*timed out")
    assert len(timeouts) >= len(stalled) - 1
    # no leak: threads and descriptors stay where they were after warm-up
    threads, fds = zip(*samples, strict=True)
    assert final[0] <= baseline[0] + 1 and max(threads) <= baseline[0] + 2, samples
    assert final[1] <= baseline[1] + 2 and max(fds) <= baseline[1] + 4, samples
    # the healthy credential kept its schedule: one request per ~0.7-0.75 lifetime
    histories = watcher.check(kc.issued_tokens())
    assert histories["stuck"].tokens == []
    healthy = [r.time for r in kc.requests()]
    assert len(healthy) >= 5
    assert_on_schedule(healthy, lifetime)
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
    with StoreWatcher(readers) as watcher:
        daemon = spawn("run", "--config", config, env=rotator_env(aws.endpoint))
        first = watcher.wait_for_token("file", timeout=10)
        watcher.wait_for_token("ssm", timeout=5)
        for status, body, _ in NONSENSE.values():
            kc.enqueue(status, body)
        fresh = watcher.wait_for_token("file", other_than=[first.value], timeout=lifetime + 6)
        fresh_ssm = watcher.wait_for_token("ssm", other_than=[first.value], timeout=3)
    daemon.stop()
    assert daemon.proc.returncode == 0
    injected = [r.time for r in kc.requests() if r.outcome == "injected"]
    assert len(injected) == len(NONSENSE)
    histories = watcher.check(
        kc.issued_tokens(), expiry_allowed=[(injected[0], injected[-1] + cap + 1.0)]
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
        at = math.ceil(time.time()) + 3
        kc.enqueue(429, "", headers={"Retry-After": formatdate(at, usegmt=True)})
    else:
        kc.enqueue(429, "", headers={"Retry-After": retry_after})
    result = run_once(config, rotator_env())
    assert result.returncode == 0, result.stderr
    first, second = kc.requests()
    assert (first.outcome, second.outcome) == ("injected", "ok")
    gap = second.time - first.time
    if retry_after == "http-date":
        asked = at - first.time
        assert 2.2 <= asked < 4.1  # longer than any exponential first wait (<= 2 s)
        assert asked - 0.2 <= gap <= asked + 0.6, (asked, gap)
    else:
        expected = min(float(retry_after), cap)
        assert expected - 0.1 <= gap <= expected + 0.6, gap
    [warning] = [line for line in result.lines if "attempt 1 failed" in line]
    assert "HTTP 429" in warning and "Retry-After" in warning, warning
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
    assert 2.9 <= second.time - first.time <= 3.6
    assert daemon.lines(r"rotation failed .*HTTP 429, Retry-After 3 s .*retry_in=3.0s")


# ---------------------------------------------------------------- 5. AWS faults on publish

THROTTLED = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
AMZ_JSON = {"Content-Type": "application/x-amz-json-1.1"}


def _inject(proxy: FaultProxy, fault: str, target: str, times: int) -> None:
    if fault == "throttling":
        proxy.fail(400, body=THROTTLED, headers=AMZ_JSON, times=times, target=target)
    elif fault == "5xx":
        proxy.fail(503, times=times, target=target)
    elif fault == "reset":
        proxy.reset(times=times, target=target)
    elif fault == "truncate":
        proxy.truncate(keep_bytes=5, times=times, target=target)
    else:
        raise AssertionError(fault)


@pytest.mark.parametrize(
    ("fault", "action"),
    [
        ("throttling", "PutSecretValue"),
        ("5xx", "PutParameter"),
        ("reset", "PutSecretValue"),
        ("truncate", "PutSecretValue"),
        pytest.param(
            "truncate",
            "PutParameter",
        ),
    ],
)
def test_once_publishes_the_same_token_after_aws_faults(
    fault: str,
    action: str,
    tmp_path: Path,
    aws: AwsEnv,
    make_stub: StubFactory,
    make_proxy: ProxyFactory,
) -> None:
    """Throttling, 5xx, a reset or a cut-off answer on the write: the token fetched once
    is published on retry; no second token request."""
    kc = make_stub(access_token_lifespan=60)
    proxy = make_proxy(aws.endpoint)
    config = write_config(
        tmp_path / "rotator.toml",
        [
            credential(
                "oms",
                kc.token_url,
                [sm_target(), ssm_target()],
                max_retry_wait_seconds=0.3,
                retry_budget_seconds=10.0,
            )
        ],
    )
    env = rotator_env(proxy.url)
    assert run_once(config, env).returncode == 0
    kc.set_access_token_lifespan(90)  # the forced token expires later: it must be written
    readers = aws_readers(aws)
    _inject(proxy, fault, action, times=2 if fault != "truncate" else 1)
    result = run_once(config, env, "--force")
    assert result.returncode == 0, result.stderr
    assert kc.count() == 2  # the first run's token, and one for the forced run
    newest = max(kc.requests(), key=lambda r: r.time)
    assert newest.outcome == "ok"
    issued = kc.issued_tokens()
    held = {store: token_of(read()) for store, read in readers.items()}
    assert held["secretsmanager"] == held["ssm"]
    assert held["ssm"] in issued
    assert sum(r.fault is not None for r in proxy.requests()) == (2 if fault != "truncate" else 1)
    retries = [line for line in result.lines if "attempt" in line and "failed" in line]
    assert len(retries) == (0 if fault == "truncate" else 2), result.stderr
    assert all(
        f"{'secretsmanager' if 'Secret' in action else 'ssm'}:{action}" in line for line in retries
    ), result.stderr
    assert_no_traceback(result.stderr)


def test_daemon_publishes_on_retry_without_fetching_again(
    tmp_path: Path,
    aws: AwsEnv,
    make_stub: StubFactory,
    make_proxy: ProxyFactory,
    spawn: Spawn,
) -> None:
    """Faults on both writes during a rotation: the one fetched token reaches both stores
    on retry; every token the server issued was published, none was wasted."""
    lifetime, cap = 5.0, 0.5  # two failed attempts fit in the quarter lifetime left
    kc = make_stub(access_token_lifespan=lifetime)
    proxy = make_proxy(aws.endpoint)
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [sm_target(), ssm_target()], max_retry_wait_seconds=cap)],
    )
    with StoreWatcher(aws_readers(aws)) as watcher:
        daemon = spawn("run", "--config", config, env=rotator_env(proxy.url))
        first = watcher.wait_for_token("secretsmanager", timeout=10)
        watcher.wait_for_token("ssm", timeout=5)
        _inject(proxy, "throttling", "PutSecretValue", times=1)
        _inject(proxy, "reset", "PutSecretValue", times=1)
        _inject(proxy, "5xx", "PutParameter", times=1)
        _inject(proxy, "reset", "PutParameter", times=1)
        second = watcher.wait_for_token("secretsmanager", other_than=[first.value], timeout=8)
        watcher.wait_for_token("ssm", other_than=[first.value], timeout=3)
        time.sleep(lifetime)  # and one more, undisturbed
    daemon.stop()
    assert daemon.proc.returncode == 0
    issued = kc.issued_tokens()
    histories = watcher.check(issued)
    assert sum(r.fault is not None for r in proxy.requests()) == 4
    # every token fetched was published to both stores: no second fetch while fresh
    assert set(histories["secretsmanager"].tokens) == issued
    assert set(histories["ssm"].tokens) == issued
    assert len(issued) >= 3
    assert token_of(second.value) in histories["ssm"].tokens
    assert len(daemon.lines(r"publish failed credential=oms")) >= 4
    assert_no_traceback(daemon.log())


@pytest.mark.parametrize(
    ("action", "resource"),
    [("secretsmanager:PutSecretValue", SECRET_ID), ("ssm:PutParameter", PARAMETER)],
)
def test_once_access_denied_names_action_and_resource(
    action: str, resource: str, tmp_path: Path, aws: AwsEnv, make_stub: StubFactory
) -> None:
    kc = make_stub(access_token_lifespan=60)
    aws.secretsmanager.create_secret(Name=SECRET_ID)
    target = (
        {"type": "secretsmanager", "secret_id": SECRET_ID}
        if action.startswith("secretsmanager")
        else ssm_target()
    )
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [target], retry_budget_seconds=10.0)],
    )
    aws.deny(action)
    result = run_once(config, rotator_env(aws.endpoint))
    assert result.returncode == 1, result.stderr
    assert result.duration < 5  # not retried
    assert kc.count() == 1
    errors = [line for line in result.lines if " ERROR " in line]
    assert errors and " rotation failed credential=oms error=" in errors[-1], errors
    for error in errors:  # the target's line, then the rotation's summary
        assert action in error and resource in error and "denied" in error, error
    assert_no_traceback(result.stderr)


def test_daemon_access_denied_retries_at_cap_and_reports_unhealthy(
    tmp_path: Path, aws: AwsEnv, make_stub: StubFactory, spawn: Spawn
) -> None:
    cap = 1.0
    kc = make_stub(access_token_lifespan=60)
    aws.secretsmanager.create_secret(Name=SECRET_ID)
    config = write_config(
        tmp_path / "rotator.toml",
        [
            credential(
                "oms",
                kc.token_url,
                [{"type": "secretsmanager", "secret_id": SECRET_ID}],
                max_retry_wait_seconds=cap,
            )
        ],
        metrics_host="127.0.0.1",
        readiness_margin_seconds=1.0,
    )
    aws.deny("secretsmanager:PutSecretValue")
    with StoreWatcher(aws_readers(aws)) as watcher:
        daemon = spawn(
            "run", "--config", config, "--metrics-port", "0", env=rotator_env(aws.endpoint)
        )
        port = daemon.metrics_port()
        failures = daemon.wait_for(r"rotation failed credential=oms", count=5, timeout=10)
        assert daemon.proc.poll() is None
        status, live = health(port, "/healthz")
        assert status == 200
        state = live["credentials"]["oms"]
        assert state["consecutive_failures"] >= 5
        assert "secretsmanager:PutSecretValue" in state["last_error"]
        assert health(port, "/readyz")[0] == 503
        assert metric(port, 'rotator_credential_healthy{credential="oms"}') == 0
        # the permission is granted: the next attempt publishes the token held in memory
        aws.allow_all()
        published = watcher.wait_for_token("secretsmanager", timeout=cap + 3)
    daemon.stop()
    assert watcher.snapshot("secretsmanager")[0].value is None
    watcher.check(kc.issued_tokens())
    assert kc.count() == 1  # one token, published once the write was allowed
    assert token_of(published.value) in kc.issued_tokens()
    times = [log_time(line.text) for line in failures]
    assert all(cap * 0.9 <= gap <= cap + 0.6 for gap in gaps(times)), gaps(times)
    for line in failures:
        assert "secretsmanager:PutSecretValue" in line.text and SECRET_ID in line.text
    assert_no_traceback(daemon.log())


# ---------------------------------------------------------------- 7. rejected credentials

WRONG_SECRET = "wrong-secret-marker-7f3a"


@pytest.mark.parametrize("legacy", [False, True], ids=["unauthorized_client", "invalid_client"])
def test_once_rejected_credentials_exit_3_at_once(
    legacy: bool, tmp_path: Path, make_stub: StubFactory
) -> None:
    kc = make_stub(access_token_lifespan=60, legacy_errors=legacy)
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [file_target(path)], retry_budget_seconds=20.0)],
    )
    result = run_once(config, rotator_env(OMS_CLIENT_SECRET=WRONG_SECRET))
    assert result.returncode == 3, result.stderr
    assert result.duration < 3
    [request] = kc.requests()
    assert request.outcome == ("invalid_client" if legacy else "unauthorized_client")
    assert not path.exists()
    [error] = [line for line in result.lines if " ERROR " in line]
    assert "rejected the client credentials" in error, error
    assert WRONG_SECRET not in result.stderr
    assert_no_traceback(result.stderr)


def test_daemon_rejected_credentials_backs_off_to_its_cap(
    tmp_path: Path, make_stub: StubFactory, spawn: Spawn
) -> None:
    cap = 2.0
    kc = make_stub(access_token_lifespan=60)
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [file_target(path)], max_retry_wait_seconds=cap)],
    )
    daemon = spawn("run", "--config", config, env=rotator_env(OMS_CLIENT_SECRET=WRONG_SECRET))
    daemon.wait_for(r"rotation failed credential=oms attempt=5 ", timeout=15)
    time.sleep(0.3)
    daemon.stop()
    assert daemon.proc.returncode == 0
    attempts = [r.time for r in kc.requests()]
    assert all(r.outcome == "unauthorized_client" for r in kc.requests())
    waits = gaps(attempts)
    assert len(attempts) == 5, waits
    assert 0.95 <= waits[0] <= 2.3, waits  # 1 s plus jitter
    assert all(cap - 0.05 <= w <= cap + 0.6 for w in waits[1:]), waits  # then the cap
    lines = daemon.lines(r" ERROR | WARNING ")
    assert len(lines) == len(attempts)  # one line per attempt, nothing else
    for n, line in enumerate(lines, 1):
        assert f"rotation failed credential=oms attempt={n} " in line.text
        assert "rejected the client credentials (unauthorized_client" in line.text
    assert WRONG_SECRET not in daemon.log()
    assert_no_traceback(daemon.log())
    assert not path.exists()


# ---------------------------------------------------------------- 8. refresh token rejected


def test_rejected_refresh_token_gives_exactly_one_client_credentials_request(
    tmp_path: Path, make_stub: StubFactory, spawn: Spawn
) -> None:
    """Keycloak's refresh tokens for client_credentials: the daemon renews with them; when
    one is rejected (invalid_grant "Token is not active" / "Session not active") exactly one
    client_credentials request follows at once, then the refresh grant is used again."""
    lifetime = 2.0
    kc = make_stub(access_token_lifespan=lifetime, use_refresh_tokens=True)
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml", [credential("oms", kc.token_url, [file_target(path)])]
    )

    def refreshes_after(when: float) -> int:
        return sum(
            r.grant_type == "refresh_token" and r.outcome == "ok" and r.time > when
            for r in kc.requests()
        )

    with StoreWatcher({"file": file_reader(path)}) as watcher:
        daemon = spawn("run", "--config", config, env=rotator_env())
        watcher.wait_for_token("file", timeout=10)
        wait_until(lambda: refreshes_after(0) >= 1, 5, "a refresh grant")
        for description in ("Token is not active", "Session not active"):
            revoked_at = time.time()
            kc.revoke_refresh_tokens(description)
            wait_until(lambda: refreshes_after(revoked_at) >= 1, 6, "a refresh grant again")
    daemon.stop()
    assert daemon.proc.returncode == 0
    watcher.check(kc.issued_tokens())

    requests_ = kc.requests()
    kinds = [(r.grant_type, r.outcome) for r in requests_]
    rejected = [i for i, kind in enumerate(kinds) if kind == ("refresh_token", "invalid_grant")]
    assert [requests_[i].error_description for i in rejected] == [
        "Token is not active",
        "Session not active",
    ]
    for i in rejected:
        assert kinds[i + 1] == ("client_credentials", "ok"), kinds
        assert requests_[i + 1].time - requests_[i].time < 0.5  # at once
        assert kinds[i + 2] == ("refresh_token", "ok"), kinds  # and nothing more
        assert_on_schedule([requests_[i + 1].time, requests_[i + 2].time], lifetime)
    # client_credentials only at start-up and right after each rejection
    assert [i for i, k in enumerate(kinds) if k[0] == "client_credentials"] == [
        0,
        *(i + 1 for i in rejected),
    ]
    assert all(outcome in ("ok", "invalid_grant") for _, outcome in kinds)
    assert_no_traceback(daemon.log())


# ---------------------------------------------------------------- 9. clock


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
    lifetime, window = 2.0, 5.0
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
    with StoreWatcher({"file": file_reader(path)}) as watcher:
        runner = threading.Thread(target=daemon.run_until_stopped, kwargs={"poll": 0.2})
        runner.start()  # run_until_stopped also runs the monotonic watchdog
        try:
            wait_until(lambda: kc.count() >= 2, 5, "two rotations")
            time.sleep(0.2)  # between two rotations
            jumped_at = time.time()
            clock.offset = jump
            time.sleep(window)
        finally:
            daemon.shutdown()
            runner.join(timeout=10)
    after = [r.time for r in kc.requests() if r.time > jumped_at]
    steps = [t for t, _ in observer.steps if t > jumped_at]
    # no storm: a step per 0.4-1.5 s (70-75 % of 2 s, planned from whole seconds)
    assert len(steps) <= 20, f"{len(steps)} steps in {window} s"
    assert len(after) <= len(steps)
    # none missed: a new token at least every 1.5 s, and always an active one
    assert len(after) >= 3, f"{len(after)} token requests in {window} s"
    for obs in watcher.snapshot("file"):
        if obs.value is not None:
            token = token_of(obs.value)
            assert token in kc.issued_tokens()
            assert stub_active_at(token, obs.ended), f"expired token at {obs.ended}"


# ---------------------------------------------------------------- verify before publish


def test_verify_url_gets_the_new_token_before_it_is_published(
    tmp_path: Path, make_stub: StubFactory, make_proxy: ProxyFactory
) -> None:
    kc = make_stub(access_token_lifespan=60)
    proxy = make_proxy(kc.base_url)
    proxy.add_latency(1.0, path_prefix="/oms-api")  # a slow check makes the order visible
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [file_target(path)], verify_url=proxy.url + "/oms-api/")],
    )
    with StoreWatcher({"file": file_reader(path)}, interval=0.01) as watcher:
        result = run_once(config, rotator_env())
        assert result.returncode == 0, result.stderr
        published = watcher.wait_for_token("file", timeout=3)
    [check] = kc.verify_requests()
    assert check.ok  # the stub accepted the token: it was the new, active one
    assert check.time < published.started  # and this happened before the publish
    assert watcher.check(kc.issued_tokens())["file"].tokens == [token_of(published.value)]


def test_failed_verification_is_an_error_and_the_previous_token_stays(
    tmp_path: Path, make_stub: StubFactory
) -> None:
    kc = make_stub(access_token_lifespan=60)
    other = make_stub()  # knows none of kc's tokens: its /oms-api/ answers 401
    path = tmp_path / "token.json"
    plain = write_config(
        tmp_path / "plain.toml", [credential("oms", kc.token_url, [file_target(path)])]
    )
    assert run_once(plain, rotator_env()).returncode == 0
    before = path.read_bytes()
    config = write_config(
        tmp_path / "rotator.toml",
        [
            credential(
                "oms",
                kc.token_url,
                [file_target(path)],
                verify_url=other.verify_url,
                retry_budget_seconds=5.0,
            )
        ],
    )
    result = run_once(config, rotator_env(), "--force")
    assert result.returncode == 1, result.stderr
    assert path.read_bytes() == before
    assert kc.count() == 2  # the new token was fetched, refused, and not retried
    assert other.verify_count(ok=False) == 1
    [error] = [line for line in result.lines if " ERROR " in line]
    assert "verify_url" in error and "refused the new token: HTTP 401" in error, error
    assert_no_traceback(result.stderr)


# ---------------------------------------------------------------- graceful shutdown


def test_sigterm_during_a_back_off_ends_the_daemon_at_once(
    tmp_path: Path, make_stub: StubFactory, spawn: Spawn
) -> None:
    kc = make_stub(access_token_lifespan=60)
    kc.enqueue(429, "", headers={"Retry-After": "30"})
    path = tmp_path / "token.json"
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [file_target(path)], max_retry_wait_seconds=60.0)],
    )
    daemon = spawn("run", "--config", config, env=rotator_env())
    daemon.wait_for(r"rotation failed credential=oms attempt=1 .*retry_in=30.0s", timeout=10)
    time.sleep(0.5)  # well into the 30 s back-off
    sent = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(5) == 0
    assert time.monotonic() - sent < 2.0
    daemon.wait_for(r"daemon stopped", timeout=1)
    assert kc.count() == 1


def _slow_publish_setup(
    tmp_path: Path, aws: AwsEnv, make_stub: StubFactory, make_proxy: ProxyFactory, slow: float
) -> tuple[KeycloakStub, FaultProxy, Path, str | None]:
    """A secret holding a first token; every later PutSecretValue takes ``slow`` seconds
    (the new version is then promoted to AWSCURRENT by UpdateSecretVersionStage)."""
    kc = make_stub(access_token_lifespan=60)
    proxy = make_proxy(aws.endpoint)
    aws.secretsmanager.create_secret(Name=SECRET_ID)  # no value yet: the write is a Put
    config = write_config(
        tmp_path / "rotator.toml",
        [credential("oms", kc.token_url, [{"type": "secretsmanager", "secret_id": SECRET_ID}])],
    )
    assert run_once(config, rotator_env(proxy.url)).returncode == 0
    first = token_of(secretsmanager_reader(aws.secretsmanager, SECRET_ID)())
    kc.set_access_token_lifespan(90)  # a later token, so the next one must be written
    proxy.add_latency(slow, target="PutSecretValue")
    return kc, proxy, config, first


def _when_put_in_flight(proxy: FaultProxy) -> None:
    """Return once a slowed PutSecretValue is in flight."""

    def slowed() -> bool:
        return any(
            r.target and "PutSecretValue" in r.target and r.fault == "latency"
            for r in proxy.requests()
        )

    wait_until(slowed, 10, "a slowed PutSecretValue")
    time.sleep(0.3)


def test_sigterm_during_a_slow_publish_lets_it_complete(
    tmp_path: Path, aws: AwsEnv, make_stub: StubFactory, make_proxy: ProxyFactory, spawn: Spawn
) -> None:
    slow = 2.5
    kc, proxy, config, _ = _slow_publish_setup(tmp_path, aws, make_stub, make_proxy, slow)
    aws.secretsmanager.delete_secret(SecretId=SECRET_ID, ForceDeleteWithoutRecovery=True)
    aws.secretsmanager.create_secret(Name=SECRET_ID)  # empty again: the daemon must write
    daemon = spawn("run", "--config", config, env=rotator_env(proxy.url))
    _when_put_in_flight(proxy)
    sent = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(10) == 0, daemon.log()
    took = time.monotonic() - sent
    assert took < slow + 1.5
    log = daemon.log()
    order = [
        log.index("received SIGTERM"),
        log.index("published credential=oms target=secretsmanager:"),
        log.index("daemon stopped"),
    ]
    assert order == sorted(order), log
    held = token_of(secretsmanager_reader(aws.secretsmanager, SECRET_ID)())
    assert held in kc.issued_tokens()


def test_sigterm_during_a_slow_publish_in_once_lets_it_complete(
    tmp_path: Path, aws: AwsEnv, make_stub: StubFactory, make_proxy: ProxyFactory, spawn: Spawn
) -> None:
    slow = 2.5
    kc, proxy, config, first = _slow_publish_setup(tmp_path, aws, make_stub, make_proxy, slow)
    once = spawn("once", "--force", "--config", config, env=rotator_env(proxy.url))
    _when_put_in_flight(proxy)
    once.signal(signal.SIGTERM)
    code = once.wait(10)
    time.sleep(slow)  # let the proxy finish forwarding whatever it was given
    held = token_of(secretsmanager_reader(aws.secretsmanager, SECRET_ID)())
    assert kc.count() == 2
    # the publish completed: the second token is AWSCURRENT, and the run says so
    assert (code, held != first, held in kc.issued_tokens()) == (0, True, True), once.log()
