"""Start-up at scale: a daemon with N SSM credentials whose fresh tokens are already
published adopts them all with GetParameters batches (10 names a call) through the
AWS-limits proxy: no GetParameter, no PutParameter, no token request, no throttling.

N is 300 in the suite; ``ROTATOR_STARTUP_SCALE=1000`` (or 5000) measures the issue's
start-up figures (calls, time to the last adoption, daemon RSS): printed and written to
``<pytest basetemp>/startup-scale.json`` for BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from rotator.token import Token, encode
from tests.fixtures.aws import AwsEnv
from tests.fixtures.procs import Daemon, cli_env

pytestmark = pytest.mark.timeout(600)

N = int(os.environ.get("ROTATOR_STARTUP_SCALE", "300"))
CLIENT_ID = "scale-client"
SECRET = "scale-secret-never-logged"
SECRET_ENV = "SCALE_CLIENT_SECRET"


def config(path: Path, token_url: str) -> Path:
    path.write_text(
        "".join(
            f'[[credentials]]\nname = "c{k:05d}"\ntoken_url = "{token_url}"\n'
            f'client_id = "{CLIENT_ID}"\nclient_secret_env = "{SECRET_ENV}"\n'
            f'[[credentials.targets]]\ntype = "ssm"\nparameter = "/scale/c{k:05d}"\n\n'
            for k in range(N)
        )
    )
    return path


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_startup_adopts_fresh_ssm_tokens_in_batches(
    aws_limits: AwsEnv, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    issued = datetime.fromtimestamp(int(time.time()), UTC)
    limits = aws_limits.limits
    limits.set_rate("ssm:write", None)  # planting is not under test
    for k in range(N):
        token = Token(
            access_token=f"at-{k:05d}-fresh",
            token_type="Bearer",
            issued_at=issued,
            expires_at=issued + timedelta(hours=1),
        )
        aws_limits.ssm.put_parameter(
            Name=f"/scale/c{k:05d}", Value=encode(token, "json"), Type="SecureString"
        )
    limits.set_rate("ssm:write", 3.0)  # AWS's PutParameter rate from here on
    before = len(limits.requests())
    with KeycloakStub(access_token_lifespan=3600, clients={CLIENT_ID: SECRET}) as kc:
        path = config(tmp_path / "rotator.toml", kc.token_url)
        env = cli_env(aws_limits, **{SECRET_ENV: SECRET})
        with Daemon(env, tmp_path, args=("--config", str(path))) as daemon:
            started = time.monotonic()
            deadline = started + 300
            while time.monotonic() < deadline and daemon.stderr_text().count("adopted ") < N:
                time.sleep(0.2)
            adopted_after = time.monotonic() - started
            rss = rss_mib(daemon.proc.pid)
            result = daemon.stop()
        token_requests = len(kc.requests())
    calls = [r.target or "" for r in limits.requests()[before:]]
    report = {
        "credentials": N,
        "aws_calls": len(calls),
        "GetParameters": calls.count("AmazonSSM.GetParameters"),
        "GetParameter": calls.count("AmazonSSM.GetParameter"),
        "PutParameter": calls.count("AmazonSSM.PutParameter"),
        "token_requests": token_requests,
        "throttled": limits.refused("ThrottlingException"),
        "seconds_to_last_adoption": round(adopted_after, 2),
        "daemon_rss_mib": round(rss, 1),
        "load_average": os.getloadavg(),
    }
    text = json.dumps(report, indent=2)
    print(f"\nstart-up report:\n{text}")
    (tmp_path_factory.getbasetemp() / "startup-scale.json").write_text(text + "\n")
    assert result.stderr.count("adopted ") >= N, result.describe()[-3000:]
    assert report["GetParameters"] == math.ceil(N / 10), report
    assert (report["GetParameter"], report["PutParameter"], token_requests) == (0, 0, 0), report
    assert report["throttled"] == 0, report
