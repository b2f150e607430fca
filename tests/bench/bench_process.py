"""6. Whole-process cost: what a user pays for the daemon, not only for our code.

``rotator run`` (the real CLI) with N credentials, 30 s tokens from the Keycloak stub in
its own process (``python -m rotator.testing.keycloak``) and, for AWS targets, the moto
server in its own process. Figures:

* whole-process CPU per rotation: the daemon's CPU (every thread, ``/proc``) over a
  steady window divided by the rotations its log shows in that window;
* cold start: from ``Popen`` to the last credential's first publish (its log line);
* for AWS targets, the share of the daemon's on-CPU samples with a botocore frame, from
  ``py-spy`` (if installed) sampling the daemon during the window.

File targets run at 100, 1,000 and 5,000 credentials in one folder (the write cost must not
grow with the folder); Secrets Manager and SSM at 1,000.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bench.peers import (
    CLIENT_SECRET,
    ROOT,
    SCRATCH,
    MotoProcess,
    ProcStats,
    aws_env,
    base_env,
    stop_process,
)
from tests.bench.section import Goal, goals_table

CLIENT_ID = "bench-process"
SECRET_ENV = "BENCH_CLIENT_SECRET"
LIFESPAN = 30
_LINE = re.compile(r"^(\S+)Z (\w+)\s+(.*)$")
_STEP = re.compile(r"^(rotated|adopted) credential=(\S+) .* duration_ms=(\d+)$")
_PUBLISHED = re.compile(r"^published credential=(\S+) ")


@contextlib.contextmanager
def stub_process(lifespan: int = LIFESPAN) -> Iterator[str]:
    """The Keycloak stub in its own process; yields its token URL."""
    env = {**base_env(), "STUB_CLIENT_SECRET": CLIENT_SECRET}
    cmd = [sys.executable, "-m", "rotator.testing.keycloak", "--client-id", CLIENT_ID]
    cmd += ["--lifespan", str(lifespan)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        if not url.startswith("http"):
            raise RuntimeError("the Keycloak stub process did not start")
        yield url
    finally:
        stop_process(proc)


def _target(kind: str, i: int, folder: Path) -> str:
    if kind == "file":
        return f'type = "file"\npath = "{folder / f"token-{i:05d}.json"}"\n'
    if kind == "ssm":
        return f'type = "ssm"\nparameter = "/bench/process/c{i:05d}"\n'
    return f'type = "secretsmanager"\nsecret_id = "bench/process/c{i:05d}"\ncreate = true\n'


def write_config(path: Path, token_url: str, kind: str, n: int, folder: Path) -> None:
    parts = [
        f'[[credentials]]\nname = "c{i:05d}"\ntoken_url = "{token_url}"\n'
        f'client_id = "{CLIENT_ID}"\nclient_secret_env = "{SECRET_ENV}"\n'
        f"[[credentials.targets]]\n{_target(kind, i, folder)}"
        for i in range(n)
    ]
    path.write_text("\n".join(parts))


def _ts(text: str) -> float:
    return datetime.fromisoformat(text + "+00:00").timestamp()


@dataclass(frozen=True)
class ProcessRun:
    target: str
    credentials: int
    seconds: float
    neighbours: int
    cold_start_s: float  # Popen to the last credential's first publish
    published_at_start: int  # credentials whose first step published (not adopted)
    window_s: float
    rotations: int
    cpu_ms_per_rotation: float
    cpu_pct: float
    rss_mib: float
    threads: int
    failures: int
    botocore_share: float | None = None  # of the on-CPU samples, if py-spy ran
    profile_top: tuple[tuple[str, float], ...] = ()


def _parse(log_text: str) -> tuple[dict[str, list[float]], dict[str, float], int]:
    """Step start times per credential, first publish per credential, failures."""
    steps: dict[str, list[float]] = {}
    first_publish: dict[str, float] = {}
    failures = 0
    for line in log_text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        message = m.group(3)
        if s := _STEP.match(message):
            at = _ts(m.group(1)) - int(s.group(3)) / 1000
            steps.setdefault(s.group(2), []).append(at)
        elif p := _PUBLISHED.match(message):
            first_publish.setdefault(p.group(1), _ts(m.group(1)))
        elif message.startswith("rotation failed"):
            failures += 1
    return steps, first_publish, failures


def _pyspy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100"]
    # --gil: only the thread holding the GIL is sampled, so shares are of Python CPU
    # time (threads blocked on a socket would otherwise count as busy).
    cmd += ["--gil", "--format", "raw", "--nonblocking", "--output", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_shares(raw: Path, top: int = 12) -> tuple[float, list[tuple[str, float]]]:
    """(botocore share, top functions by self samples) from py-spy's collapsed stacks."""
    total = 0
    boto = 0
    leaf: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        if "(botocore/" in stack or "/botocore/" in stack:  # py-spy shows package paths
            boto += count
        frame = stack.rsplit(";", 1)[-1]
        leaf[frame] = leaf.get(frame, 0) + count
    if not total:
        return float("nan"), []
    ranked = sorted(leaf.items(), key=lambda kv: -kv[1])[:top]
    return boto / total, [(name, n / total) for name, n in ranked]


def _workdir(kind: str, n: int, tag: str = "") -> Path:
    """One run's scratch folder: its config, log, profile and ``out`` (the token files)."""
    return SCRATCH / f"process-{kind}-{n}{tag}"


def run_one(
    token_url: str,
    kind: str,
    n: int,
    *,
    seconds: float,
    moto: MotoProcess | None = None,
    profile: bool = False,
    neighbours: int = 0,
    tag: str = "",
) -> ProcessRun:
    workdir = _workdir(kind, n, tag)
    shutil.rmtree(workdir, ignore_errors=True)  # left by a run that did not finish
    folder = workdir / "out"
    folder.mkdir(parents=True)
    config, log_path = workdir / "rotator.toml", workdir / "daemon.log"
    write_config(config, token_url, kind, n, folder)
    for i in range(neighbours):  # files rotator does not write, sharing the folder
        (folder / f"neighbour-{i:05d}.json").write_text("{}")
    env = {**base_env(), SECRET_ENV: CLIENT_SECRET}
    if moto is not None:
        moto.reset()
        env.update(aws_env(moto.endpoint))
        env.update(QUOTAS_OFF.get(kind, {}))
    cmd = [str(Path(sys.executable).parent / "rotator"), "--config", str(config), "run"]
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    with log_path.open("wb") as log_file:
        started = time.time()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    stats = ProcStats(proc.pid)

    def watch() -> None:
        while not stop.is_set() and proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                samples.append((time.time(), stats.cpu_ns()))
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    spy = None
    raw = workdir / "profile.txt"
    # Steady state: from the first re-rotations (~70 % of the token's life) to the end.
    steady_from = started + LIFESPAN * 0.8
    try:
        while time.time() < steady_from and proc.poll() is None:
            time.sleep(0.2)
        if profile:
            spy = _pyspy(proc.pid, started + seconds - time.time() + 60, raw)
        while time.time() < started + seconds and proc.poll() is None:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} daemon with {n} credentials exited; see {log_path}")
        rss, _hwm = stats.memory_kib()
        threads = stats.threads()
    finally:
        stop.set()
        watcher.join(5)
        if spy is not None:  # SIGINT: py-spy writes what it sampled and exits
            with contextlib.suppress(OSError):
                spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
        stop_process(proc)
    steps, first_publish, failures = _parse(log_path.read_text(errors="replace"))
    cold_end = max(first_publish.values(), default=started)
    # Steady: after every first publish (a long cold start overlaps the first re-rotations).
    window = [s for s in samples if s[0] >= max(steady_from, cold_end + 1.0)]
    (t0, c0), (t1, c1) = window[0], window[-1]
    rotations = sum(1 for chain in steps.values() for at in chain[1:] if t0 <= at <= t1)
    boto, top = float("nan"), list[tuple[str, float]]()
    if spy is not None and raw.exists():
        boto, top = profile_shares(raw)
    return ProcessRun(
        target=kind,
        credentials=n,
        neighbours=neighbours,
        seconds=time.time() - started,
        cold_start_s=cold_end - started if len(first_publish) == n else float("nan"),
        published_at_start=len(first_publish),
        window_s=t1 - t0,
        rotations=rotations,
        cpu_ms_per_rotation=(c1 - c0) / 1e6 / rotations if rotations else float("nan"),
        cpu_pct=(c1 - c0) / 1e9 / (t1 - t0) * 100,
        rss_mib=rss / 1024,
        threads=threads,
        failures=failures,
        botocore_share=boto if kind != "file" else None,
        profile_top=tuple(top),
    )


# 1,000 credentials with 30 s tokens are far past AWS's quotas (SSM ~3 writes/s, 100
# Secrets Manager versions a day per secret), which rotator's pacers and version guard
# enforce (issue 9): this bench measures CPU per rotation, so it turns them off for its
# daemon, as an operator with raised quotas would (the 5,000-credential bench of
# section 8 keeps them on, scaled).
QUOTAS_OFF: dict[str, dict[str, str]] = {
    "ssm": {"ROTATOR_SSM_WRITES_PER_SECOND": "0", "ROTATOR_SSM_READS_PER_SECOND": "0"},
    "secretsmanager": {
        "ROTATOR_SECRETSMANAGER_WRITES_PER_SECOND": "0",
        "ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY": "10000",
    },
}

# file x1,000 three times: one run moves by +-15 % (burst density, the host), and its
# goals are read from the median of the three.
PLAN = (
    ("file", 100),
    ("file", 1000),
    ("file", 1000),
    ("file", 1000),
    ("file", 5000),
    ("ssm", 1000),
    ("secretsmanager", 1000),
)
SECONDS = {100: 60.0, 1000: 60.0, 5000: 90.0}
COLD_START_GOAL_S = 3.0
FILE_CPU_GOAL_MS = 3.0
# Section 2's "ours CPU ms" as published (commit 4a2365d), when no full run's results exist.
OURS_PUBLISHED = {"file": 0.45, "secretsmanager": 0.08, "ssm": 0.10}
MARK_BEGIN = "<!-- bench_process: begin -->"
MARK_END = "<!-- bench_process: end -->"
CHART = ROOT / "tests" / "bench" / "chart_process.png"
CHART_LINK = "tests/bench/chart_process.png"


def run(
    moto: MotoProcess,
    *,
    quick: bool = False,
    plan: tuple[tuple[str, int], ...] = PLAN,
    ours: dict[str, float] | None = None,
) -> ProcessResult:
    """``ours``: section 2's "ours CPU ms" per target type from the same run, if it ran."""
    load_before = os.getloadavg()
    runs: list[ProcessRun] = []
    with stub_process() as token_url, _token_files_removed_at_the_end() as made:
        for kind, n in plan:
            if quick and n > 1000:
                continue
            tag = f"-{sum(1 for r in runs if (r.target, r.credentials) == (kind, n))}"
            made.append(_workdir(kind, n, tag) / "out")
            run_ = run_one(
                token_url,
                kind,
                n,
                seconds=40.0 if quick else SECONDS.get(n, 60.0),
                moto=None if kind == "file" else moto,
                profile=kind != "file",
                tag=tag,
            )
            runs.append(run_)
            print(
                f"[bench]   {kind} x{n}: {run_.cpu_ms_per_rotation:.2f} ms CPU/rotation, "
                f"cold start {run_.cold_start_s:.2f} s",
                flush=True,
            )
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, check=False, cwd=ROOT, capture_output=True, text=True)
    return ProcessResult(
        runs=tuple(runs),
        lifespan_s=LIFESPAN,
        load_before=load_before,
        load_after=os.getloadavg(),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=commit.stdout.strip(),
        ours=dict(OURS_PUBLISHED if ours is None else ours),
    )


@contextlib.contextmanager
def _token_files_removed_at_the_end() -> Iterator[list[Path]]:
    """The runs' token folders, removed when every run is done, not before each run: on
    a file system without a journal (this machine's ext4) a file created in the minutes
    after thousands of deletions in its folder's block group costs up to ~10x the CPU
    (the kernel skips each recently freed inode), which would be the bench's doing, not
    the daemon's."""
    made: list[Path] = []
    try:
        yield made
    finally:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class ProcessResult:
    """Section 6: the runs of the plan, and section 2's "ours" beside them."""

    runs: tuple[ProcessRun, ...]
    lifespan_s: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    date: str
    commit: str
    ours: dict[str, float]  # section 2's "ours CPU ms" per target type

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessResult:
        """From ``.bench/process.json``, also as written before it held date, commit, ours."""
        from tests.bench.stored import load

        ours = _ours(SCRATCH / "results.json")
        return load(cls, {"date": "", "commit": "", "ours": ours, **data})  # type: ignore[no-any-return]

    def markdown(self) -> str:
        return markdown(self)

    def draw_chart(self, stamp: str) -> Path | None:
        return chart(self)


def chart(result: ProcessResult) -> Path | None:
    """Whole-process CPU per rotation of the file runs, to ``chart_process.png``."""
    from tests.bench import charts

    return charts.process(result)


def _f(value: float | None, fmt: str = "{:.2f}") -> str:
    if value is None or value != value:  # None or NaN
        return "n/a"
    return fmt.format(value)


def markdown(result: ProcessResult) -> str:
    """Section 6 of BENCHMARKS.md, between markers so that ``main`` can splice it."""
    lb, la = result.load_before, result.load_after
    out = [
        MARK_BEGIN,
        "## 6. Whole process: CPU per rotation and cold start",
        "",
        f"Measured {result.date} (commit `{result.commit}`), "
        f"load average before/after {', '.join(f'{x:.1f}' for x in lb)} / "
        f"{', '.join(f'{x:.1f}' for x in la)} on the shared 2-CPU machine: absolute "
        "times are inflated by the neighbours; CPU per rotation much less so.",
        "",
        f"`rotator run` (the CLI) with N credentials, {result.lifespan_s} s tokens from "
        "the Keycloak stub in its own process (`python -m rotator.testing.keycloak`), moto "
        "in its own process. *Whole process* = the daemon's CPU (every thread, from /proc) "
        "over the steady window (after every credential's first publish and once "
        "re-rotations have begun) / the rotations its log shows in that window. *Ours* is "
        "section 2's figure for our code alone (fakes at both ends, one thread). *Cold "
        "start* = from `Popen` to the log line of the last credential's first publish. "
        "*botocore* = share of the daemon's samples holding the GIL that have a botocore "
        "frame (py-spy --gil, 100 Hz, non-blocking, during the window): the Python CPU "
        "spent in botocore and below it (urllib3, signing). The SSM and Secrets Manager "
        "daemons run with their pacers and the versions-a-day guard off "
        "(`ROTATOR_SSM_WRITES_PER_SECOND=0`, `ROTATOR_SSM_READS_PER_SECOND=0`, "
        "`ROTATOR_SECRETSMANAGER_WRITES_PER_SECOND=0`, "
        "`ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY=10000`): 1,000 tokens of 30 s are far "
        "past AWS's quotas, which these guard, and the figure is CPU, not quota.",
        "",
        *goals_table(_goals(result.runs), head="goal (issue 14)"),
        "| target | credentials | whole-process CPU ms / rotation | ours CPU ms (section 2) "
        "| botocore share | rotations in window (s) | CPU % of a core | cold start s "
        "| RSS MiB | failures |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result.runs:
        boto = r.botocore_share
        out.append(
            f"| {r.target} | {r.credentials:,}{_beside(r)} | {_f(r.cpu_ms_per_rotation)} "
            f"| {_f(result.ours.get(r.target))} "
            f"| {_f(boto * 100 if boto is not None else None, '{:.0f} %')} "
            f"| {r.rotations} ({r.window_s:.0f} s) | {r.cpu_pct:.1f} "
            f"| {_f(r.cold_start_s)} | {r.rss_mib:.1f} | {r.failures} |"
        )
    out += ["", f"![whole-process CPU per rotation, file targets]({CHART_LINK})"]
    out += ["", MARK_END, ""]
    return "\n".join(out)


def _beside(run: ProcessRun) -> str:
    extra = run.neighbours
    return f" (+{extra:,} other files in the folder)" if extra else ""


def _median(values: list[float], unit: str) -> tuple[float, str]:
    """The median of one plan row's runs, shown with the runs it is the median of."""
    mid = statistics.median(values)
    if len(values) == 1:
        return mid, f"{mid:.2f} {unit}"
    each = ", ".join(f"{x:.2f}" for x in values)
    return mid, f"{mid:.2f} {unit} (median of {len(values)} runs: {each})"


def _goals(runs: tuple[ProcessRun, ...]) -> list[Goal]:
    by: dict[tuple[str, int], list[ProcessRun]] = {}
    for r in runs:
        if not r.neighbours:
            by.setdefault((r.target, r.credentials), []).append(r)
    rows = []
    file1k = by.get(("file", 1000))
    if file1k:
        cpu, shown = _median([r.cpu_ms_per_rotation for r in file1k], "ms")
        what = "file, whole-process CPU / rotation at 1,000"
        rows.append(Goal(what, "<= 3 ms", shown, cpu <= FILE_CPU_GOAL_MS))
        flat = [
            statistics.median(r.cpu_ms_per_rotation for r in by[("file", n)])
            for n in (100, 1000, 5000)
            if ("file", n) in by
        ]
        if len(flat) > 1:
            shown = " / ".join(f"{x:.2f}" for x in flat)
            measured = f"{shown} ms (max/min {max(flat) / min(flat):.2f})"
            what = "file at 100 / 1,000 / 5,000 in one folder"
            rows.append(Goal(what, "flat", measured, None, "see notes"))
        cold, shown = _median([r.cold_start_s for r in file1k], "s")
        what = "cold start, 1,000 file targets"
        rows.append(Goal(what, "<= 3 s", shown, cold <= COLD_START_GOAL_S))
    for kind in ("ssm", "secretsmanager"):
        for r in by.get((kind, 1000), [])[-1:]:
            boto = r.botocore_share
            share = f"{boto * 100:.0f} % in botocore" if boto is not None and boto == boto else ""
            what = f"{kind}, whole-process CPU / rotation at 1,000"
            measured = f"{r.cpu_ms_per_rotation:.2f} ms, {share}"
            rows.append(Goal(what, "reported", measured, None, "reported"))
    return rows


def splice(text: str, section: str) -> str:
    """Replace this section in BENCHMARKS.md, or append it."""
    if MARK_BEGIN in text and MARK_END in text:
        head, _, rest = text.partition(MARK_BEGIN)
        _, _, tail = rest.partition(MARK_END)
        return head + section.rstrip("\n") + tail
    return text.rstrip("\n") + "\n\n" + section


def _ours(results_json: Path) -> dict[str, float]:
    """Section 2's 'ours' CPU per target type from the last full run, if any."""
    import json

    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        targets = json.loads(results_json.read_text())["steady"]["targets"]
        return {kind: t["ours"]["cpu_ms"] for kind, t in targets.items()}
    return dict(OURS_PUBLISHED)


def main(argv: list[str]) -> int:
    """python -m tests.bench.bench_process [KIND N [SECONDS]]: one run printed, or with
    no arguments the whole plan, written into BENCHMARKS.md as section 6."""
    import json

    if argv[:1] == ["render"]:  # re-render section 6 from .bench/process.json
        result = ProcessResult.from_json(json.loads((SCRATCH / "process.json").read_text()))
        chart(result)
        path = ROOT / "BENCHMARKS.md"
        path.write_text(splice(path.read_text(), result.markdown()))
        print(result.markdown())
        return 0
    if argv:  # KIND N [SECONDS [NEIGHBOURS]]: one run, added to .bench/process.json
        kind, n = argv[0], int(argv[1])
        secs = float(argv[2]) if len(argv) > 2 else 60.0
        extra = int(argv[3]) if len(argv) > 3 else 0
        with contextlib.ExitStack() as stack:
            aws = stack.enter_context(MotoProcess()) if kind != "file" else None
            url = stack.enter_context(stub_process())
            stack.enter_context(_token_files_removed_at_the_end()).append(_workdir(kind, n) / "out")
            one = run_one(
                url, kind, n, seconds=secs, moto=aws, profile=aws is not None, neighbours=extra
            )
        print(json.dumps(asdict(one), indent=1))
        saved = SCRATCH / "process.json"
        if saved.exists():
            everything = json.loads(saved.read_text())
            everything["runs"].append(asdict(one))
            saved.write_text(json.dumps(everything, indent=1))
        return 0
    with MotoProcess() as moto:
        result = run(moto, ours=_ours(SCRATCH / "results.json"))
    SCRATCH.mkdir(exist_ok=True)
    (SCRATCH / "process.json").write_text(json.dumps(result.to_json(), indent=1))
    chart(result)
    path = ROOT / "BENCHMARKS.md"
    path.write_text(splice(path.read_text(), result.markdown()))
    print(result.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
