"""The daemon and ``once`` under AWS faults on publish: throttling, 5xx, resets, and
access denied, through a ``FaultProxy`` in front of moto (or moto's IAM), with the
stores watched."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rotator.testing import FaultProxy
from tests.fixtures.aws import AwsEnv
from tests.fixtures.faults import rotator_env
from tests.harness.config import (
    PARAMETER,
    SECRET_ID,
    credential,
    sm_target,
    ssm_target,
    write_config,
)
from tests.harness.factories import ProxyFactory, Spawn, StubFactory
from tests.harness.history import (
    HistoryWatcher,
    aws_readers,
    token_of,
)
from tests.harness.probes import health, metric, state_between_attempts
from tests.harness.process import assert_no_traceback, log_time, run_once
from tests.harness.schedule import (
    assert_never_early,
    planned_waits,
)

pytestmark = pytest.mark.timeout(90)


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
    with HistoryWatcher(aws_readers(aws)) as watcher:
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
        # Stopped while watched, and each store read once more after that: a token fetched
        # just before the stop is seen in both stores (a watcher stopped first missed it).
        daemon.stop()
        watcher.wait_for_reads_after(time.time())
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
    assert kc.count() == 1  # not retried: one token, one refused write
    assert "retry_in=" not in result.stderr
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
    with HistoryWatcher(aws_readers(aws)) as watcher:
        daemon = spawn(
            "run", "--config", config, "--metrics-port", "0", env=rotator_env(aws.endpoint)
        )
        port = daemon.metrics_port()
        failures = daemon.wait_for(r"rotation failed credential=oms", count=5, timeout=60)
        assert daemon.proc.poll() is None
        state = state_between_attempts(port, "oms")
        assert state["consecutive_failures"] >= 5
        assert state["state"] == "failing" and "last_error" not in state  # details: the log
        assert "secretsmanager:PutSecretValue" in daemon.log()
        assert health(port, "/readyz")[0] == 503
        assert metric(port, 'rotator_credential_healthy{credential="oms"}') == 0
        # the permission is granted: the next attempt publishes the token held in memory
        aws.allow_all()
        published = watcher.wait_for_token("secretsmanager", timeout=60)
    daemon.stop()
    assert watcher.snapshot("secretsmanager")[0].value is None
    watcher.check(kc.issued_tokens())
    assert kc.count() == 1  # one token, published once the write was allowed
    assert token_of(published.value) in kc.issued_tokens()
    waits = planned_waits(failures)
    assert len(waits) == len(failures) and all(w == cap for w in waits), waits
    assert_never_early([log_time(line.text) for line in failures], waits)
    for line in failures:
        assert "secretsmanager:PutSecretValue" in line.text and SECRET_ID in line.text
    assert_no_traceback(daemon.log())
