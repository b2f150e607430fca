"""4. Calls per rotation, counted by the servers: the stub's request log for the token
endpoint, a FaultProxy (no faults) in front of moto for AWS (by X-Amz-Target).

One config holds three credentials, one per target type, each with its own client id,
so every request is attributed by client id (token endpoint) or service (AWS):

* start-up with nothing published: ``rotator once``;
* start-up with a fresh token published (a restart): ``rotator once`` again;
* a forced rotation: ``rotator once --force``;
* steady state: ``rotator run`` with 4 s tokens; each rotation is the window from 1 s
  before one token request to 1 s before the next.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rotator.testing.proxy import FaultProxy
from tests.bench.peers import (
    CLIENT_SECRET,
    ROOT,
    SCRATCH,
    MotoProcess,
    aws_env,
    base_env,
    measure,
    stop_process,
)
from tests.bench.sections.calls import CallsResult, Count, LambdaStep, SteadyCount

SECRET_ENV = "BENCH_CLIENT_SECRET"
KINDS = {
    "file": ("bench-calls-file", None),
    "secretsmanager": ("bench-calls-sm", "secretsmanager."),
    "ssm": ("bench-calls-ssm", "AmazonSSM."),
}
CLIENTS = [client for client, _ in KINDS.values()]

# The AWS rotation-Lambda pattern, per rotation, from AWS's SecretsManagerRotationTemplate
# (aws-samples/aws-secrets-manager-rotation-lambdas): Secrets Manager invokes the function
# once per step, and every invocation starts with DescribeSecret.
LAMBDA_PATTERN = (
    LambdaStep(
        "createSecret",
        "DescribeSecret, GetSecretValue(AWSCURRENT), GetSecretValue(AWSPENDING) "
        "-> not found, [token request], PutSecretValue(AWSPENDING)",
        4,
    ),
    LambdaStep("setSecret", "DescribeSecret (nothing to set for a bearer token)", 1),
    LambdaStep("testSecret", "DescribeSecret, GetSecretValue(AWSPENDING) to test it", 2),
    LambdaStep(
        "finishSecret",
        "DescribeSecret, DescribeSecret, UpdateSecretVersionStage(AWSCURRENT), "
        "UpdateSecretVersionStage(remove AWSPENDING)",
        4,
    ),
)


def write_config(path: Path, token_url: str, workdir: Path) -> None:
    targets = {
        "file": f'type = "file"\npath = "{workdir / "token.json"}"',
        "secretsmanager": 'type = "secretsmanager"\nsecret_id = "bench/calls"\ncreate = true',
        "ssm": 'type = "ssm"\nparameter = "/bench/calls"',
    }
    parts = [
        f'[[credentials]]\nname = "{kind}"\ntoken_url = "{token_url}"\n'
        f'client_id = "{client}"\nclient_secret_env = "{SECRET_ENV}"\n'
        f"[[credentials.targets]]\n{targets[kind]}\n"
        for kind, (client, _) in KINDS.items()
    ]
    path.write_text("\n".join(parts))


def _snapshot(stub: Any, proxy: FaultProxy) -> tuple[int, int]:
    return len(stub.requests()), len(proxy.requests())


def _count(stub: Any, proxy: FaultProxy, since: tuple[int, int]) -> dict[str, Count]:
    tokens = stub.requests()[since[0] :]
    aws = proxy.requests()[since[1] :]
    out: dict[str, Count] = {}
    for kind, (client, prefix) in KINDS.items():
        ops = [
            r.target.split(".", 1)[1]
            for r in aws
            if prefix and r.target and r.target.startswith(prefix)
        ]
        out[kind] = Count(
            token=sum(1 for r in tokens if r.client_id == client),
            aws=len(ops),
            ops=", ".join(ops),
        )
    return out


def steady(stub: Any, proxy: FaultProxy, since: tuple[int, int]) -> dict[str, SteadyCount]:
    tokens = stub.requests()[since[0] :]
    aws = proxy.requests()[since[1] :]
    out: dict[str, SteadyCount] = {}
    for kind, (client, prefix) in KINDS.items():
        times = sorted(r.time for r in tokens if r.client_id == client)
        calls = sorted(
            (r.time, r.target.split(".", 1)[1])
            for r in aws
            if prefix and r.target and r.target.startswith(prefix)
        )
        windows = []
        for a, b in zip(times, times[1:], strict=False):
            windows.append([op for t, op in calls if a - 1.0 <= t < b - 1.0])
        before_first = [op for t, op in calls if times and t < times[0] - 1.0]
        sequences = collections.Counter(", ".join(w) for w in windows)
        out[kind] = SteadyCount(
            rotations=len(windows),
            token_per_rotation=1.0 if windows else float("nan"),
            aws_per_rotation=sum(len(w) for w in windows) / len(windows)
            if windows
            else float("nan"),
            ops=sequences.most_common(1)[0][0] if sequences else "",
            daemon_start_ops=", ".join(before_first),
            daemon_start_aws=len(before_first),
        )
    return out


def run(moto: MotoProcess, stub: Any, *, quick: bool = False) -> CallsResult:
    moto.reset()
    stub.set_access_token_lifespan(4)
    workdir = SCRATCH / "calls"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "token.json").unlink(missing_ok=True)
    config = workdir / "rotator.toml"
    write_config(config, stub.token_url, workdir)
    rotator = str(Path(sys.executable).parent / "rotator")
    result: dict[str, dict[str, Count]] = {}
    with FaultProxy(moto.endpoint) as proxy:
        env = {
            **base_env(),
            **aws_env(proxy.url),
            SECRET_ENV: CLIENT_SECRET,
            # 4 s tokens are far past the Secrets Manager version quota, which moto lacks:
            # without this the quota gate refuses the target before any write (exit 2)
            "ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY": "1000000",
        }
        for key, args in (
            ("startup_empty", ["once"]),
            ("startup_fresh", ["once"]),
            ("once_force", ["once", "--force"]),
        ):
            if key == "once_force":
                # Expiries are whole seconds and a store keeps a token that expires no
                # earlier: a forced rotation in the same second as the last one adopts.
                time.sleep(1.1)
            since = _snapshot(stub, proxy)
            ran = measure([rotator, "--config", str(config), *args], env)
            if ran.returncode != 0:
                raise RuntimeError(f"rotator {' '.join(args)} failed (exit {ran.returncode})")
            result[key] = _count(stub, proxy, since)
        since = _snapshot(stub, proxy)
        with (workdir / "daemon.log").open("wb") as log:
            proc = subprocess.Popen(
                [rotator, "--config", str(config), "run"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            time.sleep(8.0 if quick else 14.0)
        finally:
            stop_process(proc)
        per_rotation = steady(stub, proxy, since)
    return CallsResult(
        startup_empty=result["startup_empty"],
        startup_fresh=result["startup_fresh"],
        once_force=result["once_force"],
        steady=per_rotation,
        lambda_pattern=LAMBDA_PATTERN,
    )
