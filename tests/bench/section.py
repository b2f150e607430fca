"""What a bench gives the report: a typed result that renders its own section.

A bench module's ``run(...)`` returns a frozen dataclass that is a ``Section``:

* ``markdown() -> str``: its whole part of BENCHMARKS.md, heading included
  (``## N. Title``), tables and the prose written by hand next to the numbers;
* ``to_json() -> dict[str, Any]``: its raw figures for ``.bench/results.json``.
  ``dataclasses.asdict(self)`` is enough, and then ``--render`` can load the result
  back from its field types (``tests/bench/stored.py``); a section whose JSON has
  another shape gives a ``from_json(data) -> Self`` classmethod.

It may also be a ``HasGoals``: ``goals() -> list[Goal]``, the rows it adds to the
*Targets* table at the top (a goal, the measured bound, met or not: no advice); and a
``HasChart``: ``draw_chart(stamp: str) -> Path | None``, called by a run that writes
BENCHMARKS.md itself (``stamp`` names the machine and date for the title).

``tests/bench/report.py`` only assembles: the header (date, machine, commit, load),
the Targets table from every ``HasGoals`` section, then each section's ``markdown()``
in ``page`` order (``BENCHES`` in ``tests/bench/run.py``; each section's notes written
by hand, ``tests/bench/notes/*.md``, follow it). Adding a section is one line there:

    Bench("scale", lambda c: bench_scale.run(c.moto, c.stub, quick=c.quick), page=8),

``c`` is a ``run.Context``: the shared moto server and Keycloak stub, ``quick``, and
``c.find(SomeResult)`` for a section that already ran this time (or None). The name
is what ``--only`` selects; ``notes="scale.md"`` adds a notes file after the section.

The helpers below format numbers and tables the same way in every section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

NOTES = Path(__file__).resolve().parent / "notes"


@runtime_checkable
class Section(Protocol):
    """A bench's result: renders its own section of BENCHMARKS.md, dumps its figures."""

    def markdown(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Goal:
    """One row of the Targets table: what, the goal, what was measured, met or not."""

    what: str
    target: str
    measured: str
    met: bool | None  # None: no verdict (not measured in this run, or only reported)
    note: str = ""  # the verdict column when met is None, e.g. "reported"

    @property
    def verdict(self) -> str:
        if self.met is None:
            return self.note or "n/a"
        return "met" if self.met else "**MISSED**"


@runtime_checkable
class HasGoals(Protocol):
    def goals(self) -> list[Goal]: ...


@runtime_checkable
class HasChart(Protocol):
    """A section with a chart: draws it (a PNG under tests/bench/, which its markdown
    links) and returns the path, or None without matplotlib (the `bench` extra)."""

    def draw_chart(self, stamp: str) -> Path | None: ...


def num(value: float | None, digits: int = 1) -> str:
    """``1,234.5``; ``n/a`` for a missing or NaN figure, ``inf`` for an infinite one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:,.{digits}f}"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table as lines."""

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [row(head), row(["---"] * len(head)), *(row(r) for r in rows)]


def goals_table(goals: list[Goal], head: str = "what") -> list[str]:
    """The goals as a table and a blank line; nothing when there are none."""
    if not goals:
        return []
    return [*_goal_rows(goals, head), ""]


def _goal_rows(goals: list[Goal], head: str) -> list[str]:
    return table(
        [head, "target", "measured", "verdict"],
        [[g.what, g.target, g.measured, g.verdict] for g in goals],
    )


@dataclass(frozen=True)
class Notes:
    """A section written by hand in ``tests/bench/notes/``: figures measured elsewhere
    (the AWS-limits tests), the method, or notes on the run a section's figures come
    from. Revise them by hand when the figures they describe change."""

    name: str  # file name under tests/bench/notes/

    def markdown(self) -> str:
        return (NOTES / self.name).read_text(encoding="utf-8").rstrip("\n") + "\n"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name}
