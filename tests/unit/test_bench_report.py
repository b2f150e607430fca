"""BENCHMARKS.md is assembled from typed results: each renders its own section and goals.

Results are built by hand here (no bench runs, no sockets)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from typing import Any

from tests.bench import report, run, stored
from tests.bench.bench_process import ProcessResult, ProcessRun
from tests.bench.report import RunInfo
from tests.bench.section import Goal, HasGoals, Notes, Section
from tests.bench.sections.calls import CallsResult, Count, LambdaStep, SteadyCount
from tests.bench.sections.daemon import Checked, DaemonResult, DaemonRun, Idle, Lag, Window
from tests.bench.sections.oneshot import (
    AwsCli,
    ImportSummary,
    OneshotResult,
    Phases,
    Ratio,
    VariantRow,
)
from tests.bench.sections.reader import CachedCost, ReaderResult, StoreCalls

INFO = RunInfo(
    date="2026-12-01 18:00 UTC",
    machine={"nproc": "2", "cpu": "Xeon", "memory": "24 GiB", "python": "3.11.7", "kernel": "6"},
    commit="abc1234",
    rotator_dirty=False,
    quick=True,
    load_before=(1.0, 2.0, 3.0),
    load_after=(4.0, 5.0, 6.0),
    total_seconds=12.0,
)


@dataclass(frozen=True)
class Plain:
    """A section as another bench (e.g. bench_scale) would write one."""

    title: str
    found: tuple[Goal, ...] = ()

    def markdown(self) -> str:
        return f"## {self.title}\n\nfigures\n"

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title}

    def goals(self) -> list[Goal]:
        return list(self.found)


def reader() -> ReaderResult:
    return ReaderResult(
        cached={"file": CachedCost(0.08, 0.09)},
        cached_system_clock=CachedCost(0.26, 0.3),
        reread_ms={"file": 0.01},
        per_10k=(StoreCalls(1.0, 10_000.0, 46, 46, 46), StoreCalls(100.0, 100.0, 1, 1, 0)),
        lifetime_s=300.0,
    )


def calls() -> CallsResult:
    once = {"ssm": Count(1, 2, "GetParameter, PutParameter")}
    return CallsResult(
        startup_empty=once,
        startup_fresh=once,
        once_force=once,
        steady={"ssm": SteadyCount(5, 1.0, 2.0, "GetParameter, PutParameter", "", 0)},
        lambda_pattern=(LambdaStep("createSecret", "DescribeSecret, ...", 4),),
    )


def daemon_run(n: int, rss: float, *, expired: int = 0, p99: float = 90.0) -> DaemonRun:
    return DaemonRun(
        credentials=n,
        lifespan_s=30.0,
        seconds=70.0,
        cli=False,
        rss_end_mib=rss,
        hwm_mib=rss,
        threads=3,
        cpu_total_s=1.0,
        cpu_avg_pct=1.0,
        token_requests=4 * n,
        steps=4 * n,
        failures=0,
        startup_burst_s=0.5,
        lag_startup_ms=Lag(200.0, 200.0, 200.0, n),
        lag_ms=Lag(1.0, p99, p99, 3 * n),
        publish_gaps=0,
        min_left_at_republish_s=7.9,
        during=Checked(checked=13),
        final=Checked(checked=n, expired=expired),
        steady=Window(40.0, 0.1, 3, 21.9),
        idle=Idle(56.0, 23.8, 0.043) if n == 1 else None,
        rss_series=((0.0, rss),),
    )


def daemon(floor: float | None = 52.8, expired: int = 0) -> DaemonResult:
    runs = (daemon_run(1, 52.8), daemon_run(100, 56.4), daemon_run(1000, 65.7, expired=expired))
    return DaemonResult(runs, daemon_run(1, 52.7), 30.0, floor, 47.2)


def oneshot(rotator_shell: float, floor_shell: float) -> OneshotResult:
    imports = ImportSummary(1000.0, 0.0, 399, (), (), (), {"rotator.config": 3100.0}, 3100.0)
    ratio = Ratio(wall=0.95, rss=0.96, cpu=0.91, wall_p25=0.92, wall_p75=0.96)
    phase = Phases(64.0, 123.0, 70.0, 257.0)
    return OneshotResult(
        rows=(
            VariantRow("rotator", "rotator once --force", 230.0, 45.5, 210.0, 11),
            VariantRow("floor", "floor", 243.0, 47.2, 230.0, 11),
            VariantRow("floor_ssm", "floor (SSM)", 261.0, 52.8, 240.0, 11),
        ),
        ratios={
            "rotator/floor": ratio,
            "rotator/shell": replace(ratio, wall=rotator_shell),
            "floor/shell": replace(ratio, wall=floor_shell),
        },
        rounds=11,
        aws_cli=AwsCli("/usr/bin/aws", "on PATH", "aws-cli/1.45.11"),
        importtime=imports,
        importtime_file=imports,
        floor_importtime_total_us=1400.0,
        call_latency_ms={"GetSecretValue": 2.5, "UpdateSecretVersionStage": 2.4},
        phases={"rotator": phase, "floor": phase},
        lazy_absent=("rotator.health",),
        token_requests=50,
        python=".venv/bin/python",
    )


def process(file_cpu: float, cold: float) -> ProcessResult:
    def one(kind: str, n: int, cpu: float, cold_s: float) -> ProcessRun:
        return ProcessRun(kind, n, 60.0, 0, cold_s, n, 35.0, n, cpu, 20.0, 45.5, 34, 0)

    return ProcessResult(
        runs=(one("file", 100, 3.5, 1.0), one("file", 1000, file_cpu, cold)),
        lifespan_s=30,
        load_before=(1.0, 1.0, 1.0),
        load_after=(2.0, 2.0, 2.0),
        date="2026-12-01 18:00 UTC",
        commit="abc1234",
        ours={"file": 0.45},
    )


def test_the_report_is_the_header_targets_and_each_section_in_order() -> None:
    first = Plain("1. First", (Goal("a goal", "<= 1 ms", "0.5 ms", True),))
    text = report.assemble(INFO, [first, reader(), Plain("9. Last")])

    assert text.startswith("# Benchmarks\n")
    assert "commit `abc1234`" in text and "`python -m tests.bench.run --quick`" in text
    assert "Load average before/after: 1.0, 2.0, 3.0 / 4.0, 5.0, 6.0" in text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Targets", "## 1. First", "## 5. Consumer reads", "## 9. Last"]
    assert "| a goal | <= 1 ms | 0.5 ms | met |" in text


def test_targets_rows_say_met_missed_or_the_note() -> None:
    found = (
        Goal("fast", "<= 1 ms", "0.5 ms", True),
        Goal("small", "<= 1 MiB", "2 MiB", False),
        Goal("only shown", "reported", "3 ms", None, "reported"),
        Goal("not run", "<= 1x", "skipped", None),
    )
    text = report.assemble(INFO, [Plain("1. One", found)])

    assert "| fast | <= 1 ms | 0.5 ms | met |" in text
    assert "| small | <= 1 MiB | 2 MiB | **MISSED** |" in text
    assert "| only shown | reported | 3 ms | reported |" in text
    assert "| not run | <= 1x | skipped | n/a |" in text
    printed = report.console(INFO, [Plain("1. One", found)])
    assert "[ok] fast" in printed and "[MISSED] small" in printed


def test_no_targets_table_when_no_section_has_goals() -> None:
    text = report.assemble(INFO, [calls(), reader()])

    assert "## Targets" not in text
    assert "| `once --force` | ssm | 1 | 2 | GetParameter, PutParameter |" in text
    assert "| 1/s | 10,000 s | 46 | 46 | 10,000 |" in text


def test_every_result_is_a_section_with_json_figures() -> None:
    results: list[Section] = [calls(), reader(), daemon(), oneshot(0.72, 0.76), process(3.3, 6.6)]
    for result in results:
        assert isinstance(result, Section)
        assert json.loads(json.dumps(result.to_json()))  # plain data, non-empty
    assert calls().to_json()["lambda_sm_calls"] == 4
    assert [isinstance(r, HasGoals) for r in results] == [False, False, True, True, False]


def test_oneshot_bar_vs_the_shell_is_also_re_derived_from_the_run() -> None:
    goals = {g.what: g for g in oneshot(rotator_shell=0.72, floor_shell=0.76).goals()}

    assert goals["one-shot wall time vs curl + aws CLI"].met is False  # 0.72 > 1.1 x 0.63
    rederived = goals["one-shot wall time vs curl + aws CLI, bar from this run's floor/shell"]
    assert rederived.target == "<= 0.84x (1.1 x 0.76)" and rederived.met is True
    assert goals["one-shot wall time vs floor"].met is True


def test_daemon_goals_from_the_runs_and_the_floor_of_section_1() -> None:
    goals = {g.what.split(",")[0]: g for g in daemon().goals()}

    assert goals["daemon RSS"].measured == "1.00x (52.8 vs 52.8 MiB)" and goals["daemon RSS"].met
    per = goals["RSS per extra credential (100 -> 1"]
    assert per.measured == "10.6 KiB (peak: 10.6 KiB)" and per.met
    assert goals["every one of the 1"].met is True
    assert goals["scheduling lag p99 (steady state)"].measured.startswith("90.0 ms")
    assert {g.what.split(",")[0]: g for g in daemon(expired=1).goals()}[
        "every one of the 1"
    ].met is False


def test_daemon_without_section_1_shows_na_and_no_floor_goal() -> None:
    result = daemon(floor=None)

    assert not any(g.what.startswith("daemon RSS") for g in result.goals())
    assert "= n/ax the floor script with the same target type (SSM, n/a MiB)" in (result.markdown())


def test_process_section_goals_and_a_round_trip_through_json() -> None:
    result = process(file_cpu=3.3, cold=2.5)
    text = result.markdown()

    assert "| file, whole-process CPU / rotation at 1,000 | <= 3 ms | 3.30 ms | **MISSED** |" in (
        text
    )
    assert "| cold start, 1,000 file targets | <= 3 s | 2.50 s | met |" in text
    assert "| file at 100 / 1,000 / 5,000 in one folder | flat | 3.50 / 3.30 ms" in text
    assert "| file | 1,000 | 3.30 | 0.45 |" in text
    assert ProcessResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_the_page_orders_sections_and_adds_their_notes() -> None:
    done: dict[str, Section] = {
        "calls": calls(),
        "oneshot": Plain("1. One-shot"),
        "method": Notes("method.md"),
        "aws_limits": Notes("aws_limits.md"),
    }
    paged = run.page(done)

    assert paged == [done["oneshot"], done["calls"], Notes("calls.md"), done["aws_limits"]] + [
        done["method"]
    ]
    text = report.assemble(INFO, paged)
    assert text.index("## 4. Calls per rotation") < text.index("## 7. AWS limits")
    assert text.rstrip().endswith("nanoseconds); RSS is `VmRSS`/`VmHWM`.")


def test_a_new_bench_is_one_entry_whose_name_selects_it() -> None:
    names = [b.name for b in run.BENCHES]

    assert len(names) == len(set(names))
    assert set(run.MEASURED) == {
        "oneshot",
        "calls",
        "reader",
        "steady",
        "daemon",
        "process",
        "scale",
    }
    assert len({b.page for b in run.BENCHES}) == len(run.BENCHES)


def test_stored_figures_load_back_into_the_same_results() -> None:
    results: list[Section] = [calls(), reader(), daemon(), oneshot(0.72, 0.76), process(3.3, 6.6)]
    results.append(Notes("method.md"))
    for result in results:
        data = json.loads(json.dumps(result.to_json()))
        assert stored.section(stored.class_path(result), data) == result
    assert stored.load(RunInfo, json.loads(json.dumps(dataclasses.asdict(INFO)))) == INFO


def test_the_process_goals_are_read_from_the_median_of_the_repeated_runs() -> None:
    result = process(file_cpu=3.3, cold=2.5)
    one = result.runs[1]
    runs = (*result.runs, replace(one, cpu_ms_per_rotation=2.8, cold_start_s=3.4))
    runs += (replace(one, cpu_ms_per_rotation=2.9, cold_start_s=2.9),)
    text = replace(result, runs=runs).markdown()

    assert (
        "| file, whole-process CPU / rotation at 1,000 | <= 3 ms "
        "| 2.90 ms (median of 3 runs: 3.30, 2.80, 2.90) | met |"
    ) in text
    assert (
        "| cold start, 1,000 file targets | <= 3 s "
        "| 2.90 s (median of 3 runs: 2.50, 3.40, 2.90) | met |" in text
    )
    assert "| file at 100 / 1,000 / 5,000 in one folder | flat | 3.50 / 2.90 ms" in text
    assert text.count("| file | 1,000 |") == 3  # every run is in the table


def test_a_process_run_without_the_1000_file_run_has_no_goal_table() -> None:
    result = process(file_cpu=3.3, cold=2.5)
    small = replace(result, runs=result.runs[:1])

    assert "| goal (issue 14) |" in result.markdown()
    assert "| goal (issue 14) |" not in small.markdown()
    assert "| file | 100 | 3.50 | 0.45 |" in small.markdown()
