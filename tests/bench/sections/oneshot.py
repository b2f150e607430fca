"""1. One-shot: the result of ``bench_oneshot.run`` and its section."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tests.bench.section import Goal, num, table

# The targets of issue 5.
ONESHOT_RATIO = 1.1  # rotator <= 1.1x the floor, wall and peak RSS
FLOOR_VS_SHELL = 0.63  # issue 5's assumption: the floor runs in ~0.63x the shell script's time


@dataclass(frozen=True)
class VariantRow:
    """Medians over the interleaved rounds of one variant."""

    key: str
    label: str
    wall_ms: float
    rss_mib: float
    cpu_ms: float
    n: int


@dataclass(frozen=True)
class Ratio:
    """a/b of the medians; wall also per round (its spread is the noise)."""

    wall: float
    rss: float
    cpu: float
    wall_p25: float
    wall_p75: float


@dataclass(frozen=True)
class AwsCli:
    path: str | None
    note: str  # how it was found, or why it is missing
    version: str = ""


@dataclass(frozen=True)
class ImportRow:
    module: str
    cum_us: float  # median cumulative µs (the module and what it imports)
    imported_by: str
    chain: str  # module <- importer <- ... <- top-level import
    saving_us: float  # its subtree less what the baseline loads anyway
    why: str = ""


@dataclass(frozen=True)
class ImportSummary:
    total_us: float
    unneeded_saving_us: float
    modules: int
    top: tuple[ImportRow, ...]
    unneeded: tuple[ImportRow, ...]
    notable: tuple[ImportRow, ...]
    beyond_floor_us: dict[str, float]  # self µs of modules the baseline lacks, by package
    beyond_floor_total_us: float


@dataclass(frozen=True)
class Phases:
    startup_ms: float
    imports_ms: float
    work_ms: float
    wall_ms: float


@dataclass(frozen=True)
class OneshotResult:
    rows: tuple[VariantRow, ...]
    ratios: dict[str, Ratio]  # "rotator/floor", "rotator/shell", "floor/shell"
    rounds: int
    aws_cli: AwsCli
    importtime: ImportSummary  # `rotator once --force`, one Secrets Manager target
    importtime_file: ImportSummary  # the same with a file target only
    floor_importtime_total_us: float
    call_latency_ms: dict[str, float]  # per AWS call on this moto server
    phases: dict[str, Phases]  # "rotator", "floor"
    lazy_absent: tuple[str, ...]  # modules kept off the `once` path, confirmed absent
    token_requests: int
    python: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def row(self, key: str) -> VariantRow | None:
        return next((r for r in self.rows if r.key == key), None)

    def rss_mib(self, key: str) -> float | None:
        """Peak RSS of one variant ("floor", "floor_ssm", ...): section 3 compares with it."""
        row = self.row(key)
        return row.rss_mib if row else None

    def goals(self) -> list[Goal]:
        rf = self.ratios["rotator/floor"]
        rs, fs = self.ratios.get("rotator/shell"), self.ratios.get("floor/shell")
        bar = ONESHOT_RATIO * FLOOR_VS_SHELL
        rederived = ONESHOT_RATIO * fs.wall if fs else None
        no_cli = "skipped (no aws CLI)"
        return [
            Goal(
                "one-shot wall time vs floor",
                f"<= {ONESHOT_RATIO}x",
                f"{num(rf.wall, 2)}x",
                rf.wall <= ONESHOT_RATIO,
            ),
            Goal(
                "one-shot peak RSS vs floor",
                f"<= {ONESHOT_RATIO}x",
                f"{num(rf.rss, 2)}x",
                rf.rss <= ONESHOT_RATIO,
            ),
            Goal(
                "one-shot wall time vs curl + aws CLI",
                f"<= {bar:.2f}x ({ONESHOT_RATIO} x {FLOOR_VS_SHELL})",
                f"{num(rs.wall, 2)}x (the floor itself: {num(fs.wall, 2)}x)"
                if rs and fs
                else no_cli,
                rs.wall <= bar if rs else None,
            ),
            Goal(
                "one-shot wall time vs curl + aws CLI, bar from this run's floor/shell",
                f"<= {num(rederived, 2)}x ({ONESHOT_RATIO} x {num(fs.wall if fs else None, 2)})",
                f"{num(rs.wall, 2)}x" if rs else no_cli,
                rs.wall <= rederived if rs and rederived else None,
            ),
        ]

    def markdown(self) -> str:
        cli = self.aws_cli
        ratios = [
            [
                pair,
                num(v.wall, 2),
                f"{num(v.wall_p25, 2)} - {num(v.wall_p75, 2)}",
                num(v.rss, 2),
                num(v.cpu, 2),
            ]
            for pair, v in self.ratios.items()
        ]
        rf = self.ratios["rotator/floor"]
        return "\n".join(
            [
                "## 1. One-shot: `rotator once --force`",
                "",
                "One credential, one Secrets Manager target, configured by environment. Medians "
                f"of {self.rounds} interleaved runs per variant (after a discarded warm-up). The "
                "floor is `tests/bench/floor_script.py`: one client_credentials POST with "
                "requests and one PutSecretValue with boto3. The shell variant is "
                "`tests/bench/shell_script.sh`: curl and the aws CLI "
                f"({cli.version}, {cli.note}).",
                "",
                *table(
                    ["variant", "wall ms", "peak RSS MiB", "CPU ms (user+sys)"],
                    [
                        [r.label, num(r.wall_ms, 0), num(r.rss_mib), num(r.cpu_ms, 0)]
                        for r in self.rows
                    ],
                ),
                "",
                "Ratios (medians):",
                "",
                *table(["pair", "wall", "wall, per round (p25 - p75)", "peak RSS", "CPU"], ratios),
                "",
                f"The per-round rotator/floor ratio spreads from {num(rf.wall_p25, 2)} to "
                f"{num(rf.wall_p75, 2)} (p25-p75): a verdict within that distance of "
                f"{ONESHOT_RATIO}x can flip between runs on a shared machine. The curl + aws CLI "
                f"bar of issue 5 assumes the floor runs at {FLOOR_VS_SHELL}x the shell script; "
                "the aws CLI v1 found here starts about as fast as a boto3 script, so the Targets "
                "table also shows the bar re-derived from this run's floor/shell ratio.",
                "",
                *self._where_time_goes(),
            ]
        )

    def _where_time_goes(self) -> list[str]:
        imp, fimp = self.importtime, self.importtime_file
        lat = self.call_latency_ms
        # rotator's Secrets Manager write is 3 calls where the floor's is 1 (section 4)
        extra_calls = lat["GetSecretValue"] + lat["UpdateSecretVersionStage"]
        ph = self.phases
        diff = {
            k: getattr(ph["rotator"], k) - getattr(ph["floor"], k)
            for k in ("startup_ms", "imports_ms", "work_ms", "wall_ms")
        }
        phase_rows = [
            [label, num(getattr(ph["rotator"], key), 0), num(getattr(ph["floor"], key), 0)]
            + [num(diff[key], 0)]
            for key, label in (
                ("startup_ms", "interpreter start-up"),
                ("imports_ms", "imports"),
                ("work_ms", "work: client creation, token POST, AWS calls, logic"),
                ("wall_ms", "whole process"),
            )
        ]
        rotator, floor = self.row("rotator"), self.row("floor")
        gap = rotator.wall_ms - floor.wall_ms if rotator and floor else None
        by_package = ", ".join(
            f"`{k}` {num(v / 1000, 1)}" for k, v in list(imp.beyond_floor_us.items())[:10]
        )
        botocore, boto3 = self.row("floor_botocore"), self.row("floor")
        return [
            "### Where the one-shot time goes",
            "",
            "Wall-clock phases without a profiler (`tests/bench/phases.py`: the modules each "
            "path uses are imported first, then the work runs; medians of "
            f"{self.rounds} interleaved runs):",
            "",
            *table(["phase", "rotator ms", "floor ms", "difference ms"], phase_rows),
            "",
            "- Imports (`python -X importtime -m rotator once --force`, median of runs): "
            f"{num(imp.total_us / 1000)} ms for {imp.modules} modules, against "
            f"{num(self.floor_importtime_total_us / 1000)} ms for the floor script. Modules "
            f"rotator loads that the floor does not: {num(imp.beyond_floor_total_us / 1000)} ms "
            f"of self time (importtime's own overhead included), by package: {by_package}.",
            "- AWS calls: rotator makes 3 Secrets Manager calls (GetSecretValue, PutSecretValue "
            "labelled `RotatorPending`, UpdateSecretVersionStage promoting it to AWSCURRENT as a "
            "compare-and-set; section 4) where the floor makes 1. On this moto server a call "
            "takes: " + ", ".join(f"{k} {num(v, 1)} ms" for k, v in lat.items()) + "; the 2 "
            f"extra calls cost about {num(extra_calls, 1)} ms of wall time here (more on AWS, "
            "~10-30 ms each).",
            "",
            f"Of the {num(gap, 0)} ms between the medians of rotator and the floor, the phases "
            f"put {num(diff['imports_ms'], 0)} ms in imports, {num(diff['work_ms'], 0)} ms in "
            f"the work (of which the 2 extra AWS calls are ~{num(extra_calls, 0)} ms on moto) "
            f"and {num(diff['startup_ms'], 0)} ms in interpreter start-up (noise: the same "
            "interpreter). The rest is run-to-run noise on a shared 2-CPU machine: compare the "
            "CPU column, which a busy neighbour disturbs less.",
            "",
            "Top cumulative imports of `rotator once --force` (median µs; a module's time "
            "includes what it imports):",
            "",
            *table(
                ["module", "cumulative ms", "imported by"],
                [[f"`{x.module}`", num(x.cum_us / 1000), f"`{x.imported_by}`"] for x in imp.top],
            ),
            "",
            "Imports on the `once` path (one Secrets Manager target) that it does not need. "
            "*Saving* is the module's subtree less what the floor script (requests + boto3) "
            "loads anyway:",
            "",
            *_unneeded(imp),
            "",
            "With only a file target (`ROTATOR_FILE_PATH`), nothing of AWS is needed; *saving* "
            "is the subtree less what `import requests` loads anyway:",
            "",
            *_unneeded(fimp),
            "",
            "Needed, but worth knowing:",
            "",
            *table(
                ["module", "cumulative ms", "import chain", "note"],
                [
                    [f"`{x.module}`", num(x.cum_us / 1000, 1), f"`{x.chain}`", x.why]
                    for x in imp.notable
                ]
                or [["(none imported)", "", "", ""]],
            ),
            "",
            "Start-up, as measured above:",
            "",
            "- Store backends the configuration does not use would cost "
            f"{num(imp.unneeded_saving_us / 1000, 1)} ms on the Secrets Manager path and "
            f"{num(fimp.unneeded_saving_us / 1000, 1)} ms on a file-only path (the tables "
            "above); `rotator/stores/__init__.py` imports each backend on first use, so a "
            "file-only run does not load botocore.",
            "- rotator builds its AWS clients from `botocore.session` (`AwsClients`), without "
            "boto3 and the `s3transfer` it pulls in: the context row *the floor with botocore "
            f"alone* ran in {num(botocore.wall_ms if botocore else None, 0)} ms / "
            f"{num(botocore.rss_mib if botocore else None)} MiB against "
            f"{num(boto3.wall_ms if boto3 else None, 0)} ms / "
            f"{num(boto3.rss_mib if boto3 else None)} MiB for the boto3 floor.",
            "- Kept off the `once` path, and confirmed absent from it: "
            + ", ".join(f"`{m}`" for m in self.lazy_absent)
            + ". rotator's own modules cost most of the rest of the import gap (largely "
            "`@dataclass` class creation at import, ~0.5 ms per frozen dataclass).",
            "",
        ]


def _unneeded(summary: ImportSummary) -> list[str]:
    rows = [
        [
            f"`{x.module}`",
            num(x.cum_us / 1000, 2),
            num(x.saving_us / 1000, 2),
            f"`{x.chain}`",
            x.why,
        ]
        for x in summary.unneeded
    ] or [["(none found)", "", "", "", ""]]
    return table(["module", "cumulative ms", "saving ms", "import chain", "why not needed"], rows)
