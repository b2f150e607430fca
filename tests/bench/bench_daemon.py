"""3. Daemon footprint: ``rotator run`` with 1, 100 and 1,000 credentials on SSM targets.

Each run is a child process (``daemon_main``: the ``run`` command through rotator's
composition root, recording planned starts) against the stub (30 s tokens, one client
per credential) and the moto server in its own process. While it runs, /proc is read
every half second (RSS, CPU) and a sample of the published parameters every few
seconds; at the end every parameter is read back. From the logs and the plan record:
the lag between each planned and actual start, and whether every credential's next
token was published before the previous one expired.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rotator.clock import parse_instant
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
from tests.bench.sections.daemon import Checked, DaemonResult, DaemonRun, Idle, Lag, Window

SECRET_ENV = "BENCH_CLIENT_SECRET"
_LINE = re.compile(r"^(\S+)Z (\w+)\s+(.*)$")
_STEP = re.compile(
    r"^(rotated|adopted|published) credential=(\S+) expires_at=\S+ next_run=\S+ "
    r"duration_ms=(\d+)$"
)
_PUBLISHED = re.compile(r"^published credential=(\S+) target=\S+ expires_at=(\S+)$")
_FAILED = re.compile(r"^rotation failed credential=(\S+) ")


def client_id(i: int) -> str:
    return f"bench-{i:04d}"


def name(i: int) -> str:
    return f"c{i:04d}"


def parameter(i: int) -> str:
    return f"/bench/daemon/{name(i)}"


def write_config(path: Path, token_url: str, n: int) -> None:
    parts = []
    for i in range(n):
        parts.append(
            f'[[credentials]]\nname = "{name(i)}"\ntoken_url = "{token_url}"\n'
            f'client_id = "{client_id(i)}"\nclient_secret_env = "{SECRET_ENV}"\n'
            f'[[credentials.targets]]\ntype = "ssm"\nparameter = "{parameter(i)}"\n'
        )
    path.write_text("\n".join(parts))


def _ts(text: str) -> float:
    return datetime.fromisoformat(text + "+00:00").timestamp()


@dataclass
class Sample:
    t: float
    rss_kib: int
    hwm_kib: int
    cpu_ns: int
    cpu_s: float
    threads: int


@dataclass
class Observed:
    samples: list[Sample] = field(default_factory=list)
    during: Checked = field(default_factory=Checked)


def read_parameters(ssm: Any, indices: list[int], stub: Any) -> Checked:
    now = time.time()
    checked = expired = inactive = missing = 0
    min_left = float("inf")
    for start in range(0, len(indices), 10):
        chunk = [parameter(i) for i in indices[start : start + 10]]
        response = ssm.get_parameters(Names=chunk, WithDecryption=True)
        missing += len(response.get("InvalidParameters", []))
        for param in response["Parameters"]:
            doc = json.loads(param["Value"])
            left = parse_instant(doc["expires_at"]).timestamp() - now
            checked += 1
            min_left = min(min_left, left)
            expired += left <= 0
            inactive += not stub.is_active(doc["access_token"])
    return Checked(checked, expired, inactive, missing, min_left)


def _watch(
    proc: subprocess.Popen[bytes],
    stats: ProcStats,
    observed: Observed,
    stop: threading.Event,
    ssm: Any,
    stub: Any,
    n: int,
    sample_every: float,
) -> None:
    next_store_check = time.monotonic() + sample_every
    rng = random.Random(7)
    while not stop.is_set() and proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            rss, hwm = stats.memory_kib()
            observed.samples.append(
                Sample(time.time(), rss, hwm, stats.cpu_ns(), stats.cpu_seconds(), stats.threads())
            )
        if time.monotonic() >= next_store_check:
            next_store_check += sample_every
            picked = rng.sample(range(n), min(n, 50))
            with contextlib.suppress(Exception):  # not published yet at start-up
                observed.during = observed.during.plus(read_parameters(ssm, picked, stub))
        stop.wait(0.5)


def parse_log(text: str) -> dict[str, Any]:
    steps: dict[str, list[tuple[float, float, str]]] = {}  # cred -> (start, end, action)
    publishes: dict[str, list[tuple[float, float]]] = {}  # cred -> (at, expires_at)
    failures: dict[str, list[float]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        at = _ts(m.group(1))
        message = m.group(3)
        if s := _STEP.match(message):
            steps.setdefault(s.group(2), []).append((at - int(s.group(3)) / 1000, at, s.group(1)))
        elif p := _PUBLISHED.match(message):
            publishes.setdefault(p.group(1), []).append((at, parse_instant(p.group(2)).timestamp()))
        elif f := _FAILED.match(message):
            failures.setdefault(f.group(1), []).append(at)
    return {"steps": steps, "publishes": publishes, "failures": failures}


def parse_plans(text: str) -> dict[str, list[float]]:
    plans: dict[str, list[float]] = {}
    for line in text.splitlines():
        cred, _, at = line.partition(" ")
        if at:
            plans.setdefault(cred, []).append(float(at))
    return plans


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_daemon(
    moto: MotoProcess,
    stub: Any,
    n: int,
    *,
    seconds: float,
    lifespan: float,
    cli: bool = False,
) -> DaemonRun:
    moto.reset()
    stub.set_access_token_lifespan(lifespan)
    workdir = SCRATCH / f"daemon-{n}{'-cli' if cli else ''}"
    workdir.mkdir(parents=True, exist_ok=True)
    config_path, plans_path, log_path = (
        workdir / "rotator.toml",
        workdir / "plans.txt",
        workdir / "daemon.log",
    )
    plans_path.unlink(missing_ok=True)
    write_config(config_path, stub.token_url, n)
    env = {**base_env(), **aws_env(moto.endpoint), SECRET_ENV: CLIENT_SECRET}
    if cli:
        cmd = [
            str(Path(sys.executable).parent / "rotator"),
            "--config",
            str(config_path),
            "run",
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "tests.bench.daemon_main",
            "--config",
            str(config_path),
            "--plans",
            str(plans_path),
        ]
    ssm = aws_client("ssm", moto.endpoint)
    observed = Observed()
    stop = threading.Event()
    tokens_before = stub.count(grant_type="client_credentials")
    with log_path.open("wb") as log_file:
        started = time.time()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    stats = ProcStats(proc.pid)
    watcher = threading.Thread(
        target=_watch,
        args=(proc, stats, observed, stop, ssm, stub, n, 5.0),
        daemon=True,
    )
    watcher.start()
    final = Checked()
    try:
        deadline = started + seconds
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"daemon with {n} credentials exited early; see {log_path}")
        rss_end, hwm_end = stats.memory_kib()
        threads_end = stats.threads()
        final = read_parameters(ssm, list(range(n)), stub)
    finally:
        stop.set()
        watcher.join(5)
        usage = stop_process(proc)
    ended = time.time()
    tokens = stub.count(grant_type="client_credentials") - tokens_before
    log = parse_log(log_path.read_text(errors="replace"))
    plans = parse_plans(plans_path.read_text()) if plans_path.exists() else {}
    return analyse(
        n=n,
        lifespan=lifespan,
        started=started,
        ended=ended,
        observed=observed,
        final=final,
        log=log,
        plans=plans,
        rss_end=rss_end,
        hwm_end=hwm_end,
        threads=threads_end,
        cpu_total=(usage.ru_utime + usage.ru_stime) if usage is not None else float("nan"),
        tokens=tokens,
        cli=cli,
    )


def analyse(
    *,
    n: int,
    lifespan: float,
    started: float,
    ended: float,
    observed: Observed,
    final: Checked,
    log: dict[str, Any],
    plans: dict[str, list[float]],
    rss_end: int,
    hwm_end: int,
    threads: int,
    cpu_total: float,
    tokens: int,
    cli: bool,
) -> DaemonRun:
    steps: dict[str, list[tuple[float, float, str]]] = log["steps"]
    startup_lag: list[float] = []
    steady_lag: list[float] = []
    for cred, planned in plans.items():
        done = steps.get(cred, [])
        failed = len(log["failures"].get(cred, []))
        if failed:
            continue  # a failure consumes a plan without a logged start: skip the chain
        for k, (plan, (start, _end, _action)) in enumerate(zip(planned, done, strict=False)):
            (startup_lag if k == 0 else steady_lag).append(start - plan)
    # start-up burst: until every credential finished its first step
    firsts = [chain[0][1] for chain in steps.values() if chain]
    burst_end = max(firsts) if len(firsts) == n else ended
    starts_after = sorted(s for chain in steps.values() for (s, _e, _a) in chain[1:])
    # publication continuity: each new token published before the previous one expired
    gaps = 0
    min_left = float("inf")
    for chain in log["publishes"].values():
        for (_, prev_exp), (at, _exp) in zip(chain, chain[1:], strict=False):
            min_left = min(min_left, prev_exp - at)
            if at >= prev_exp:
                gaps += 1
    # CPU: steady window from the end of the burst (+1 s) to the last sample
    samples = observed.samples
    window = [s for s in samples if s.t >= burst_end + 1.0]
    steady = None
    if len(window) >= 2:
        a, b = window[0], window[-1]
        rotations = sum(1 for s in starts_after if a.t <= s <= b.t)
        steady = Window(
            seconds=b.t - a.t,
            cpu_pct=(b.cpu_ns - a.cpu_ns) / 1e9 / (b.t - a.t) * 100,
            rotations=rotations,
            cpu_ms_per_rotation=(b.cpu_ns - a.cpu_ns) / 1e6 / rotations
            if rotations
            else float("nan"),
        )
    return DaemonRun(
        credentials=n,
        lifespan_s=lifespan,
        seconds=ended - started,
        cli=cli,
        rss_end_mib=rss_end / 1024,
        hwm_mib=hwm_end / 1024,
        threads=threads,
        cpu_total_s=cpu_total,
        cpu_avg_pct=cpu_total / (ended - started) * 100,
        token_requests=tokens,
        steps=sum(len(c) for c in steps.values()),
        failures=sum(len(f) for f in log["failures"].values()),
        startup_burst_s=burst_end - started,
        lag_startup_ms=_lag(startup_lag),
        lag_ms=_lag(steady_lag),
        publish_gaps=gaps,
        min_left_at_republish_s=min_left,
        during=observed.during,
        final=final,
        steady=steady,
        idle=idle_cpu(samples, steps) if n == 1 else None,
        rss_series=tuple((s.t - started, s.rss_kib / 1024) for s in samples),
    )


def _lag(seconds: list[float]) -> Lag:
    return Lag(
        p50=_pct(seconds, 0.5) * 1000,
        p99=_pct(seconds, 0.99) * 1000,
        max=max(seconds, default=float("nan")) * 1000,
        n=len(seconds),
    )


def idle_cpu(samples: list[Sample], steps: dict[str, list[tuple[float, float, str]]]) -> Idle:
    """CPU between rotations: windows from 1 s after a step ended to 1 s before the next
    (the sum of every thread's schedstat on-CPU time)."""
    chain = next(iter(steps.values()), [])
    busy = 0.0
    seconds = 0.0
    for (_s0, end, _a), (start, _e1, _a1) in zip(chain, chain[1:], strict=False):
        inside = [s for s in samples if end + 1.0 <= s.t <= start - 1.0]
        if len(inside) >= 2:
            busy += (inside[-1].cpu_ns - inside[0].cpu_ns) / 1e9
            seconds += inside[-1].t - inside[0].t
    return Idle(
        seconds=seconds,
        cpu_ms=busy * 1000,
        pct_of_core=busy / seconds * 100 if seconds else float("nan"),
    )


def run(
    moto: MotoProcess,
    stub: Any,
    *,
    quick: bool = False,
    floor_ssm_mib: float | None = None,
    floor_sm_mib: float | None = None,
    token_chars: int = 800,
) -> DaemonResult:
    """The floors (section 1) and the token length (section 2) come from the same run's
    other sections, when they ran: the section compares against them."""
    lifespan = 30.0
    plan = [(1, 30.0 if quick else 70.0), (100, 30.0 if quick else 70.0)]
    plan.append((1000, 45.0 if quick else 95.0))
    runs = [run_daemon(moto, stub, n, seconds=s, lifespan=lifespan) for n, s in plan]
    cli = run_daemon(moto, stub, 1, seconds=15.0 if quick else 25.0, lifespan=lifespan, cli=True)
    return DaemonResult(
        runs=tuple(runs),
        cli_1=cli,
        lifespan_s=lifespan,
        floor_ssm_mib=floor_ssm_mib,
        floor_sm_mib=floor_sm_mib,
        token_chars=token_chars,
    )
