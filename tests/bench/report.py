"""BENCHMARKS.md from the sections of one run: a header, the Targets table, the sections.

Nothing here knows a figure: each section renders itself (``tests/bench/section.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tests.bench.section import Goal, HasGoals, Section, goals_table


@dataclass(frozen=True)
class RunInfo:
    """What the header says about the run: when, where, which code, how loaded."""

    date: str
    machine: dict[str, str]  # nproc, cpu, memory, python, kernel (peers.machine())
    commit: str
    rotator_dirty: bool  # uncommitted changes under rotator/
    quick: bool
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    total_seconds: float

    def stamp(self) -> str:
        """For a chart's title: the machine and the date."""
        return f"{self.machine['nproc']} CPUs - {self.date}"


def goals(sections: Sequence[Section]) -> list[Goal]:
    """Every section's goals, in page order."""
    return [g for s in sections if isinstance(s, HasGoals) for g in s.goals()]


def header(info: RunInfo) -> str:
    m = info.machine
    load = ", ".join(f"{x:.1f}" for x in info.load_before)
    load_after = ", ".join(f"{x:.1f}" for x in info.load_after)
    quick = " --quick" if info.quick else ""
    dirty = " with uncommitted changes in rotator/" if info.rotator_dirty else ""
    return "\n".join(
        [
            "# Benchmarks",
            "",
            f"Measured {info.date} by `make bench` (`python -m tests.bench.run{quick}`); "
            f"commit `{info.commit}`{dirty}.",
            "",
            f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Python "
            f"{m['python']}, Linux {m['kernel']}. Load average before/after: {load} / "
            f"{load_after} (other work shared the machine; runs are interleaved so it hits "
            "every variant alike, but absolute times are noisier than on an idle host).",
            "",
            "Everything runs on 127.0.0.1: the token endpoint is `rotator.testing.KeycloakStub`, "
            "AWS is a moto server in its own process. moto answers in a few milliseconds where "
            "AWS takes tens, so wall times here are a lower bound of production's; CPU, memory "
            "and call counts carry over. Figures are reported, never asserted.",
            "",
            "**Reproduce:** `make bench` (installs the `bench` extra for matplotlib, then runs "
            "`python -m tests.bench.run`, about 6 minutes; `--quick` for a smoke run). Raw "
            "figures: `.bench/results.json`. Code: `tests/bench/` (each `bench_*.py` returns a "
            "typed result that renders its own section; notes written by hand are in "
            "`tests/bench/notes/`).",
            "",
        ]
    )


def assemble(info: RunInfo, sections: Sequence[Section]) -> str:
    """The whole document: header, Targets (if any section has goals), each section."""
    parts = [header(info)]
    found = goals(sections)
    if found:
        parts.append("\n".join(["## Targets", "", *goals_table(found)]))
    parts += [s.markdown() for s in sections]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def console(info: RunInfo, sections: Sequence[Section]) -> str:
    """The printed summary: every goal with its verdict."""
    lines = ["", f"rotator benchmarks {info.date}", "", "targets:"]
    for g in goals(sections):
        mark = "ok" if g.met else ("MISSED" if g.met is False else g.verdict)
        lines.append(f"  [{mark}] {g.what}: {g.measured} (target {g.target})")
    lines.append(f"\n(total {info.total_seconds:.0f} s)")
    return "\n".join(lines)
