"""The pure parts of the 5,000-credential benchmark (``bench_scale``): reading the daemon's
log into rotation steps, the scheduling lag of each step, percentiles, and the typed
result that renders its own BENCHMARKS.md section.

Scheduling lag is read from what ``rotator run`` logs: every step ends with a line

    <time>Z INFO    rotated credential=c00042 expires_at=... next_run=<ms instant> duration_ms=N

so a step started at ``<time> - duration_ms`` and planned the next one for ``next_run``
(to the millisecond). The lag of a step is its start minus the plan the previous step of
the same credential made. A failed step logs ``retry_in=S`` instead: its plan is its own
time plus S (a tenth of a second). The first step of each chain (the daemon's start-up,
planned "now") has no lag: the bound is for a daemon "once started".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from tests.bench.section import Goal

__all__ = [
    "Figure",
    "ScaleResult",
    "Step",
    "lags",
    "parse_log",
    "percentile",
]

_LINE = re.compile(r"^(\S+)Z (\w+)\s+(.*)$")
_STEP = re.compile(
    r"^(\w+) credential=(\S+)(?: reason=\S+)? expires_at=\S+ next_run=(\S+) duration_ms=(\d+)$"
)
_FAILED = re.compile(r"^rotation failed credential=(\S+) .* retry_in=([0-9.]+)s$")


# AWS's rates (calls/s, per account and region) and rotator's default pacers.
AWS_WRITES, AWS_READS = 3.0, 40.0
PACER_WRITES, PACER_READS = 2.0, 30.0
# Where a planned refresh falls in a token's life (Schedule: 75 % minus up to 5 % jitter).
REFRESH_AT = 0.725


def _instant(text: str) -> float:
    """Unix time of a log timestamp or ``next_run`` value (UTC, ``Z`` optional)."""
    return datetime.fromisoformat(text.rstrip("Z") + "+00:00").timestamp()


@dataclass(frozen=True)
class Step:
    """One logged step of one credential: when it started and ended (unix seconds), what
    it did (``rotated``, ``adopted``, ``published``, ``failed``) and when it planned the
    next step (None if it logged no plan)."""

    start: float
    end: float
    action: str
    next_run: float | None


def parse_log(text: str) -> dict[str, list[Step]]:
    """Every credential's steps, in log order."""
    steps: dict[str, list[Step]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        message = m.group(3)
        if s := _STEP.match(message):
            end = _instant(m.group(1))
            plan = None if s.group(3) == "-" else _instant(s.group(3))
            step = Step(end - int(s.group(4)) / 1000, end, s.group(1), plan)
            steps.setdefault(s.group(2), []).append(step)
        elif f := _FAILED.match(message):
            end = _instant(m.group(1))
            # the failed step's start is not logged: its end stands for it (lag is measured
            # on the step after, against end + retry_in)
            steps.setdefault(f.group(1), []).append(
                Step(end, end, "failed", end + float(f.group(2)))
            )
    return steps


def lags(steps: dict[str, list[Step]], after: float = float("-inf")) -> list[float]:
    """Seconds each step started after its plan (negative: early), for every step but the
    first of each chain, counting only steps planned at or after ``after``."""
    out: list[float] = []
    for chain in steps.values():
        for previous, step in zip(chain, chain[1:], strict=False):
            if previous.next_run is None or previous.next_run < after:
                continue
            out.append(step.start - previous.next_run)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    if not 0 < q <= 1:
        raise ValueError("q must be in (0, 1]")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Figure:
    """One measured figure against its bound."""

    what: str
    measured: str
    bound: str
    met: bool


def _n(value: float, digits: int = 0) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


@dataclass(frozen=True)
class ScaleResult:
    """What one run of ``bench_scale`` measured (times in seconds unless named)."""

    date: str  # UTC, minutes
    credentials: int
    lifespan_s: float  # the token endpoint's tokens
    rates: dict[str, float]  # proxy_write, proxy_read, pacer_write, pacer_read (calls/s)
    load_average: tuple[float, float, float]  # at the end of the steady phase
    load_before: tuple[float, float, float]
    # readers
    tokens_read: int
    expired_seen: int
    min_left_s: float
    # the proxy
    throttled: int
    # scheduling
    lag_n: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    # start-up
    startup_calls: int
    startup_get_parameters: int
    startup_other_calls: int  # GetParameter, PutParameter
    startup_adopted: int
    startup_s: float
    startup_cpu_s: float  # the daemon's CPU time (every thread) when it had adopted all
    # footprint
    rss_peak_mib: float
    idle_window_s: float
    idle_cpu_s: float
    # steady phase
    rotations: int
    failures: int
    steady_s: float
    puts: int
    gets: int  # GetParameter + GetParameters of the daemon after start-up
    moto_note: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def idle_cpu_pct(self) -> float:
        return self.idle_cpu_s / self.idle_window_s * 100 if self.idle_window_s > 0 else math.nan

    @property
    def startup_complete(self) -> bool:
        return self.startup_adopted == self.credentials

    def figures(self) -> list[Figure]:
        n = self.credentials
        startup_calls_met = self.startup_complete and self.startup_calls <= 600
        return [
            Figure(
                "expired tokens seen by readers",
                f"{self.expired_seen} of {self.tokens_read:,} reads "
                f"(least time left: {_n(self.min_left_s, 1)} s)",
                "0",
                self.expired_seen == 0 and self.tokens_read > 0,
            ),
            Figure(
                "ThrottlingException at the proxy",
                str(self.throttled),
                "0",
                self.throttled == 0,
            ),
            Figure(
                "scheduling lag p99 once started",
                f"{_n(self.lag_p99_ms)} ms (p50 {_n(self.lag_p50_ms)}, max "
                f"{_n(self.lag_max_ms)}; {self.lag_n:,} steps)",
                "< 1,000 ms",
                self.lag_n > 0 and self.lag_p99_ms < 1000,
            ),
            Figure(
                f"start-up adopting {n:,} fresh tokens: AWS calls",
                f"{self.startup_calls} ({self.startup_get_parameters} GetParameters, "
                f"{self.startup_other_calls} other); {self.startup_adopted:,} adopted",
                "<= 600",
                startup_calls_met,
            ),
            Figure(
                f"start-up adopting {n:,} fresh tokens: time",
                f"{_n(self.startup_s, 1)} s from launch to the last adoption "
                f"({_n(self.startup_cpu_s, 1)} s of the daemon's CPU)",
                "<= 10 s",
                self.startup_complete and self.startup_s <= 10,
            ),
            Figure(
                "daemon peak RSS",
                f"{_n(self.rss_peak_mib, 1)} MiB",
                "<= 150 MiB",
                self.rss_peak_mib <= 150,
            ),
            Figure(
                "idle CPU (nothing due)",
                f"{_n(self.idle_cpu_pct, 3)} % of a core ({_n(self.idle_cpu_s * 1000)} ms "
                f"over {_n(self.idle_window_s)} s)",
                "<= 0.5 %",
                self.idle_window_s > 0 and self.idle_cpu_pct <= 0.5,
            ),
        ]

    def goals(self) -> list[Goal]:
        """The figures as rows of BENCHMARKS.md's Targets table."""
        return [
            Goal(f"{self.credentials:,} SSM credentials: {f.what}", f.bound, f.measured, f.met)
            for f in self.figures()
        ]

    @property
    def all_met(self) -> bool:
        return all(f.met for f in self.figures())

    def markdown(self) -> str:
        r = self.rates
        load = ", ".join(f"{x:.1f}" for x in self.load_average)
        before = ", ".join(f"{x:.1f}" for x in self.load_before)
        lines = [
            f"## 8. {self.credentials:,} SSM credentials, one daemon (issue 9)",
            "",
            f"Measured {self.date} UTC by `python -m tests.bench.bench_scale "
            f"{self.credentials}` at **{self.credentials:,} credentials**; load average "
            f"{before} before, {load} at the end of the steady phase (2 shared CPUs).",
            "",
            "| figure | measured | bound | met |",
            "| --- | --- | --- | --- |",
        ]
        for f in self.figures():
            lines.append(
                f"| {f.what} | {f.measured} | {f.bound} | {'yes' if f.met else '**NO**'} |"
            )
        per_rotation = (self.puts + self.gets) / self.rotations if self.rotations else math.nan
        lines += [
            "",
            f"Steady phase: {self.rotations:,} rotations in {_n(self.steady_s)} s "
            f"({_n(self.rotations / self.steady_s if self.steady_s else math.nan, 1)}/s), "
            f"{self.failures} failed steps, {self.puts:,} PutParameter and {self.gets:,} "
            f"reads ({_n(per_rotation, 2)} AWS calls per rotation). Tokens from the stub "
            f"live {self.lifespan_s:g} s.",
            "",
            "Rates (calls/s): the proxy throttles PutParameter past "
            f"{r['proxy_write']:g} and SSM reads past {r['proxy_read']:g}; the daemon's "
            f"pacers are set to {r['pacer_write']:g} writes "
            f"(`ROTATOR_SSM_WRITES_PER_SECOND`) and {r['pacer_read']:g} reads "
            "(`ROTATOR_SSM_READS_PER_SECOND`).",
            "",
            *self._rates_explained(),
        ]
        if self.moto_note:
            lines += ["", self.moto_note]
        lines += [f"\n{note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def _rates_explained(self) -> list[str]:
        """Which figures hold at AWS's default rates, which needed scaled ones, and what a
        real account needs for this many credentials."""
        r = self.rates
        wx = r["pacer_write"] / PACER_WRITES
        rx = r["pacer_read"] / PACER_READS
        interval = self.lifespan_s * REFRESH_AT
        needed = self.credentials / interval  # steady PutParameter/s for this many tokens
        per_region = PACER_WRITES * interval
        longest = self.credentials / PACER_WRITES / REFRESH_AT
        reads_default = math.ceil(self.credentials / 10) / PACER_READS
        return [
            f"- **Scaled, writes (x{wx:g}):** AWS answers about {AWS_WRITES:g} PutParameter/s "
            f"per account and region (rotator's pacer: {PACER_WRITES:g}/s). "
            f"{self.credentials:,} tokens of {self.lifespan_s:g} s need ~{needed:.0f}/s, so "
            "the expired-token, throttling and lag figures were measured with writes scaled "
            f"to {r['proxy_write']:g}/s at the proxy and {r['pacer_write']:g}/s in the pacer. "
            f"At the default pace one region sustains ~{per_region:,.0f} such tokens; a real "
            f"account with {self.credentials:,} needs tokens living >= {longest:,.0f} s "
            f"(~{longest / 60:.0f} min) at the default pace, or the credentials spread over "
            f">= {math.ceil(self.credentials / per_region)} regions or accounts, or a raised "
            "PutParameter quota (SSM's higher-throughput setting covers PutParameter, AWS "
            "publishes no figure for it) with `ROTATOR_SSM_WRITES_PER_SECOND` raised to match.",
            f"- **Scaled, reads (x{rx:g}):** AWS's default is {AWS_READS:g} GetParameter(s)/s "
            f"(rotator's pacer: {PACER_READS:g}/s): the start-up's "
            f"{math.ceil(self.credentials / 10)} GetParameters take >= "
            f"{reads_default:.1f} s at the default pace, so the start-up time was measured "
            f"with reads at {r['proxy_read']:g}/s (proxy) and {r['pacer_read']:g}/s (pacer). "
            "A real account needs SSM's higher-throughput setting (GetParameter and "
            "GetParameters shared, up to 3,000/s; charged) and `ROTATOR_SSM_READS_PER_SECOND` "
            "raised to match.",
            "- **At any rate:** the start-up's call count, calls per rotation, peak RSS and "
            "idle CPU do not depend on the rates.",
        ]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScaleResult:
        """The result ``to_json`` dumped (its derived keys ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("load_average", "load_before", "notes"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = asdict(self)
        data["notes"] = list(self.notes)
        data["idle_cpu_pct"] = self.idle_cpu_pct
        data["figures"] = [asdict(f) for f in self.figures()]
        data["all_met"] = self.all_met
        return data
