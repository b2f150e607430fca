"""2. Steady-state CPU per rotation, per target type, ours separated from the HTTP calls.

* total: ``CredentialRotator.rotate(force=True)`` built by ``rotator.app.build``, with real
  HTTP to the stub and moto, timed with the calling thread's CPU clock (the stub's
  threads and moto's process are not counted);
* ours: the same rotator with the network replaced by in-memory fakes (``fakes.py``):
  what is left is validation, serialisation, store logic and logging;
* ours in the daemon: the real ``Daemon`` (APScheduler) running many fake-I/O
  credentials with 1 s tokens, process CPU divided by rotations: scheduling included;
* a cProfile (thread CPU clock) of the real-HTTP loop, self time grouped by package.

Every figure is also taken with the process-wide secret registry full (4,096 entries,
its cap), the state a long-running daemon reaches: each log line is scrubbed against it.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import secrets
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from rotator import logs
from rotator.app import App, build
from rotator.clock import SystemClock
from rotator.config import Settings, from_mapping
from rotator.retry import Backoff
from rotator.rotation import NullObserver
from rotator.scheduler import Daemon
from rotator.secret import REGISTRY, register
from tests.bench.fakes import CannedSession, FakeAwsClients
from tests.bench.peers import CLIENT_SECRET, SCRATCH, MotoProcess, aws_env
from tests.bench.sections.steady import Cpu, DaemonCpu, Registry, SteadyResult, TargetCpu

CLIENT_ID = "bench-steady"
SECRET_ENV = "BENCH_CLIENT_SECRET"
TARGETS = ("file", "secretsmanager", "ssm")
REGISTRY_CAP = 4096


class SteppingClock(SystemClock):
    """The system clock, moved 2 s on before each forced rotation.

    Token instants are whole seconds and a store keeps a published token that expires
    no earlier than the new one, so back-to-back forced rotations within one second
    would adopt instead of write. Stepping the clock makes every new token expire
    later: each measured rotation fetches *and* writes, as a scheduled one does.
    """

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return super().now() + self.offset

    def step(self) -> None:
        self.offset += timedelta(seconds=2)


class Outcomes(NullObserver):
    """Counts publish outcomes, to check that every measured rotation wrote."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def publish(self, credential: str, target: str, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def rotation(self, credential: str, result: str) -> None:
        key = f"rotation_{result}"
        self.counts[key] = self.counts.get(key, 0) + 1


def _target(kind: str, ref: str) -> dict[str, Any]:
    key = {"file": "path", "secretsmanager": "secret_id", "ssm": "parameter"}[kind]
    out: dict[str, Any] = {"type": kind, key: ref}
    if kind == "secretsmanager":
        out["create"] = True
    return out


def settings_for(
    token_url: str, targets: list[tuple[str, str]], names: list[str] | None = None
) -> Settings:
    names = names or [f"c{i:04d}" for i in range(len(targets))]
    return from_mapping(
        {
            "credentials": [
                {
                    "name": name,
                    "token_url": token_url,
                    "client_id": CLIENT_ID,
                    "client_secret_env": SECRET_ENV,
                    "targets": [_target(kind, ref)],
                }
                for name, (kind, ref) in zip(names, targets, strict=True)
            ]
        },
        source="bench",
    )


def _ref(kind: str, workdir: Path, name: str) -> str:
    if kind == "file":
        return str(workdir / f"{name}.json")
    if kind == "ssm":
        return f"/bench/steady/{name}"
    return f"bench/steady/{name}"


def cpu_per_call(
    fn: Callable[[], Any], n: int, warmup: int = 5, outcomes: Outcomes | None = None
) -> Cpu:
    for _ in range(warmup):
        fn()
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(n):
        c0, w0 = time.thread_time(), time.perf_counter()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return Cpu(
        cpu_ms=statistics.median(cpu) * 1000,
        cpu_mean_ms=statistics.fmean(cpu) * 1000,
        wall_ms=statistics.median(wall) * 1000,
        n=n,
        outcomes=dict(outcomes.counts) if outcomes is not None else {},
    )


# ---------------------------------------------------------------- profile grouping

_GROUPS = (
    ("rotator (ours)", ("/rotator/",)),
    ("botocore/boto3", ("/botocore/", "/boto3/", "/s3transfer/", "/jmespath/", "/dateutil/")),
    ("requests/urllib3", ("/requests/", "/urllib3/", "/idna/", "/charset_normalizer/")),
    (
        "os.environ, collections.abc, urllib.request",
        ("<frozen os>", "<frozen _collections_abc>", "/urllib/request.py"),
    ),
    (
        "stdlib HTTP (http.client, socket, ssl, email)",
        ("/http/", "/socket.py", "/ssl.py", "/email/", "/selectors.py", "/urllib/"),
    ),
    ("logging", ("/logging/",)),
    ("json", ("/json/",)),
)


def _group(filename: str) -> str:
    for name, needles in _GROUPS:
        if any(n in filename for n in needles):
            return name
    return "other stdlib"


def profile_groups(fn: Callable[[], Any], n: int) -> dict[str, float]:
    """Self CPU time by package, in ms per call; C functions count for their caller."""
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    for _ in range(n):
        fn()
    profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for (filename, _line, _name), (_cc, _nc, tt, _ct, callers) in stats.items():
        if filename != "~":
            group = _group(filename)
            out[group] = out.get(group, 0.0) + tt
            continue
        for caller, edge in callers.items():  # a builtin: charge each caller's share
            group = _group(caller[0])
            out[group] = out.get(group, 0.0) + edge[2]
    return {k: v * 1000 / n for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


# ---------------------------------------------------------------- the measurements


def _fill_registry() -> None:
    for _ in range(REGISTRY_CAP):
        register(secrets.token_urlsafe(600))  # the size of the stub's JWTs


def _stepper(app: App, clock: SteppingClock) -> Callable[[], Any]:
    rotator = app.rotator(app.settings.credentials[0])

    def step() -> Any:
        clock.step()
        return rotator.rotate(force=True)

    return step


def _app(token_url: str, kind: str, workdir: Path, name: str, **kw: Any) -> App:
    settings = settings_for(token_url, [(kind, _ref(kind, workdir, name))], [name])
    return build(settings, env={SECRET_ENV: CLIENT_SECRET}, **kw)


def ours_in_daemon(
    body: bytes, *, credentials: int = 100, seconds: float = 6.0, lifespan: int = 3
) -> DaemonCpu:
    """Process CPU per step of the real Daemon (APScheduler) over fake I/O."""
    settings = settings_for(
        "http://127.0.0.1:9/token",
        [("ssm", f"/bench/daemon/{i}") for i in range(credentials)],
    )
    outcomes = Outcomes()
    app = build(
        settings,
        env={SECRET_ENV: CLIENT_SECRET},
        session=CannedSession(body, expires_in=lifespan),
        aws=FakeAwsClients(),
        observer=outcomes,
    )
    rotators = [app.rotator(c) for c in settings.credentials]
    daemon = Daemon(
        rotators,
        clock=SystemClock(),
        backoff=Backoff(),
        observer=app.observer,
        stop_event=threading.Event(),
        max_workers=min(32, credentials + 1),
    )

    def steps() -> tuple[int, int]:
        counts = dict(outcomes.counts)
        rotated = counts.get("rotation_rotated", 0)
        return rotated, sum(v for k, v in counts.items() if k.startswith("rotation_"))

    daemon.start()
    try:
        time.sleep(lifespan)  # past the start-up burst and into the steady rhythm
        (r0, s0), c0, w0 = steps(), time.process_time(), time.perf_counter()
        time.sleep(seconds)
        (r1, s1), c1, w1 = steps(), time.process_time(), time.perf_counter()
    finally:
        daemon.shutdown()
    count = max(1, s1 - s0)
    return DaemonCpu(
        cpu_ms_per_rotation=(c1 - c0) * 1000 / count,
        rotations=count,
        rotated=r1 - r0,
        rotations_per_s=count / (w1 - w0),
        credentials=credentials,
        lifespan_s=lifespan,
    )


def run(moto: MotoProcess, stub: Any, *, n: int = 150, quick: bool = False) -> SteadyResult:
    stub.set_access_token_lifespan(300)
    moto.reset()
    os.environ.update(aws_env(moto.endpoint))  # boto3 in this process talks to moto
    SCRATCH.mkdir(exist_ok=True)
    workdir = SCRATCH / "steady"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    logs.setup("info", "text", stream=Path(os.devnull).open("w"))  # noqa: SIM115
    body = requests.post(
        stub.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        timeout=10,
    ).content

    def ours(kind: str) -> Cpu:
        clock, outcomes = SteppingClock(), Outcomes()
        app = _app(
            "http://127.0.0.1:9/token",
            kind,
            workdir,
            f"fake-{kind}-{secrets.token_hex(3)}",
            session=CannedSession(body),
            aws=FakeAwsClients(),
            clock=clock,
            observer=outcomes,
        )
        return cpu_per_call(_stepper(app, clock), n * 4, warmup=20, outcomes=outcomes)

    def real(kind: str, rounds: int) -> Cpu:
        clock, outcomes = SteppingClock(), Outcomes()
        app = _app(
            stub.token_url,
            kind,
            workdir,
            f"real-{kind}-{secrets.token_hex(3)}",
            clock=clock,
            observer=outcomes,
        )
        return cpu_per_call(_stepper(app, clock), rounds, outcomes=outcomes)

    def profiled(kind: str, rounds: int) -> dict[str, float]:
        clock = SteppingClock()
        app = _app(
            stub.token_url, kind, workdir, f"prof-{kind}-{secrets.token_hex(3)}", clock=clock
        )
        step = _stepper(app, clock)
        step()  # the first write creates the secret / parameter / file
        return profile_groups(step, rounds)

    registry_at_start = len(list(REGISTRY.values()))
    ours_cpu = {kind: ours(kind) for kind in TARGETS}
    daemon_ours = ours_in_daemon(body, seconds=3.0 if quick else 6.0)
    total: dict[str, Cpu] = {}
    profile: dict[str, dict[str, float]] = {}
    for kind in TARGETS:
        total[kind] = real(kind, n)
        profile[kind] = profiled(kind, max(30, n // 3))
    registry_before_fill = len(list(REGISTRY.values()))
    _fill_registry()
    full: dict[str, tuple[Cpu, Cpu]] = {}
    for kind in TARGETS:
        full[kind] = (ours(kind), real(kind, max(30, n // 3)))
    daemon_full = ours_in_daemon(body, seconds=3.0 if quick else 6.0)
    # log lines per rotation and their cost against the full registry
    record_text = (
        "published credential=c0001 target=ssm:/bench/steady/c0001 expires_at=2026-11-29T00:26:02Z"
    )
    t0 = time.thread_time()
    for _ in range(200):
        REGISTRY.scrub(record_text)
    scrub_ms = (time.thread_time() - t0) * 1000 / 200
    return SteadyResult(
        n=n,
        targets={
            kind: TargetCpu(
                ours=ours_cpu[kind],
                total=total[kind],
                profile_ms=profile[kind],
                ours_full_registry=full[kind][0],
                total_full_registry=full[kind][1],
            )
            for kind in TARGETS
        },
        daemon_ours=daemon_ours,
        daemon_ours_full_registry=daemon_full,
        scrub_full_registry_ms=scrub_ms,
        registry=Registry(
            at_start=registry_at_start,
            before_fill=registry_before_fill,
            cap=REGISTRY_CAP,
            token_chars=len(body),
        ),
    )
