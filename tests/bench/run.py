"""`make bench`: run every measurement, print a table, write BENCHMARKS.md and the chart.

    python -m tests.bench.run            # the full run (about 6 minutes)
    python -m tests.bench.run --quick    # fewer rounds, shorter daemon runs: a smoke test

Raw figures also go to .bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rotator.testing.keycloak import KeycloakStub
from tests.bench import (
    bench_calls,
    bench_daemon,
    bench_oneshot,
    bench_process,
    bench_reader,
    bench_steady,
    report,
)
from tests.bench.peers import CLIENT_SECRET, ROOT, SCRATCH, MotoProcess, machine

SECTIONS = ("oneshot", "calls", "reader", "steady", "daemon", "process")


def _git() -> dict[str, str]:
    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, check=False, capture_output=True, text=True, timeout=30
        )
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--", "rotator")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "rotator_dirty": "yes" if dirty else "no",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and shorter daemon runs")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated: {','.join(SECTIONS)}"
    )
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    SCRATCH.mkdir(exist_ok=True)
    began = time.monotonic()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "git": _git(),
        "quick": args.quick,
        "load_before": os.getloadavg(),
    }
    clients = {
        bench_oneshot.CLIENT_ID: CLIENT_SECRET,
        bench_steady.CLIENT_ID: CLIENT_SECRET,
        **dict.fromkeys(bench_calls.CLIENTS, CLIENT_SECRET),
        **{bench_daemon.client_id(i): CLIENT_SECRET for i in range(1000)},
    }
    quick = args.quick

    def section(name: str, fn: Any) -> None:
        if name not in only:
            return
        t = time.monotonic()
        print(f"[bench] {name} ...", flush=True)
        results[name] = fn()
        results.setdefault("seconds", {})[name] = time.monotonic() - t
        print(f"[bench] {name} done in {time.monotonic() - t:.0f} s", flush=True)

    with MotoProcess() as moto, KeycloakStub(clients=clients) as stub:
        section(
            "oneshot",
            lambda: bench_oneshot.run(
                moto, stub, rounds=3 if quick else 11, importtime_n=2 if quick else 5
            ),
        )
        section("calls", lambda: bench_calls.run(moto, stub, quick=quick))
        section("reader", lambda: bench_reader.run(moto, quick=quick))
        section("steady", lambda: bench_steady.run(moto, stub, n=60 if quick else 150, quick=quick))
        section("daemon", lambda: bench_daemon.run(moto, stub, quick=quick))
        section("process", lambda: bench_process.run(moto, quick=quick))
    results["load_after"] = os.getloadavg()
    results["total_seconds"] = time.monotonic() - began
    (SCRATCH / "results.json").write_text(json.dumps(results, indent=1, default=str))
    chart = report.chart(results)
    text = report.markdown(results, chart)
    if "process" in results:  # section 6, rendered by its own module
        process = {**results["process"], "date": results["date"]}
        process["commit"] = results["git"]["commit"]
        steady = results.get("steady", {}).get("targets", {})
        ours = {k: t["ours"]["cpu_ms"] for k, t in steady.items()}
        section6 = bench_process.markdown(process, bench_process.chart(process), ours)
        text = bench_process.splice(text, section6)
    with open(args.out, "w", encoding="utf-8") as out:
        out.write(text)
    print(report.table(results))
    print(f"\nwrote {args.out}" + (f" and {chart}" if chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
