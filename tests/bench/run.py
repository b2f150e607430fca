"""`make bench`: run every measurement, print the targets, write BENCHMARKS.md and the charts.

    python -m tests.bench.run            # the full run (about 6 minutes)
    python -m tests.bench.run --quick    # fewer rounds, shorter daemon runs: a smoke test
    python -m tests.bench.run --quick --only calls,reader --out /tmp/bench.md
    python -m tests.bench.run --render .bench/results.json   # no run: the stored figures

Raw figures also go to .bench/results.json; the charts are redrawn only by a run that
writes BENCHMARKS.md itself. Each bench returns a ``Section`` (``tests/bench/section.py``);
adding one is a line in ``BENCHES``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from rotator.testing.keycloak import KeycloakStub
from tests.bench import (
    bench_calls,
    bench_daemon,
    bench_oneshot,
    bench_process,
    bench_reader,
    bench_scale,
    bench_steady,
    report,
    stored,
)
from tests.bench.peers import CLIENT_SECRET, ROOT, SCRATCH, MotoProcess, machine
from tests.bench.report import RunInfo
from tests.bench.section import HasChart, Notes, Section
from tests.bench.sections.daemon import DaemonResult
from tests.bench.sections.oneshot import OneshotResult
from tests.bench.sections.steady import SteadyResult

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """What a bench gets: the shared servers, the mode, and the sections already run."""

    moto: MotoProcess
    stub: KeycloakStub
    quick: bool
    done: dict[str, Section]

    def find(self, kind: type[T]) -> T | None:
        return next((s for s in self.done.values() if isinstance(s, kind)), None)


@dataclass(frozen=True)
class Bench:
    """One section: its name for --only, how to run it, its place on the page, and the
    notes written by hand that follow it (a file in tests/bench/notes/)."""

    name: str
    run: Callable[[Context], Section]
    page: int
    notes: str | None = None
    static: bool = False  # written by hand: always on the page, nothing to run


def _daemon(c: Context) -> DaemonResult:
    one, steady = c.find(OneshotResult), c.find(SteadyResult)
    return bench_daemon.run(
        c.moto,
        c.stub,
        quick=c.quick,
        floor_ssm_mib=one.rss_mib("floor_ssm") if one else None,
        floor_sm_mib=one.rss_mib("floor") if one else None,
        token_chars=steady.registry.token_chars if steady else 800,
    )


def _process(c: Context) -> bench_process.ProcessResult:
    steady = c.find(SteadyResult)
    return bench_process.run(c.moto, quick=c.quick, ours=steady.ours_cpu_ms() if steady else None)


# In the order they run (reader before steady, which fills the process-wide secret
# registry); `page` is the order in BENCHMARKS.md.
BENCHES: tuple[Bench, ...] = (
    Bench(
        "oneshot",
        lambda c: bench_oneshot.run(
            c.moto, c.stub, rounds=3 if c.quick else 11, importtime_n=2 if c.quick else 5
        ),
        page=1,
    ),
    Bench(
        "calls", lambda c: bench_calls.run(c.moto, c.stub, quick=c.quick), page=4, notes="calls.md"
    ),
    Bench("reader", lambda c: bench_reader.run(c.moto, quick=c.quick), page=5),
    Bench(
        "steady",
        lambda c: bench_steady.run(c.moto, c.stub, n=60 if c.quick else 150, quick=c.quick),
        page=2,
    ),
    Bench("daemon", _daemon, page=3),
    Bench("process", _process, page=6, notes="process.md"),
    Bench("aws_limits", lambda c: Notes("aws_limits.md"), page=7, static=True),
    # starts its own moto (tests.bench.moto_main) and a 300 s stub process
    Bench("scale", lambda c: bench_scale.run(quick=c.quick), page=8, notes="scale.md"),
    Bench("method", lambda c: Notes("method.md"), page=99, static=True),
)
MEASURED = tuple(b.name for b in BENCHES if not b.static)


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", *args], cwd=ROOT, check=False, capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


def page(done: dict[str, Section]) -> list[Section]:
    """The sections in page order, each followed by its notes."""
    out: list[Section] = []
    for bench in sorted(BENCHES, key=lambda b: b.page):
        if bench.name in done:
            out.append(done[bench.name])
            if bench.notes:
                out.append(Notes(bench.notes))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and shorter daemon runs")
    parser.add_argument(
        "--only", default=",".join(MEASURED), help=f"comma-separated: {','.join(MEASURED)}"
    )
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument(
        "--render", metavar="RESULTS_JSON", help="no run: render the figures stored by one"
    )
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(MEASURED)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    if args.render:
        raw = json.loads(Path(args.render).read_text(encoding="utf-8"))
        info = stored.load(RunInfo, raw["run"])
        done = {name: stored.section(path, raw[name]) for name, path in raw["types"].items()}
    else:
        info, done = measure(only, quick=args.quick)
        raw = {"run": asdict(info), "types": {n: stored.class_path(s) for n, s in done.items()}}
        raw |= {name: s.to_json() for name, s in done.items()}
        (SCRATCH / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    out = Path(args.out).resolve()
    drawn: list[str] = []
    # the run that measured drew the charts; a scratch --out leaves the committed ones alone
    if not args.render and out == ROOT / "BENCHMARKS.md":
        for s in done.values():
            chart = s.draw_chart(info.stamp()) if isinstance(s, HasChart) else None
            drawn += [str(chart.relative_to(ROOT))] if chart else []
    out.write_text(report.assemble(info, page(done)), encoding="utf-8")
    print(report.console(info, page(done)))
    print(f"\nwrote {out}" + (f" and {', '.join(drawn)}" if drawn else ""))
    return 0


def measure(only: set[str], *, quick: bool) -> tuple[RunInfo, dict[str, Section]]:
    """Run the selected benches (and every static section) against one stub and moto."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    SCRATCH.mkdir(exist_ok=True)
    began = time.monotonic()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    clients = {
        bench_oneshot.CLIENT_ID: CLIENT_SECRET,
        bench_steady.CLIENT_ID: CLIENT_SECRET,
        **dict.fromkeys(bench_calls.CLIENTS, CLIENT_SECRET),
        **{bench_daemon.client_id(i): CLIENT_SECRET for i in range(1000)},
    }
    done: dict[str, Section] = {}
    with MotoProcess() as moto, KeycloakStub(clients=clients) as stub:
        context = Context(moto, stub, quick, done)
        for bench in BENCHES:
            if not (bench.static or bench.name in only):
                continue
            if bench.static:
                done[bench.name] = bench.run(context)
                continue
            t = time.monotonic()
            print(f"[bench] {bench.name} ...", flush=True)
            done[bench.name] = bench.run(context)
            print(f"[bench] {bench.name} done in {time.monotonic() - t:.0f} s", flush=True)
    info = RunInfo(
        date=date,
        machine=machine(),
        commit=_git("rev-parse", "--short", "HEAD") or "unknown",
        rotator_dirty=bool(_git("status", "--porcelain", "--", "rotator")),
        quick=quick,
        load_before=load_before,
        load_after=os.getloadavg(),
        total_seconds=time.monotonic() - began,
    )
    return info, done


if __name__ == "__main__":
    sys.exit(main())
