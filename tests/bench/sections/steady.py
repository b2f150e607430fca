"""2. Steady-state CPU per rotation: the result of ``bench_steady.run`` and its section."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tests.bench.section import Goal, num, table

OURS_MS = 2.0  # issue 5: our CPU per rotation


@dataclass(frozen=True)
class Cpu:
    """The calling thread's CPU and the wall time of one step, medians of n."""

    cpu_ms: float
    cpu_mean_ms: float
    wall_ms: float
    n: int
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetCpu:
    ours: Cpu  # fakes at both ends
    total: Cpu  # real HTTP to the stub and moto
    profile_ms: dict[str, float]  # self time by package group, ms per rotation
    ours_full_registry: Cpu
    total_full_registry: Cpu


@dataclass(frozen=True)
class DaemonCpu:
    """The real Daemon over fake I/O: process CPU / steps."""

    cpu_ms_per_rotation: float
    rotations: int
    rotated: int
    rotations_per_s: float
    credentials: int
    lifespan_s: int


@dataclass(frozen=True)
class Registry:
    at_start: int
    before_fill: int
    cap: int
    token_chars: int  # one token's length: what a full registry holds per entry


@dataclass(frozen=True)
class SteadyResult:
    n: int
    targets: dict[str, TargetCpu]  # by target type
    daemon_ours: DaemonCpu
    daemon_ours_full_registry: DaemonCpu
    scrub_full_registry_ms: float
    registry: Registry

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def ours_cpu_ms(self) -> dict[str, float]:
        """Our CPU per rotation by target type: section 6 shows it beside the process's."""
        return {kind: t.ours.cpu_ms for kind, t in self.targets.items()}

    def goals(self) -> list[Goal]:
        worst = max(max(t.ours.cpu_ms, t.ours_full_registry.cpu_ms) for t in self.targets.values())
        daemon = max(
            self.daemon_ours.cpu_ms_per_rotation,
            self.daemon_ours_full_registry.cpu_ms_per_rotation,
        )
        return [
            Goal(
                "our CPU per rotation (validation, scheduling, serialisation, logging)",
                f"<= {OURS_MS:g} ms",
                f"{num(worst, 2)} ms per step, {num(daemon, 2)} ms with the scheduler",
                max(worst, daemon) <= OURS_MS,
            )
        ]

    def markdown(self) -> str:
        rows = [
            [
                kind,
                num(t.total.cpu_ms, 2),
                num(t.total.wall_ms, 1),
                num(t.ours.cpu_ms, 2),
                num(t.total.cpu_ms - t.ours.cpu_ms, 2),
                num(t.ours_full_registry.cpu_ms, 2),
                num(t.total_full_registry.cpu_ms, 2),
            ]
            for kind, t in self.targets.items()
        ]
        d = self.daemon_ours
        rows.append(
            [
                f"daemon, scheduler included ({d.credentials} credentials, "
                f"{d.lifespan_s} s tokens, SSM fakes)",
                "",
                "",
                num(d.cpu_ms_per_rotation, 2),
                "",
                num(self.daemon_ours_full_registry.cpu_ms_per_rotation, 2),
                "",
            ]
        )
        head = ["target", "total CPU ms", "total wall ms", "ours CPU ms", "HTTP clients ms"]
        reg = self.registry
        return "\n".join(
            [
                "## 2. Steady-state CPU per rotation",
                "",
                "In-process, no start-up in it: `rotator.app.build` + "
                "`CredentialRotator.rotate(force=True)`, the clock stepped 2 s before each call "
                "so that every step fetches *and* writes (token instants are whole seconds; a "
                "same-second token would be adopted). CPU is the calling thread's "
                f"(`time.thread_time`), median of {self.n} steps (ours: {self.n * 4}). *Total* "
                "uses real HTTP to the stub and moto; *ours* replaces both ends with in-memory "
                "fakes (`tests/bench/fakes.py`: a canned Keycloak body still parsed by "
                "`TokenClient`, botocore-shaped dicts for the stores), leaving validation, "
                "serialisation, store logic and logging (to /dev/null through rotator's "
                "formatter). *HTTP clients* = total - ours.",
                "",
                *table([*head, "ours, registry full", "total, registry full"], rows),
                "",
                "*Registry full*: rotator keeps every secret it has seen (client secrets, each "
                "access and refresh token) in a process-wide registry of up to "
                f"{reg.cap:,} entries and scrubs each log line against it. A daemon reaches the "
                f"cap after {reg.cap:,} tokens (about 4 rotations each with 1,000 credentials; "
                "~10 days for one credential at 225 s). Scrubbing one log line against a full "
                f"registry costs {num(self.scrub_full_registry_ms, 3)} ms; a rotation logs 2-3 "
                f"lines. The registry also holds ~{reg.cap * reg.token_chars / 1024 / 1024:.1f} "
                "MiB of token strings once full (see the per-credential RSS below).",
                "",
                "The daemon row runs the real `Daemon` (APScheduler, thread pool) over fake I/O "
                "and divides the process CPU by the steps taken: scheduling and the job's log "
                "line included.",
                "",
                "Profile of the real-HTTP step (cProfile with the thread CPU clock, self time by "
                "package, ms per rotation; profiling inflates call-heavy code, so read the "
                "shares):",
                "",
                *self._profile(),
                "",
                "The *os.environ, collections.abc, urllib.request* group is requests' "
                "environment and mapping checks (`isinstance` against `collections.abc` types) "
                "and proxy lookup code. It is not a walk of the environment per call: the "
                "session has `trust_env` off and rotator resolves proxies once per host "
                "(`App.proxies`).",
                "",
            ]
        )

    def _profile(self) -> list[str]:
        groups: list[str] = []
        for t in self.targets.values():
            groups += [g for g in t.profile_ms if g not in groups]
        rows = []
        for kind, t in self.targets.items():
            total = sum(t.profile_ms.values()) or 1.0
            cells = [
                f"{num(t.profile_ms.get(g, 0.0), 2)} ({t.profile_ms.get(g, 0.0) / total:.0%})"
                for g in groups
            ]
            rows.append([kind, *cells])
        return table(["target", *groups], rows)
