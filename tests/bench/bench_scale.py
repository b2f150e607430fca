"""Issue 9's benchmark: 5,000 SSM credentials, one ``rotator run``, AWS's limits enforced.

One daemon (the real CLI, a child process) with N credentials, each publishing to its own
SSM parameter; tokens from the Keycloak stub in its own process (``--lifespan``, 300 s:
Keycloak's default); AWS is a moto server in its own process behind
``rotator.testing.AwsLimitsProxy`` (in this process), which throttles PutParameter and SSM
reads with token buckets and answers ``ThrottlingException`` as AWS does.

The run, in one daemon's life:

1. **Pre-publish** N fresh tokens straight to moto (not through the proxy: planting is not
   under test). Their lifetimes are chosen so that each one's planned refresh (70-75 % of
   its life) falls at a uniform random instant of a window ``delay`` to
   ``delay + window`` seconds from now: none is due at start-up, nothing is due for a while
   after it, then refreshes come at N / window a second, the steady rate of N tokens of
   ``window / 0.725`` seconds.
2. **Start-up**: launch ``rotator run``; the AWS calls the proxy sees until the log shows
   the last of N adoptions, and the time from launch to that line.
3. **Idle**: from 2 s after the last adoption until 3 s before the first refresh is due
   (at most 60 s), the daemon's CPU time (``/proc/<pid>/stat``, every thread, exited ones
   included).
4. **Steady**: every credential refreshes once (a token from the stub, a PutParameter);
   scheduling lag from the log (``bench.scale_stats``), throttling at the proxy.

Readers (one thread, straight to moto so that their calls neither count in the daemon's
figures nor take from its rate) read 10 random parameters with GetParameters every
``READ_EVERY`` seconds throughout, and count tokens whose ``exp`` (the JWT claim and the
document's ``expires_at``, the earlier of the two) is past when the answer arrives.

    python -m tests.bench.bench_scale [N]     # prints the BENCHMARKS.md section
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rotator.clock import parse_instant
from rotator.testing import AwsLimitsProxy
from rotator.token import jwt_claims
from tests.bench.bench_process import CLIENT_ID, stub_process
from tests.bench.peers import (
    CLIENT_SECRET,
    ROOT,
    SCRATCH,
    MotoProcess,
    ProcStats,
    aws_client,
    aws_env,
    base_env,
    stop_process,
)
from tests.bench.scale_stats import (
    AWS_READS,
    AWS_WRITES,
    PACER_READS,
    PACER_WRITES,
    REFRESH_AT,
    ScaleResult,
    lags,
    parse_log,
    percentile,
)

__all__ = ["Plan", "ScaleResult", "plan_for", "run", "run_scale"]

SECRET_ENV = "BENCH_CLIENT_SECRET"
LIFESPAN = 300  # the stub's tokens: Keycloak's default access-token lifespan
READ_EVERY = 0.2  # seconds between two reader calls (10 parameters each)
MOTO_NOTE = (
    "moto runs as `tests.bench.moto_main`: moto's server lists its own package directory "
    "on every request to find the backend (under a global lock); profiled with py-spy that "
    "was ~20 % of its CPU (PutParameter 4.5 -> 2.8 ms of server CPU once the listing is "
    "taken once). Everything else is moto as it ships."
)


@dataclass(frozen=True)
class Plan:
    """One run's shape: credentials, when the pre-published tokens come due (``delay`` to
    ``delay + window`` seconds after they are written), and the scale of AWS's rates."""

    credentials: int
    delay: float
    window: float
    write_scale: float
    read_scale: float
    lifespan: int = LIFESPAN

    @property
    def rates(self) -> dict[str, float]:
        return {
            "proxy_write": AWS_WRITES * self.write_scale,
            "proxy_read": AWS_READS * self.read_scale,
            "pacer_write": PACER_WRITES * self.write_scale,
            "pacer_read": PACER_READS * self.read_scale,
        }


def plan_for(n: int) -> Plan:
    """At most ~28 refreshes a second (what 5,000 tokens living 250 s need; this shared
    2-CPU machine keeps up with that, moto included), and 50-120 s before the first
    is due: pre-publishing (~20-35 s at 5,000), start-up and an idle minute fit in it.
    Writes are AWS's and rotator's rates times 20 (pacer 40/s for ~28 needed), reads times
    10 (pacer 300/s: 500 GetParameters take >= 1.7 s; SSM's higher throughput allows up to
    3,000 reads/s)."""
    share = min(1.0, n / 5000)
    return Plan(
        credentials=n,
        delay=50 + 70 * share,
        window=max(30.0, n / 28),
        write_scale=20.0,
        read_scale=10.0,
    )


def name(k: int) -> str:
    return f"c{k:05d}"


def parameter(k: int) -> str:
    return f"/bench/scale/{name(k)}"


def write_config(path: Path, token_url: str, n: int) -> None:
    path.write_text(
        "".join(
            f'[[credentials]]\nname = "{name(k)}"\ntoken_url = "{token_url}"\n'
            f'client_id = "{CLIENT_ID}"\nclient_secret_env = "{SECRET_ENV}"\n'
            f'[[credentials.targets]]\ntype = "ssm"\nparameter = "{parameter(k)}"\n\n'
            for k in range(n)
        )
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_JWT_HEADER = _b64(b'{"alg":"none"}')


def fake_jwt(k: int, issued: int, expires: int) -> str:
    """A JWT-shaped token with ``iat``/``exp`` claims (unsigned: nobody verifies it)."""
    claims = {"sub": name(k), "iat": issued, "exp": expires, "pre": "published"}
    return f"{_JWT_HEADER}.{_b64(json.dumps(claims).encode())}.x"


def document(k: int, issued: int, expires: int) -> str:
    def instant(t: int) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return json.dumps(
        {
            "access_token": fake_jwt(k, issued, expires),
            "token_type": "Bearer",
            "expires_at": instant(expires),
            "issued_at": instant(issued),
        },
        separators=(",", ":"),
    )


def prepublish(ssm: Any, plan: Plan, rng: random.Random) -> tuple[float, float, float]:
    """Write every credential's fresh token; (seconds it took, earliest and latest instant
    a refresh may be due)."""
    started = time.time()
    issued = int(started)
    lives = [
        math.ceil((plan.delay + rng.random() * plan.window) / REFRESH_AT)
        for _ in range(plan.credentials)
    ]

    def put(k: int) -> None:
        ssm.put_parameter(
            Name=parameter(k),
            Value=document(k, issued, issued + lives[k]),
            Type="SecureString",
            Overwrite=True,
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(plan.credentials)))
    earliest = issued + min(lives) * 0.70
    latest = issued + max(lives) * 0.75
    return time.time() - started, earliest, latest


@dataclass
class Reads:
    calls: int = 0
    tokens: int = 0
    expired: int = 0
    missing: int = 0
    errors: int = 0
    min_left: float = math.inf


def expiry_of(value: str) -> float:
    """The earlier of the document's ``expires_at`` and the token's ``exp`` claim."""
    doc = json.loads(value)
    expires = parse_instant(str(doc["expires_at"])).timestamp()
    claims = jwt_claims(str(doc["access_token"])) or {}
    exp = claims.get("exp")
    return min(expires, float(exp)) if isinstance(exp, int | float) else expires


def read_loop(ssm: Any, n: int, reads: Reads, stop: threading.Event) -> None:
    rng = random.Random(11)
    while not stop.wait(READ_EVERY):
        names = [parameter(k) for k in rng.sample(range(n), min(n, 10))]
        try:
            answer = ssm.get_parameters(Names=names, WithDecryption=True)
        except Exception:  # a reader that cannot read counts it and goes on
            reads.errors += 1
            continue
        now = time.time()
        reads.calls += 1
        reads.missing += len(answer.get("InvalidParameters", []))
        for param in answer["Parameters"]:
            left = expiry_of(param["Value"]) - now
            reads.tokens += 1
            reads.min_left = min(reads.min_left, left)
            if left <= 0:
                reads.expired += 1


class LogTail:
    """Counts the daemon's log lines that say ``marker`` as they are written."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self.count: dict[str, int] = {}
        self.last: dict[str, str] = {}  # marker -> its last line

    def poll(self, *markers: str) -> None:
        with self._path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            line = raw.decode(errors="replace")
            for marker in markers:
                if marker in line:
                    self.count[marker] = self.count.get(marker, 0) + 1
                    self.last[marker] = line


def _log_time(line: str) -> float:
    return datetime.fromisoformat(line.split("Z", 1)[0] + "+00:00").timestamp()


def _wait(until: float, proc: subprocess.Popen[bytes]) -> None:
    while time.time() < until and proc.poll() is None:
        time.sleep(min(0.5, max(0.0, until - time.time())))


def _tasks(pid: int) -> set[str]:
    return {p.name for p in Path(f"/proc/{pid}/task").iterdir()}


def idle_cpu_between(
    stats: ProcStats, proc: subprocess.Popen[bytes], until: float
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the daemon from now until ``until``: on-CPU
    nanoseconds of its threads (schedstat) when no thread came or went, else the 10 ms
    ticks of /proc/<pid>/stat (which keep exited threads' time)."""
    tasks0, ns0, ticks0, t0 = _tasks(stats.pid), stats.cpu_ns(), stats.cpu_seconds(), time.time()
    _wait(until, proc)
    tasks1, ns1, ticks1, t1 = _tasks(stats.pid), stats.cpu_ns(), stats.cpu_seconds(), time.time()
    cpu = (ns1 - ns0) / 1e9 if tasks0 == tasks1 else ticks1 - ticks0
    return cpu, t1 - t0


def run_scale(plan: Plan, *, seed: int = 5) -> ScaleResult:
    n = plan.credentials
    workdir = SCRATCH / f"scale-{n}"
    workdir.mkdir(parents=True, exist_ok=True)
    config_path, log_path = workdir / "rotator.toml", workdir / "daemon.log"
    load_before = os.getloadavg()
    rates = plan.rates
    proxy_rates: dict[str, float | None] = {
        "ssm:write": rates["proxy_write"],
        "ssm:read": rates["proxy_read"],
    }
    with (
        MotoProcess("tests.bench.moto_main") as moto,
        stub_process(plan.lifespan) as token_url,
        AwsLimitsProxy(moto.endpoint, rates=proxy_rates) as proxy,
    ):
        ssm = aws_client("ssm", moto.endpoint)
        took, first_due, last_due = prepublish(ssm, plan, random.Random(seed))
        print(f"[scale] pre-published {n} tokens in {took:.1f} s", flush=True)
        write_config(config_path, token_url, n)
        env = {
            **base_env(),
            **aws_env(proxy.url),
            SECRET_ENV: CLIENT_SECRET,
            "ROTATOR_SSM_WRITES_PER_SECOND": f"{rates['pacer_write']:g}",
            "ROTATOR_SSM_READS_PER_SECOND": f"{rates['pacer_read']:g}",
        }
        cmd = [str(Path(sys.executable).parent / "rotator"), "--config", str(config_path), "run"]
        reads, stop = Reads(), threading.Event()
        reader = threading.Thread(target=read_loop, args=(ssm, n, reads, stop), daemon=True)
        with log_path.open("wb") as log_file:
            launched = time.time()
            proc = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
            )
        stats = ProcStats(proc.pid)
        reader.start()
        tail = LogTail(log_path)
        try:
            # 2. start-up: until the log shows every adoption (or a step that was not one)
            deadline = launched + max(60.0, first_due - launched)
            while time.time() < deadline and proc.poll() is None:
                tail.poll(" adopted credential=", " rotated credential=", "rotation failed")
                if sum(tail.count.values()) >= n:
                    break
                time.sleep(0.1)
            startup_cpu = stats.cpu_seconds()
            adopted = tail.count.get(" adopted credential=", 0)
            last_line = tail.last.get(" adopted credential=")
            adopted_at = _log_time(last_line) if last_line else math.nan
            startup = [r for r in proxy.requests() if launched <= r.time <= adopted_at + 0.05]
            # 3. idle: nothing is due
            idle_from = max(time.time(), adopted_at + 2.0)
            idle_to = min(first_due - 3.0, idle_from + 60.0)
            idle_cpu = idle_window = 0.0
            if idle_to - idle_from >= 10:
                _wait(idle_from, proc)
                idle_cpu, idle_window = idle_cpu_between(stats, proc, idle_to)
            # 4. steady: every credential refreshes once
            while time.time() < last_due + 60 and proc.poll() is None:
                tail.poll(" rotated credential=")
                if tail.count.get(" rotated credential=", 0) >= n and time.time() > last_due:
                    break
                time.sleep(0.5)
            time.sleep(2.0)  # the last publishes' log lines, and a few more reads
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited early; see {log_path}")
            load_end = os.getloadavg()
            _rss, hwm = stats.memory_kib()
        finally:
            stop.set()
            reader.join(10)
            stop_process(proc)
        requests = proxy.requests()
        throttled = proxy.refused("ThrottlingException")
    steps = parse_log(log_path.read_text(errors="replace"))
    lag = lags(steps)
    targets = [r.target or "" for r in startup]
    after = [r.target or "" for r in requests if r.time > adopted_at + 0.05]
    rotated = [s for chain in steps.values() for s in chain[1:] if s.action == "rotated"]
    failures = sum(1 for chain in steps.values() for s in chain if s.action == "failed")
    steady_s = max((s.end for s in rotated), default=first_due) - min(
        (s.start for s in rotated), default=first_due
    )
    return ScaleResult(
        date=datetime.fromtimestamp(launched, UTC).strftime("%Y-%m-%d %H:%M"),
        credentials=n,
        lifespan_s=plan.lifespan,
        rates=rates,
        load_average=load_end,
        load_before=load_before,
        tokens_read=reads.tokens,
        expired_seen=reads.expired,
        min_left_s=reads.min_left,
        throttled=throttled,
        lag_n=len(lag),
        lag_p50_ms=percentile(lag, 0.5) * 1000,
        lag_p99_ms=percentile(lag, 0.99) * 1000,
        lag_max_ms=max(lag, default=math.nan) * 1000,
        startup_calls=len(startup),
        startup_get_parameters=targets.count("AmazonSSM.GetParameters"),
        startup_other_calls=len(targets) - targets.count("AmazonSSM.GetParameters"),
        startup_adopted=adopted,
        startup_s=adopted_at - launched,
        startup_cpu_s=startup_cpu,
        rss_peak_mib=hwm / 1024,
        idle_window_s=idle_window,
        idle_cpu_s=idle_cpu,
        rotations=len(rotated),
        failures=failures,
        steady_s=steady_s,
        puts=after.count("AmazonSSM.PutParameter"),
        gets=after.count("AmazonSSM.GetParameter") + after.count("AmazonSSM.GetParameters"),
        moto_note=MOTO_NOTE,
        notes=(
            startup_timeline(log_path, launched, startup, adopted_at),
            f"Reader calls: {reads.calls:,} ({reads.errors} failed, {reads.missing} "
            f"parameters missing); pre-publishing took {took:.1f} s.",
        ),
    )


def startup_timeline(log_path: Path, launched: float, startup: list[Any], adopted_at: float) -> str:
    """Where the start-up's wall time went, from the log and the proxy's record."""
    reads = [r.time for r in startup if r.target == "AmazonSSM.GetParameters"]
    started = math.nan
    with log_path.open(errors="replace") as log:
        for line in log:
            if " daemon started " in line:
                started = _log_time(line)
                break
    if not reads:
        return "Start-up timeline: no batch reads seen."
    return (
        f"Start-up timeline (seconds from launch): first GetParameters at "
        f"{reads[0] - launched:.1f} (interpreter, imports, configuration, building the "
        f"rotators), last at {reads[-1] - launched:.1f} ({len(reads)} batch reads, 8 in "
        f"flight, paced), `daemon started` at {started - launched:.1f}, last adoption at "
        f"{adopted_at - launched:.1f} (each credential's seeded reading adopted as the "
        "daemon starts, its refresh scheduled: an APScheduler job and a log line each)."
    )


def run(quick: bool) -> ScaleResult:
    """The benchmark at 300 credentials (``quick``) or 5,000."""
    return run_scale(plan_for(300 if quick else 5000))


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 5000
    result = run_scale(plan_for(n))
    out = SCRATCH / f"scale-{n}" / "result.json"
    with contextlib.suppress(OSError):
        out.write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    print(result.markdown())
    return 0 if result.all_met else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
