"""What the daemon planned, read from its own log, and checks that it kept to the plan.

Waits and schedules are asserted on the instants the daemon computed and logged
(``retry_in=``, ``next_run=``), plus lower bounds on when things happened ("never
early"): a loaded machine only ever makes things later, so nothing here depends on
how fast the machine is.
"""

from __future__ import annotations

import itertools
import re

from tests.harness.history import parse_time
from tests.harness.process import Line, RotatorProcess, log_time

# Slack for log instants printed to the millisecond and one-decimal waits; never a window
# on how long anything took (a loaded machine only ever makes things later).
ROUNDING = 0.06
PLAN = re.compile(r" credential=(\S+) expires_at=(\S+) next_run=(\S+)")
RETRY_IN = re.compile(r"retry_in=([0-9.]+)s")


def planned_waits(lines: list[Line]) -> list[float]:
    """The back-offs the daemon planned, as it logged them (``retry_in=``)."""
    return [float(m.group(1)) for line in lines if (m := RETRY_IN.search(line.text))]


def assert_never_early(times: list[float], waits: list[float]) -> None:
    """Each attempt came no sooner than the back-off planned after the one before it."""
    for (prev, nxt), wait in zip(itertools.pairwise(times), waits, strict=False):
        assert nxt - prev >= wait - ROUNDING, (prev, nxt, wait)


def assert_on_schedule(
    daemon: RotatorProcess, name: str, lifetime: float, request_times: list[float]
) -> int:
    """Every run the daemon planned for credential ``name`` lies at 70-75 % (the first one:
    37.5-75 %) of the token's lifetime from its issued_at (the send instant rounded down,
    as published), or at once if the step itself ended later than that; and no token
    request of ``request_times`` came before the run planned for it. Returns how many
    runs were planned."""
    plans: list[tuple[float, float]] = []
    lines = daemon.lines(rf" credential={re.escape(name)} expires_at=\S+ next_run=")
    for i, line in enumerate(lines):
        match = PLAN.search(line.text)
        assert match is not None, line.text
        issued = parse_time(match.group(2)) - lifetime
        planned, logged = parse_time(match.group(3)), log_time(line.text)
        # The daemon's first token, fetched at its start, is refreshed anywhere from 37.5 %
        # of its lifetime (a fleet started together must not refresh together); later
        # ones at 70-75 %.
        earliest = 0.375 if i == 0 else 0.7
        assert issued + earliest * lifetime - 0.001 <= planned, line.text
        assert planned <= max(issued + 0.75 * lifetime, logged) + 0.001, line.text
        plans.append((logged, planned))
    for logged, planned in plans:
        early = [t for t in request_times if logged < t < planned - ROUNDING]
        assert not early, f"token requests at {early} before the run planned at {planned}"
    return len(plans)
