"""The charts BENCHMARKS.md links, drawn from the typed results (matplotlib: the `bench`
extra; without it nothing is drawn and the committed PNGs stay)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.bench.sections.daemon import CHART as DAEMON_CHART
from tests.bench.sections.daemon import DAEMON_RSS_RATIO, LAG_P99_MS, DaemonResult

if TYPE_CHECKING:
    from tests.bench.bench_process import ProcessResult


def _pyplot() -> Any | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def daemon(result: DaemonResult, stamp: str) -> Path | None:
    """Section 3: RSS and scheduling lag against the number of credentials."""
    plt = _pyplot()
    if plt is None:
        return None
    runs = sorted(result.runs, key=lambda x: x.credentials)
    n = [x.credentials for x in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(n, [x.rss_end_mib for x in runs], "o-", label="RSS at the end")
    left.plot(n, [x.hwm_mib for x in runs], "s--", label="peak RSS")
    if result.floor_ssm_mib:
        floor = result.floor_ssm_mib
        left.axhline(floor, color="grey", lw=1, ls=":", label="floor script (one-shot, SSM)")
        label = f"{DAEMON_RSS_RATIO}x floor (target, 1 cred)"
        left.axhline(floor * DAEMON_RSS_RATIO, color="red", lw=1, ls=":", label=label)
    left.set_xscale("log")
    left.set_xlabel("credentials")
    left.set_ylabel("MiB")
    left.set_title("Daemon memory")
    left.legend(fontsize=8)
    left.grid(True, alpha=0.3)
    right.plot(n, [max(x.lag_ms.p50, 0.01) for x in runs], "o-", label="lag p50")
    right.plot(n, [max(x.lag_ms.p99, 0.01) for x in runs], "s-", label="lag p99")
    right.plot(n, [max(x.lag_ms.max, 0.01) for x in runs], "^:", label="lag max")
    right.axhline(LAG_P99_MS, color="red", lw=1, ls=":", label="p99 target (1 s)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("credentials")
    right.set_ylabel("ms (planned -> actual start)")
    right.set_title(f"Scheduling lag, steady state ({result.lifespan_s:g} s tokens)")
    right.legend(fontsize=8)
    right.grid(True, alpha=0.3, which="both")
    fig.suptitle(f"rotator run, SSM targets, {stamp}")
    fig.tight_layout()
    fig.savefig(DAEMON_CHART, dpi=110)
    plt.close(fig)
    return DAEMON_CHART


def process(result: ProcessResult) -> Path | None:
    """Section 6: whole-process CPU per rotation of the file runs."""
    from tests.bench.bench_process import CHART, FILE_CPU_GOAL_MS

    files = sorted(
        (r for r in result.runs if r.target == "file" and not r.neighbours),
        key=lambda r: r.credentials,
    )
    crowded = [r for r in result.runs if r.target == "file" and r.neighbours]
    plt = _pyplot() if files else None
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    by_n: dict[int, list[float]] = {}
    for r in files:
        by_n.setdefault(r.credentials, []).append(r.cpu_ms_per_rotation)
    n = sorted(by_n)
    medians = [statistics.median(by_n[k]) for k in n]
    ax.plot(n, medians, "o-", label="whole process (median of the runs at N)")
    if any(len(v) > 1 for v in by_n.values()):
        ax.plot(
            [r.credentials for r in files],
            [r.cpu_ms_per_rotation for r in files],
            "k.",
            ms=4,
            label="each run",
        )
    if crowded:
        ax.plot(
            [r.credentials + r.neighbours for r in crowded],
            [r.cpu_ms_per_rotation for r in crowded],
            "s",
            label="1,000 credentials, folder filled with other files (x = files)",
        )
    ax.axhline(FILE_CPU_GOAL_MS, color="red", lw=1, ls=":", label="goal (<= 3 ms)")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("files in the folder (one file target per credential)")
    ax.set_ylabel("CPU ms per rotation")
    ax.set_title("rotator run: whole-process CPU per rotation")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)
    plt.close(fig)
    return CHART
