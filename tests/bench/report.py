"""Turn the raw figures into the printed table, BENCHMARKS.md and the chart."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tests.bench.bench_oneshot import UNNEEDED_ON_ONCE
from tests.bench.peers import ROOT

CHART = Path(__file__).resolve().parent / "chart.png"

# The targets of issue 5.
ONESHOT_RATIO = 1.1  # rotator <= 1.1x the floor, wall and peak RSS
FLOOR_VS_SHELL = 0.63  # "the floor runs in about 0.63x the shell script's time"
OURS_MS = 2.0
DAEMON_RSS_RATIO = 1.2
PER_CREDENTIAL_KIB = 20.0
IDLE_PCT = 0.1
LAG_P99_MS = 1000.0


def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**MISSED**")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(head), _row(["---"] * len(head)), *(_row(r) for r in rows)]


# ---------------------------------------------------------------- targets


def targets(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(what, target, measured, met?) for every target of the issue."""
    out: list[tuple[str, str, str, bool | None]] = []
    one = r.get("oneshot")
    if one:
        ratios = one["ratios"]
        rf = ratios.get("rotator/floor", {})
        out.append(
            (
                "one-shot wall time vs floor",
                f"<= {ONESHOT_RATIO}x",
                f"{_f(rf.get('wall'), 2)}x",
                rf.get("wall", math.inf) <= ONESHOT_RATIO,
            )
        )
        out.append(
            (
                "one-shot peak RSS vs floor",
                f"<= {ONESHOT_RATIO}x",
                f"{_f(rf.get('rss'), 2)}x",
                rf.get("rss", math.inf) <= ONESHOT_RATIO,
            )
        )
        rs = ratios.get("rotator/shell")
        fs = ratios.get("floor/shell")
        bar = ONESHOT_RATIO * FLOOR_VS_SHELL
        out.append(
            (
                "one-shot wall time vs curl + aws CLI",
                f"<= {bar:.2f}x ({ONESHOT_RATIO} x {FLOOR_VS_SHELL})",
                f"{_f(rs['wall'], 2)}x (the floor itself: {_f(fs['wall'], 2)}x)"
                if rs and fs
                else "skipped (no aws CLI)",
                rs["wall"] <= bar if rs else None,
            )
        )
    steady = r.get("steady")
    if steady:
        worst = max(
            max(t["ours"]["cpu_ms"], t["ours_full_registry"]["cpu_ms"])
            for t in steady["targets"].values()
        )
        daemon = max(
            steady["daemon_ours"]["cpu_ms_per_rotation"],
            steady["daemon_ours_full_registry"]["cpu_ms_per_rotation"],
        )
        out.append(
            (
                "our CPU per rotation (validation, scheduling, serialisation, logging)",
                f"<= {OURS_MS:g} ms",
                f"{_f(worst, 2)} ms per step, {_f(daemon, 2)} ms with the scheduler",
                max(worst, daemon) <= OURS_MS,
            )
        )
    daemon_r = r.get("daemon")
    if daemon_r:
        by = {x["credentials"]: x for x in daemon_r["runs"]}
        floor = _floor_rss(r, "floor_ssm")
        one = by.get(1)
        if one and floor:
            ratio = one["hwm_mib"] / floor
            out.append(
                (
                    "daemon RSS, 1 credential, vs floor script (SSM)",
                    f"<= {DAEMON_RSS_RATIO}x",
                    f"{_f(ratio, 2)}x ({_f(one['hwm_mib'])} vs {_f(floor)} MiB)",
                    ratio <= DAEMON_RSS_RATIO,
                )
            )
        per = daemon_r.get("per_credential", {})
        if per:
            worst_kib = max(per["rss_kib"], per["hwm_kib"])
            out.append(
                (
                    "RSS per extra credential (100 -> 1,000)",
                    f"<= {PER_CREDENTIAL_KIB:g} KiB",
                    f"{_f(per['rss_kib'])} KiB (peak: {_f(per['hwm_kib'])} KiB)",
                    worst_kib <= PER_CREDENTIAL_KIB,
                )
            )
        if one and one["idle"]:
            idle = one["idle"]["pct_of_core"]
            out.append(
                (
                    "idle CPU between rotations (1 credential)",
                    f"<= {IDLE_PCT:g} % of a core",
                    f"{_f(idle, 3)} %",
                    idle <= IDLE_PCT,
                )
            )
        big = by.get(max(by))
        if big:
            fresh = (
                big["final"]["checked"] == big["credentials"]
                and big["final"]["expired"] == 0
                and big["final"]["inactive"] == 0
                and big["during"]["expired"] == 0
                and big["publish_gaps"] == 0
            )
            out.append(
                (
                    f"every one of the {big['credentials']:,} published tokens stays unexpired",
                    "0 expired",
                    f"{big['final']['expired']} expired at the end, "
                    f"{big['during']['expired']} in samples, {big['publish_gaps']} gaps",
                    fresh,
                )
            )
        worst_p99 = max(x["lag_ms"]["p99"] for x in daemon_r["runs"])
        out.append(
            (
                "scheduling lag p99 (steady state)",
                f"< {LAG_P99_MS / 1000:g} s",
                f"{_f(worst_p99)} ms (worst of 1/100/1,000)",
                worst_p99 < LAG_P99_MS,
            )
        )
    return out


def _target_notes(r: dict[str, Any]) -> list[str]:
    one = r.get("oneshot")
    if not one:
        return []
    notes = []
    rf = one["ratios"].get("rotator/floor")
    if rf:
        notes.append(
            f"- One-shot vs floor: the per-round ratio spreads from {_f(rf['wall_p25'], 2)} to "
            f"{_f(rf['wall_p75'], 2)} (p25-p75), so a verdict this close to {ONESHOT_RATIO}x "
            "can flip between runs on a shared machine. Where the difference goes (imports, "
            "the 3 extra AWS calls) is broken down in section 1."
        )
    fs, rs = one["ratios"].get("floor/shell"), one["ratios"].get("rotator/shell")
    if fs and rs:
        bar = ONESHOT_RATIO * fs["wall"]
        notes.append(
            f"- One-shot vs curl + aws CLI: the bar assumes the floor runs at "
            f"{FLOOR_VS_SHELL}x the shell script; here it runs at {_f(fs['wall'], 2)}x (this "
            "aws CLI v1 starts about as fast as a boto3 script), so "
            + ("the floor itself misses " if fs["wall"] > ONESHOT_RATIO * FLOOR_VS_SHELL else "")
            + f"{ONESHOT_RATIO * FLOOR_VS_SHELL:.2f}x. Re-derived from this run "
            f"({ONESHOT_RATIO} x {_f(fs['wall'], 2)} = {bar:.2f}x), rotator's "
            f"{_f(rs['wall'], 2)}x {'meets' if rs['wall'] <= bar else 'misses'} it."
        )
    return notes


def _floor_rss(r: dict[str, Any], key: str) -> float | None:
    one = r.get("oneshot")
    if not one:
        return None
    for row in one["rows"]:
        if row["key"] == key:
            return float(row["rss_mib"])
    return None


# ---------------------------------------------------------------- printed table


def table(r: dict[str, Any]) -> str:
    lines = ["", "rotator benchmarks " + r["date"], ""]
    one = r.get("oneshot")
    if one:
        lines.append(
            f"{'one-shot (median of ' + str(one['rounds']) + ')':<52}"
            f"{'wall ms':>9}{'RSS MiB':>9}{'CPU ms':>8}"
        )
        for row in one["rows"]:
            lines.append(
                f"  {row['label'][:50]:<50}{row['wall_ms']:>9.0f}{row['rss_mib']:>9.1f}"
                f"{row['cpu_ms']:>8.0f}"
            )
        for pair, v in one["ratios"].items():
            lines.append(f"  ratio {pair:<44}{v['wall']:>9.2f}{v['rss']:>9.2f}{v['cpu']:>8.2f}")
    steady = r.get("steady")
    if steady:
        lines += ["", f"{'CPU ms per rotation':<30}{'total':>9}{'ours':>9}{'ours*':>9}"]
        for kind, t in steady["targets"].items():
            lines.append(
                f"  {kind:<28}{t['total']['cpu_ms']:>9.2f}{t['ours']['cpu_ms']:>9.2f}"
                f"{t['ours_full_registry']['cpu_ms']:>9.2f}"
            )
        lines.append(
            f"  {'daemon (scheduler, fake I/O)':<28}{'':>9}"
            f"{steady['daemon_ours']['cpu_ms_per_rotation']:>9.2f}"
            f"{steady['daemon_ours_full_registry']['cpu_ms_per_rotation']:>9.2f}"
        )
        lines.append("  (* with the secret registry full: 4,096 tokens)")
    daemon = r.get("daemon")
    if daemon:
        lines += [
            "",
            f"{'daemon':<14}{'RSS MiB':>9}{'peak':>8}{'CPU %':>8}{'ms/rot':>8}"
            f"{'lag p50':>9}{'p99 ms':>8}{'expired':>9}",
        ]
        for x in daemon["runs"]:
            lines.append(
                f"  {x['credentials']:>5} creds  {x['rss_end_mib']:>9.1f}{x['hwm_mib']:>8.1f}"
                f"{x['steady'].get('cpu_pct', math.nan):>8.2f}"
                f"{x['steady'].get('cpu_ms_per_rotation', math.nan):>8.2f}"
                f"{x['lag_ms']['p50']:>9.1f}{x['lag_ms']['p99']:>8.1f}"
                f"{x['final']['expired'] + x['during']['expired']:>9d}"
            )
        per = daemon.get("per_credential")
        if per:
            lines.append(f"  per extra credential: {per['rss_kib']:.1f} KiB")
        one_run = next((x for x in daemon["runs"] if x["credentials"] == 1), None)
        if one_run and one_run["idle"]:
            lines.append(
                f"  idle CPU (1 credential): {one_run['idle']['pct_of_core']:.3f} % of a core"
            )
    calls = r.get("calls")
    if calls:
        lines += ["", f"{'calls per rotation':<22}{'token':>7}{'AWS':>6}  AWS calls (steady state)"]
        for kind, s in calls["steady"].items():
            lines.append(
                f"  {kind:<20}{s['token_per_rotation']:>7.0f}{s['aws_per_rotation']:>6.1f}"
                f"  {s['ops']}"
            )
        lines.append(
            f"  {'AWS rotation Lambda':<20}{1:>7d}{calls['lambda_sm_calls']:>6d}"
            "  (+4 Lambda invocations)"
        )
    reader = r.get("reader")
    if reader:
        lines += [
            "",
            f"consumer: cached token() {reader['cached_system_clock']['us']:.2f} µs; store calls "
            "per 10,000 requests: "
            + ", ".join(
                f"{int(x['store_calls'])} at {x['rate_per_s']:g}/s" for x in reader["per_10k"]
            ),
        ]
    lines += ["", "targets:"]
    for what, target, measured, ok in targets(r):
        lines.append(
            f"  [{'ok' if ok else 'n/a' if ok is None else 'MISSED'}] {what}: {measured}"
            f" (target {target})"
        )
    lines.append(f"\n(total {r['total_seconds']:.0f} s)")
    return "\n".join(lines)


# ---------------------------------------------------------------- chart


def chart(r: dict[str, Any]) -> str | None:
    daemon = r.get("daemon")
    if not daemon:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(daemon["runs"], key=lambda x: x["credentials"])
    n = [x["credentials"] for x in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(n, [x["rss_end_mib"] for x in runs], "o-", label="RSS at the end")
    left.plot(n, [x["hwm_mib"] for x in runs], "s--", label="peak RSS")
    floor = _floor_rss(r, "floor_ssm")
    if floor:
        left.axhline(floor, color="grey", lw=1, ls=":", label="floor script (one-shot, SSM)")
        left.axhline(
            floor * DAEMON_RSS_RATIO, color="red", lw=1, ls=":", label="1.2x floor (target, 1 cred)"
        )
    left.set_xscale("log")
    left.set_xlabel("credentials")
    left.set_ylabel("MiB")
    left.set_title("Daemon memory")
    left.legend(fontsize=8)
    left.grid(True, alpha=0.3)
    right.plot(n, [max(x["lag_ms"]["p50"], 0.01) for x in runs], "o-", label="lag p50")
    right.plot(n, [max(x["lag_ms"]["p99"], 0.01) for x in runs], "s-", label="lag p99")
    right.plot(n, [max(x["lag_ms"]["max"], 0.01) for x in runs], "^:", label="lag max")
    right.axhline(LAG_P99_MS, color="red", lw=1, ls=":", label="p99 target (1 s)")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("credentials")
    right.set_ylabel("ms (planned -> actual start)")
    right.set_title(f"Scheduling lag, steady state ({daemon['lifespan_s']:g} s tokens)")
    right.legend(fontsize=8)
    right.grid(True, alpha=0.3, which="both")
    fig.suptitle(f"rotator run, SSM targets, {r['machine']['nproc']} CPUs - {r['date']}")
    fig.tight_layout()
    fig.savefig(CHART, dpi=110)
    plt.close(fig)
    return str(CHART.relative_to(ROOT))


# ---------------------------------------------------------------- BENCHMARKS.md


def markdown(r: dict[str, Any], chart_path: str | None) -> str:
    m = r["machine"]
    out: list[str] = [
        "# Benchmarks",
        "",
        f"Measured {r['date']} by `make bench` (`python -m tests.bench.run`"
        f"{' --quick' if r['quick'] else ''}); commit `{r['git']['commit']}`"
        f"{' with uncommitted changes in rotator/' if r['git']['rotator_dirty'] == 'yes' else ''}.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, Python {m['python']}, "
        f"Linux {m['kernel']}. Load average before/after: "
        f"{', '.join(f'{x:.1f}' for x in r['load_before'])} / "
        f"{', '.join(f'{x:.1f}' for x in r['load_after'])} "
        "(other work shared the machine; runs are interleaved so it hits every variant alike, "
        "but absolute times are noisier than on an idle host).",
        "",
        "Everything runs on 127.0.0.1: the token endpoint is `rotator.testing.KeycloakStub`, "
        "AWS is a moto server in its own process. moto answers in a few milliseconds where AWS "
        "takes tens, so wall times here are a lower bound of production's; CPU, memory and "
        "call counts carry over. Figures are reported, never asserted.",
        "",
        "**Reproduce:** `make bench` (installs the `bench` extra for matplotlib, then runs "
        "`python -m tests.bench.run`, about 6 minutes; `--quick` for a smoke run). Raw figures: "
        "`.bench/results.json`. Code: `tests/bench/`.",
        "",
        "## Targets",
        "",
    ]
    out += _table(
        ["what", "target", "measured", "verdict"],
        [[w, t, meas, _verdict(ok)] for w, t, meas, ok in targets(r)],
    )
    out += ["", *_target_notes(r), ""]
    out += _oneshot_md(r)
    out += _steady_md(r)
    out += _daemon_md(r, chart_path)
    out += _calls_md(r)
    out += _reader_md(r)
    aws_limits = Path(__file__).with_name("aws_limits.md")  # figures from the limits tests
    if aws_limits.exists():
        out += aws_limits.read_text().splitlines()
    out += [
        "## Method notes",
        "",
        "- Peak RSS and CPU of one-shot runs come from `/usr/bin/time` (the kernel's rusage "
        "of the child). A child forked straight from the benchmark process would report the "
        "benchmark's own RSS as its peak (Linux keeps the pre-exec high-water mark), hence "
        "the small intermediate process. Wall time is measured around it.",
        "- Every measured Python program runs from cached bytecode (`PYTHONPYCACHEPREFIX` "
        "under `.bench/`, warmed by a discarded first run), as from an installed image; this "
        "shell sets `PYTHONDONTWRITEBYTECODE=1`, which would otherwise make the editable "
        "`rotator` recompile whatever changed since its `.pyc` files were written.",
        "- The daemon runs are `python -m tests.bench.daemon_main`: `config.load` -> "
        "`app.build` -> `commands.run`, exactly the `run` command minus argument parsing, with "
        "an Observer that appends each planned start (full precision) to a file; the log "
        "rounds `next_run` to whole seconds, too coarse for a lag. Actual start = the step's "
        "log time minus its `duration_ms`. A plain `rotator run` with 1 credential is "
        "measured too, for comparison.",
        "- Daemon CPU in a window is the sum of every thread's on-CPU time "
        "(`/proc/PID/task/*/schedstat`, nanoseconds); RSS is `VmRSS`/`VmHWM`.",
        "",
    ]
    return "\n".join(out)


def _oneshot_md(r: dict[str, Any]) -> list[str]:
    one = r.get("oneshot")
    if not one:
        return []
    out = [
        "## 1. One-shot: `rotator once --force`",
        "",
        f"One credential, one Secrets Manager target, configured by environment. Medians of "
        f"{one['rounds']} interleaved runs per variant (after a discarded warm-up). The floor is "
        "`tests/bench/floor_script.py`: one client_credentials POST with requests and one "
        "PutSecretValue with boto3. The shell variant is `tests/bench/shell_script.sh`: curl "
        f"and the aws CLI ({one['aws_cli'].get('version', '')}, {one['aws_cli']['note']}).",
        "",
    ]
    out += _table(
        ["variant", "wall ms", "peak RSS MiB", "CPU ms (user+sys)"],
        [
            [row["label"], _f(row["wall_ms"], 0), _f(row["rss_mib"]), _f(row["cpu_ms"], 0)]
            for row in one["rows"]
        ],
    )
    out += ["", "Ratios (medians):", ""]
    out += _table(
        ["pair", "wall", "wall, per round (p25 - p75)", "peak RSS", "CPU"],
        [
            [
                pair,
                _f(v["wall"], 2),
                f"{_f(v.get('wall_p25'), 2)} - {_f(v.get('wall_p75'), 2)}",
                _f(v["rss"], 2),
                _f(v["cpu"], 2),
            ]
            for pair, v in one["ratios"].items()
        ],
    )
    imp = one["importtime"]
    lat = one["call_latency_ms"]
    extra_calls = lat["GetSecretValue"] + 2 * lat["UpdateSecretVersionStage"]
    out += [
        "",
        "### Where the one-shot time goes",
        "",
    ]
    ph = one.get("phases")
    if ph:
        out += [
            "Wall-clock phases without a profiler (`tests/bench/phases.py`: the modules "
            "each path uses are imported first, then the work runs; medians of "
            f"{one['rounds']} interleaved runs):",
            "",
        ]
        out += _table(
            ["phase", "rotator ms", "floor ms", "difference ms"],
            [
                [
                    label,
                    _f(ph["rotator"][key], 0),
                    _f(ph["floor"][key], 0),
                    _f(ph["rotator"][key] - ph["floor"][key], 0),
                ]
                for key, label in (
                    ("startup_ms", "interpreter start-up"),
                    ("imports_ms", "imports"),
                    (
                        "work_ms",
                        "work: client creation, token POST, AWS calls, logic",
                    ),
                    ("wall_ms", "whole process"),
                )
            ],
        )
        out.append("")
    out += [
        f"- Imports (`python -X importtime -m rotator once --force`, median of runs): "
        f"{_f(imp['total_us'] / 1000)} ms for {imp['modules']} modules, against "
        f"{_f(one['floor_importtime_total_us'] / 1000)} ms for the floor script. Modules "
        f"rotator loads that the floor does not: {_f(imp['beyond_floor_total_us'] / 1000)} ms "
        "of self time (importtime's own overhead included), by package: "
        + ", ".join(
            f"`{k}` {_f(v / 1000, 1)}" for k, v in list(imp["beyond_floor_us"].items())[:10]
        )
        + ".",
        "- AWS calls: rotator makes 4 Secrets Manager calls (GetSecretValue, PutSecretValue "
        "as AWSPENDING, UpdateSecretVersionStage to promote it as a compare-and-set, "
        "UpdateSecretVersionStage to drop AWSPENDING) where the floor makes 1. On this moto "
        "server a call takes: "
        + ", ".join(f"{k} {_f(v, 1)} ms" for k, v in lat.items())
        + f"; the 3 extra calls cost about {_f(extra_calls, 1)} ms of wall time here (more on "
        "AWS, ~10-30 ms each).",
        "",
        _gap(one, extra_calls),
        "",
        "Top cumulative imports of `rotator once --force` (median µs; a module's time "
        "includes what it imports):",
        "",
    ]
    out += _table(
        ["module", "cumulative ms", "imported by"],
        [[f"`{x['module']}`", _f(x["cum_us"] / 1000), f"`{x['imported_by']}`"] for x in imp["top"]],
    )
    out += [
        "",
        "Imports on the `once` path (one Secrets Manager target) that it does not need. "
        "*Saving* is the module's subtree less what the floor script (requests + boto3) loads "
        "anyway:",
        "",
    ]
    rows = [
        [
            f"`{x['module']}`",
            _f(x["cum_us"] / 1000, 2),
            _f(x["saving_us"] / 1000, 2),
            f"`{x['chain']}`",
            x["why"],
        ]
        for x in imp["unneeded"]
    ] or [["(none found)", "", "", "", ""]]
    out += _table(["module", "cumulative ms", "saving ms", "import chain", "why not needed"], rows)
    fimp = one.get("importtime_file")
    if fimp:
        out += [
            "",
            "With only a file target (`ROTATOR_FILE_PATH`), nothing of AWS is needed; "
            "*saving* is the subtree less what `import requests` loads anyway:",
            "",
        ]
        rows = [
            [
                f"`{x['module']}`",
                _f(x["cum_us"] / 1000, 2),
                _f(x["saving_us"] / 1000, 2),
                f"`{x['chain']}`",
                x["why"],
            ]
            for x in fimp["unneeded"]
        ] or [["(none found)", "", "", "", ""]]
        out += _table(
            ["module", "cumulative ms", "saving ms", "import chain", "why not needed"], rows
        )
    if imp["notable"]:
        out += ["", "Needed, but worth knowing:", ""]
        out += _table(
            ["module", "cumulative ms", "import chain", "note"],
            [
                [f"`{x['module']}`", _f(x["cum_us"] / 1000, 1), f"`{x['chain']}`", x["why"]]
                for x in imp["notable"]
            ],
        )
    out += ["", "Start-up savings on offer, measured above:", ""]
    sm_saving = imp["unneeded_saving_us"] / 1000
    file_saving = fimp["unneeded_saving_us"] / 1000 if fimp else 0.0
    if imp["unneeded"] or (fimp and fimp["unneeded"]):
        out.append(
            f"- Store backends the configuration does not use are imported anyway (see the "
            f"chains above): {_f(sm_saving, 1)} ms on the Secrets Manager path, "
            f"{_f(file_saving, 1)} ms on a file-only path. A lazy package `__getattr__` in "
            "`rotator/stores/__init__.py`, as `rotator/__init__.py` already has, removes it."
        )
    else:
        out.append(
            "- No store backend the configuration does not use is imported, on the Secrets "
            "Manager path nor on a file-only one (botocore stays out of a file-only run)."
        )
    ten = next((x for x in imp["notable"] if x["module"] == "tenacity"), None)
    if ten:
        out.append(
            f"- `tenacity` ({_f(ten['cum_us'] / 1000, 1)} ms cumulative, none of it loaded by "
            "the floor) is imported at start-up by `rotator.retry` even when the first attempt "
            "succeeds; importing it on the first retry would save it on every successful run."
        )
    rows_by = {row["key"]: row for row in one["rows"]}
    if "floor_botocore" in rows_by and "floor" in rows_by:
        fb, fl = rows_by["floor_botocore"], rows_by["floor"]
        out.append(
            f"- boto3 itself (`boto3.compat` pulls in `s3transfer`): the floor built on botocore "
            f"alone runs in {_f(fb['wall_ms'], 0)} ms / {_f(fb['rss_mib'])} MiB against "
            f"{_f(fl['wall_ms'], 0)} ms / {_f(fl['rss_mib'])} MiB with boto3. `AwsClients` could "
            "create clients from `botocore.session` (same credential chain, region and "
            "AWS_ENDPOINT_URL handling) and go below the boto3 floor."
        )
    present = {x["module"] for x in imp["unneeded"]}
    absent = [m for m in UNNEEDED_ON_ONCE if m not in present]
    out.append(
        "- Already lazy, and confirmed absent from the `once` path: "
        + ", ".join(f"`{m}`" for m in absent)
        + ". rotator's own modules cost most of the rest of the gap above (largely "
        "`@dataclass` class creation at import, ~0.5 ms per frozen dataclass)."
    )
    out.append("")
    return out


def _gap(one: dict[str, Any], extra_calls_ms: float) -> str:
    rows = {row["key"]: row for row in one["rows"]}
    if "rotator" not in rows or "floor" not in rows:
        return ""
    gap = rows["rotator"]["wall_ms"] - rows["floor"]["wall_ms"]
    text = f"Of the {_f(gap, 0)} ms between the medians of rotator and the floor"
    ph = one.get("phases")
    if ph:
        diff = {k: ph["rotator"][k] - ph["floor"][k] for k in ph["rotator"]}
        text += (
            f", the phases put {_f(diff['imports_ms'], 0)} ms in imports, "
            f"{_f(diff['work_ms'], 0)} ms in the work (of which the 3 extra AWS calls are "
            f"~{_f(extra_calls_ms, 0)} ms on moto) and {_f(diff['startup_ms'], 0)} ms in "
            "interpreter start-up (noise: the same interpreter)"
        )
    return text + (
        ". The rest is run-to-run noise on a shared 2-CPU machine: compare the CPU column, "
        "which a busy neighbour disturbs less."
    )


def _steady_md(r: dict[str, Any]) -> list[str]:
    s = r.get("steady")
    if not s:
        return []
    out = [
        "## 2. Steady-state CPU per rotation",
        "",
        "In-process, no start-up in it: `rotator.app.build` + "
        "`CredentialRotator.rotate(force=True)`, the clock stepped 2 s before each call so "
        "that every step fetches *and* writes (token instants are whole seconds; a "
        "same-second token would be adopted). CPU is the calling "
        f"thread's (`time.thread_time`), median of {s['n']} steps (ours: {s['n'] * 4}). "
        "*Total* uses real HTTP to the stub and moto; *ours* replaces both ends with in-memory "
        "fakes (`tests/bench/fakes.py`: a canned Keycloak body still parsed by `TokenClient`, "
        "boto3-shaped dicts for the stores), leaving validation, serialisation, store logic "
        "and logging (to /dev/null through rotator's formatter). *HTTP clients* = total - ours.",
        "",
    ]
    rows = []
    for kind, t in s["targets"].items():
        total, ours = t["total"]["cpu_ms"], t["ours"]["cpu_ms"]
        rows.append(
            [
                kind,
                _f(total, 2),
                _f(t["total"]["wall_ms"], 1),
                _f(ours, 2),
                _f(total - ours, 2),
                _f(t["ours_full_registry"]["cpu_ms"], 2),
                _f(t["total_full_registry"]["cpu_ms"], 2),
            ]
        )
    d, dfull = s["daemon_ours"], s["daemon_ours_full_registry"]
    rows.append(
        [
            f"daemon, scheduler included ({d['credentials']} credentials, "
            f"{d['lifespan_s']} s tokens, SSM fakes)",
            "",
            "",
            _f(d["cpu_ms_per_rotation"], 2),
            "",
            _f(dfull["cpu_ms_per_rotation"], 2),
            "",
        ]
    )
    out += _table(
        [
            "target",
            "total CPU ms",
            "total wall ms",
            "ours CPU ms",
            "HTTP clients ms",
            "ours, registry full",
            "total, registry full",
        ],
        rows,
    )
    reg = s["registry"]
    out += [
        "",
        f"*Registry full*: rotator keeps every secret it has seen (client secrets, each access "
        f"and refresh token) in a process-wide list of up to {reg['cap']:,} entries and scrubs "
        f"each log line against all of them. A daemon reaches the cap after {reg['cap']:,} "
        "tokens (about 4 rotations each with 1,000 credentials; ~10 days for one credential "
        f"at 225 s). Scrubbing one log line against a full registry costs "
        f"{_f(s['scrub_full_registry_ms'], 3)} ms; a rotation logs 2-3 lines. The registry "
        f"also holds ~{reg['cap'] * reg['token_chars'] / 1024 / 1024:.1f} MiB of token strings "
        "once full (see the per-credential RSS below).",
        "",
        "The daemon row runs the real `Daemon` (APScheduler, thread pool) over fake I/O and "
        "divides the process CPU by the steps taken: scheduling and the job's log line included.",
        "",
        "Profile of the real-HTTP step (cProfile with the thread CPU clock, self time by "
        "package, ms per rotation; profiling inflates call-heavy code, so read the shares):",
        "",
    ]
    groups: list[str] = []
    for t in s["targets"].values():
        for g in t["profile_ms"]:
            if g not in groups:
                groups.append(g)
    rows = []
    for kind, t in s["targets"].items():
        total = sum(t["profile_ms"].values())
        rows.append(
            [kind]
            + [
                f"{_f(t['profile_ms'].get(g, 0.0), 2)} ({t['profile_ms'].get(g, 0.0) / total:.0%})"
                for g in groups
            ]
        )
    out += _table(["target", *groups], rows)
    env_group = next((g for g in groups if g.startswith("environment scan")), None)
    if env_group:
        worst = max(t["profile_ms"].get(env_group, 0.0) for t in s["targets"].values())
        out += [
            "",
            f"*Environment scan*: `build_session` sets `trust_env = True`, so requests walks "
            f"the whole process environment (`urllib.request.getproxies_environment`) on every "
            f"token request: up to {_f(worst, 2)} ms per rotation under the profiler here. "
            "It is an HTTP-client cost, but one rotator's settings choose: resolving proxies "
            "and the CA bundle once at start-up and turning `trust_env` off would remove it.",
        ]
    out.append("")
    return out


def _daemon_md(r: dict[str, Any], chart_path: str | None) -> list[str]:
    d = r.get("daemon")
    if not d:
        return []
    floor_ssm = _floor_rss(r, "floor_ssm")
    floor_sm = _floor_rss(r, "floor")
    out = [
        "## 3. Daemon footprint",
        "",
        f"`rotator run` (see method notes) with 1, 100 and 1,000 credentials, each its own "
        f"client on the stub with {d['lifespan_s']:g} s tokens and its own SSM parameter, all "
        "through one shared SSM client. Every credential rotates at ~70-75 % of the token "
        "life, so 1,000 credentials make ~45 rotations/s. RSS is sampled every 0.5 s; at the "
        "end every parameter is read back and checked unexpired and active at the stub; "
        "samples of 50 parameters are checked every 5 s while it runs.",
        "",
    ]
    rows = []
    for x in d["runs"] + [d["cli_1"]]:
        st = x["steady"]
        rows.append(
            [
                f"{x['credentials']:,}" + (" (plain `rotator run`)" if x["cli"] else ""),
                _f(x["seconds"], 0),
                _f(x["rss_end_mib"]),
                _f(x["hwm_mib"]),
                str(x["threads"]),
                _f(x["cpu_total_s"], 2),
                _f(st.get("cpu_pct"), 2),
                f"{_f(st.get('cpu_ms_per_rotation'), 2)} ({st.get('rotations', 0)})",
                f"{x['token_requests']:,}",
                _f(x["startup_burst_s"], 1),
                f"{_f(x['lag_startup_ms']['p50'], 1)} / {_f(x['lag_startup_ms']['p99'], 1)}",
                f"{_f(x['lag_ms']['p50'], 1)} / {_f(x['lag_ms']['p99'], 1)} / "
                f"{_f(x['lag_ms']['max'], 0)} (n={x['lag_ms']['n']})",
                f"{x['final']['checked']:,} read, {x['final']['expired']} expired, "
                f"{x['final']['inactive']} inactive",
                f"{x['during']['checked']:,} read, {x['during']['expired']} expired",
                f"{x['publish_gaps']} (min {_f(x['min_left_at_republish_s'], 1)} s left)",
                str(x["failures"]),
            ]
        )
    out += _table(
        [
            "credentials",
            "run s",
            "RSS end MiB",
            "peak MiB",
            "threads",
            "CPU s",
            "steady CPU % of a core",
            "steady CPU ms / rotation (rotations)",
            "token requests",
            "start-up burst s",
            "start-up lag p50 / p99 ms",
            "steady lag p50 / p99 / max ms",
            "end check",
            "sampled while running",
            "publish gaps",
            "failures",
        ],
        rows,
    )
    by = {x["credentials"]: x for x in d["runs"]}
    per = d.get("per_credential") or {}
    one = by.get(1)
    out.append("")
    if one and floor_ssm:
        out.append(
            f"- 1 credential: peak RSS {_f(one['hwm_mib'])} MiB = "
            f"{one['hwm_mib'] / floor_ssm:.2f}x the floor script with the same target type "
            f"(SSM, {_f(floor_ssm)} MiB)"
            + (
                f" and {one['hwm_mib'] / floor_sm:.2f}x the Secrets Manager floor "
                f"({_f(floor_sm)} MiB; botocore's SSM model is larger)"
                if floor_sm
                else ""
            )
            + "."
        )
    if per:
        chars = (r.get("steady") or {}).get("registry", {}).get("token_chars", 800)
        out.append(
            f"- Each extra credential (100 -> 1,000): {_f(per['rss_kib'])} KiB of RSS at the end "
            f"({_f(per['hwm_kib'])} KiB at peak). Up to ~{4096 * chars / 1024 / 1024:.1f} MiB "
            "of that is the process-wide secret registry (every token string seen, capped at "
            "4,096), which the 1,000-credential run fills and the 100-credential run does "
            "not: the increment per credential shrinks beyond that."
        )
    if one and one["idle"]:
        out.append(
            f"- Idle CPU between rotations (1 credential, {_f(one['idle']['seconds'], 0)} s of "
            f"idle windows): {_f(one['idle']['cpu_ms'], 1)} ms of CPU = "
            f"{_f(one['idle']['pct_of_core'], 3)} % of a core."
        )
    out.append(
        "- Start-up: every credential is due at once; with up to 32 workers the burst takes "
        "the time shown, and its lag is the queue, not the scheduler. *Steady lag* is every "
        "later rotation: planned start (full precision) to the start of the step."
    )
    out.append(
        "- With 1 credential the steady window is mostly idle: its CPU per rotation includes "
        "the idle CPU of the ~20 s between rotations."
    )
    out.append(
        "- *Publish gaps* counts, from the daemon's own log, each new token published at or "
        "after the previous one's expiry (expiries are whole seconds); *min left* is the "
        "shortest remaining life of the old token when its successor was published."
    )
    if chart_path:
        out += ["", f"![RSS and scheduling lag against the number of credentials]({chart_path})"]
    out.append("")
    return out


def _calls_md(r: dict[str, Any]) -> list[str]:
    c = r.get("calls")
    if not c:
        return []
    out = [
        "## 4. Calls per rotation",
        "",
        "Counted by the servers: the stub's request log (token endpoint, by client id) and a "
        "`FaultProxy` without faults in front of moto (AWS, by `X-Amz-Target`). One config "
        "with one credential per target type; steady state is `rotator run` with 4 s tokens, "
        "each rotation the window from 1 s before a token request to 1 s before the next.",
        "",
    ]
    rows = []
    scenarios = (
        ("startup_empty", "start-up, nothing published (`once`)"),
        ("startup_fresh", "start-up, fresh token published (`once` again: restart)"),
        ("once_force", "`once --force`"),
    )
    for key, label in scenarios:
        for kind, v in c[key].items():
            rows.append([label, kind, str(v["token"]), str(v["aws"]), v["ops"] or "-"])
    for kind, v in c["steady"].items():
        rows.append(
            [
                f"steady state, per rotation (`run`, {v['rotations']} rotations)",
                kind,
                _f(v["token_per_rotation"], 0),
                _f(v["aws_per_rotation"], 1),
                v["ops"] or "-",
            ]
        )
        rows.append(
            [
                "daemon start (adopts the fresh token)",
                kind,
                "0",
                str(v.get("daemon_start_aws", "")),
                v["daemon_start_ops"] or "-",
            ]
        )
    out += _table(["scenario", "target", "token requests", "AWS calls", "AWS calls made"], rows)
    out += [
        "",
        "Compare: the floor script and the shell script make 1 token request and 1 "
        "PutSecretValue per run, with no read-back and no compare-and-set. rotator adds a read "
        "(to adopt a fresh token instead of fetching one, and as the basis of the "
        "compare-and-set) and, on Secrets Manager, the staged promotion "
        "(`UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId=new, RemoveFromVersionId=read)`, "
        "which fails if another writer moved AWSCURRENT since the read); its `RotatorPending` "
        "label stays on the promoted version until the next write moves it. On SSM the "
        "step's own read, when at most 1 s old, is the read before the write (there is no "
        "conditional write); an older one is read again.",
        "",
        "The AWS rotation-Lambda pattern (AWS's `SecretsManagerRotationTemplate`; Secrets "
        "Manager invokes the function once per step and each invocation starts with "
        "DescribeSecret), per rotation:",
        "",
    ]
    out += _table(
        ["step", "Secrets Manager calls", "count"],
        [[step, desc, str(n)] for step, desc, n in c["lambda_pattern"]],
    )
    out += [
        "",
        f"Total: {c['lambda_sm_calls']} Secrets Manager calls, 4 Lambda invocations and the "
        "token request per rotation (+1 RotateSecret when something other than Secrets "
        "Manager's own schedule triggers it), against rotator's 1 token request + 3 calls "
        "(Secrets Manager) or + 2 calls (SSM). Secrets Manager's managed rotation schedules "
        "also run at most every 4 hours, far too seldom for tokens that live minutes.",
        "",
    ]
    return out


def _reader_md(r: dict[str, Any]) -> list[str]:
    rd = r.get("reader")
    if not rd:
        return []
    out = [
        "## 5. Consumer reads",
        "",
        f"`TokenReader.token()` from cache: {_f(rd['cached_system_clock']['us'], 2)} µs per call "
        "with the system clock (best of 5 x 100,000 calls; "
        + ", ".join(f"{k} {_f(v['us'], 2)} µs" for k, v in rd["cached"].items())
        + " with a fake clock, so the clock read is most of it). A cache miss (re-read of the "
        "store) costs "
        + ", ".join(f"{k} {_f(v, 2)} ms" for k, v in rd["reread_ms"].items())
        + " here.",
        "",
        f"Store calls per 10,000 consumer requests, counted by a FaultProxy in front of moto "
        f"(GetSecretValue), while a rotator publishes {rd['lifetime_s']:g} s tokens on its "
        "schedule (fake clock, so hours pass in seconds):",
        "",
    ]
    out += _table(
        ["request rate", "span", "rotations meanwhile", "store calls", "naive (read per request)"],
        [
            [
                f"{x['rate_per_s']:g}/s",
                f"{_f(x['span_s'], 0)} s",
                str(x["rotations"]),
                str(x["store_calls"]),
                "10,000",
            ]
            for x in rd["per_10k"]
        ],
    )
    out += [
        "",
        "The reader keeps a token until 30 s before it expires, so it reads about once per "
        "rotation whatever the request rate.",
        "",
    ]
    return out
