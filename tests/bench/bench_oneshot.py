"""1. One-shot cost: ``rotator once --force`` against the floor script and curl + aws CLI.

Runs are interleaved (the order rotates every round) so drift in machine load hits
every variant alike; medians are reported. Then ``-X importtime`` shows where start-up
goes, and per-call latencies of the moto server explain the wall-time gap.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.peers import (
    CLIENT_SECRET,
    ROOT,
    SCRATCH,
    MotoProcess,
    Run,
    aws_client,
    aws_env,
    base_env,
    measure,
)
from tests.bench.sections.oneshot import (
    AwsCli,
    ImportRow,
    ImportSummary,
    OneshotResult,
    Phases,
    Ratio,
    VariantRow,
)

HERE = Path(__file__).resolve().parent
CLIENT_ID = "bench-oneshot"
ROTATOR_SECRET_ID = "bench/rotator"
FLOOR_SECRET_ID = "bench/floor"
SHELL_SECRET_ID = "bench/shell"
FLOOR_PARAMETER = "/bench/floor"

# On the `once` path with one Secrets Manager target, none of these is needed.
UNNEEDED_ON_ONCE = {
    "rotator.stores.ssm": "the SSM backend",
    "rotator.stores.file": "the file backend",
    "rotator.stores.memory": "the in-memory (test) backend",
    "rotator.health": "metrics and health endpoints (daemon only)",
    "prometheus_client": "metrics (daemon with a metrics port only)",
    "rotator.scheduler": "the daemon's scheduler",
    "apscheduler": "the daemon's scheduler",
    "rotator.status": "`rotator status` only",
    "tomllib": "a TOML config file (this run is configured by environment)",
    "rotator.testing": "test helpers",
}
# With only a file target, nothing of AWS is needed at all.
UNNEEDED_ON_FILE_ONCE = {
    "rotator.stores.secretsmanager": "the Secrets Manager backend",
    "rotator.stores.ssm": "the SSM backend",
    "rotator.stores.aws": "botocore error mapping (AWS stores only)",
    "rotator.stores.memory": "the in-memory (test) backend",
    "botocore": "AWS SDK: no AWS target",
    "boto3": "AWS SDK: no AWS target",
}
# Needed by the path but worth knowing about.
NOTABLE = {
    "s3transfer": "imported by `import boto3` itself (boto3.compat); rotator builds its "
    "clients with botocore.session, so it is here only if something imports boto3",
    "tenacity": "the retry loop; `rotator.retry` imports it after a first failure, so a "
    "successful run shows it only if something imports it early",
}


# ---------------------------------------------------------------- the aws CLI


def find_aws_cli() -> tuple[str | None, str]:
    """The aws CLI to use and how it was found; installs it into .bench/ if missing."""
    local = SCRATCH / "awscli-venv" / "bin" / "aws"
    if local.exists():
        return str(local), "awscli in .bench/awscli-venv"
    found = shutil.which("aws")
    if found and "/.pyenv/shims/" in found and shutil.which("pyenv"):
        # A pyenv shim is a shell script that re-resolves the interpreter on every call
        # (tens of ms); measure the real program, as a normal install would run it.
        real = subprocess.run(
            ["pyenv", "which", "aws"], check=False, capture_output=True, text=True
        )
        if real.returncode == 0 and real.stdout.strip():
            return real.stdout.strip(), "aws on PATH (pyenv shim resolved to the real script)"
    if found:
        return found, "aws on PATH"
    venv = SCRATCH / "awscli-venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "awscli"], check=True, timeout=600
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"aws CLI missing and `pip install awscli` failed ({type(exc).__name__})"
    return str(local), "awscli installed into .bench/awscli-venv"


def aws_cli_version(path: str) -> str:
    out = subprocess.run(
        [path, "--version"], check=False, capture_output=True, text=True, timeout=60
    )
    return (out.stdout or out.stderr).strip().split()[0] if (out.stdout or out.stderr) else "?"


# ---------------------------------------------------------------- variants


def rotator_cmd() -> list[str]:
    script = Path(sys.executable).parent / "rotator"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rotator"]


@dataclass
class Variant:
    key: str
    label: str
    cmd: list[str]
    env: dict[str, str]
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))


def _env(stub_url: str, endpoint: str) -> dict[str, str]:
    return {
        **base_env(),
        **aws_env(endpoint),
        "ROTATOR_TOKEN_URL": stub_url,
        "ROTATOR_CLIENT_ID": CLIENT_ID,
        "ROTATOR_CLIENT_SECRET": CLIENT_SECRET,
        "ROTATOR_SECRETSMANAGER_SECRET_ID": ROTATOR_SECRET_ID,
        "ROTATOR_SECRETSMANAGER_CREATE": "true",
        # A 300 s token is past the Secrets Manager version quota (moto has none): without
        # this the quota gate refuses the target before any write (exit 2).
        "ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY": "1000000",
        "ROTATOR_LOG_LEVEL": "warning",
    }


def variants(stub_url: str, endpoint: str, aws_cli: str | None) -> list[Variant]:
    env = _env(stub_url, endpoint)
    floor_env = {**env, "FLOOR_SECRET_ID": FLOOR_SECRET_ID, "FLOOR_PARAMETER": FLOOR_PARAMETER}
    out = [
        Variant("rotator", "rotator once --force", [*rotator_cmd(), "once", "--force"], env),
        Variant(
            "floor",
            "floor: requests POST + boto3 PutSecretValue",
            [sys.executable, str(HERE / "floor_script.py")],
            {**floor_env, "FLOOR_TARGET": "secretsmanager"},
        ),
        Variant(
            "floor_ssm",
            "floor (SSM): requests POST + boto3 PutParameter",
            [sys.executable, str(HERE / "floor_script.py")],
            {**floor_env, "FLOOR_TARGET": "ssm"},
        ),
        Variant(
            "floor_botocore",
            "context: the floor with botocore alone (no boto3)",
            [sys.executable, str(HERE / "floor_script.py")],
            {**floor_env, "FLOOR_TARGET": "secretsmanager", "FLOOR_CLIENT": "botocore"},
        ),
        Variant(
            "imports",
            "context: python -c 'import boto3, requests'",
            [sys.executable, "-c", "import boto3, requests"],
            env,
        ),
        Variant("python", "context: python -c pass", [sys.executable, "-c", "pass"], env),
    ]
    if aws_cli is not None:
        out.insert(
            3,
            Variant(
                "shell",
                "shell: curl + aws CLI",
                ["bash", str(HERE / "shell_script.sh")],
                {**env, "AWS_CLI": aws_cli, "SHELL_SECRET_ID": SHELL_SECRET_ID},
            ),
        )
    return out


# ---------------------------------------------------------------- importtime


@dataclass
class Import:
    name: str
    depth: int
    self_us: int
    cum_us: int
    parent: Import | None = None

    def chain(self) -> str:
        """``module <- importer <- ... <- top-level import``."""
        names = [self.name]
        row = self.parent
        while row is not None:
            names.append(row.name)
            row = row.parent
        return " <- ".join(names)


def parse_importtime(text: str) -> list[Import]:
    rows: list[Import] = []
    for line in text.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        try:
            self_us, cum_us = int(parts[0]), int(parts[1])
        except ValueError:
            continue  # the header line
        name_field = parts[2]
        depth = (len(name_field) - len(name_field.lstrip()) - 1) // 2
        rows.append(Import(name_field.strip(), depth, self_us, cum_us))
    # Post-order: a module's children are printed just before it, one level deeper.
    waiting: dict[int, list[Import]] = {}
    for row in rows:
        for child in waiting.pop(row.depth + 1, []):
            child.parent = row
        waiting.setdefault(row.depth, []).append(row)
    return rows


def _own_rows(rows: list[Import]) -> dict[str, Import]:
    """One row per module: the one that really loaded it. A name can show twice: a
    submodule import first loads its package, and that outer entry's cumulative time
    holds the whole package; the smallest entry is the module itself."""
    out: dict[str, Import] = {}
    for row in rows:
        if row.name not in out or row.cum_us < out[row.name].cum_us:
            out[row.name] = row
    return out


def importtime_summary(
    runs: list[list[Import]],
    baseline: list[list[Import]] | None = None,
    unneeded_map: dict[str, str] | None = None,
) -> ImportSummary:
    """Median cumulative µs per module over several runs, with who imported it.

    ``baseline`` (the floor script's runs) tells which modules the floor loads anyway:
    a module rotator imports early that the floor imports too is no saving to cut.
    """
    per_run = [_own_rows(rows) for rows in runs]
    names = {name for own in per_run for name in own}
    median = {
        name: statistics.median(own[name].cum_us for own in per_run if name in own)
        for name in names
    }
    self_us = {
        name: statistics.median(own[name].self_us for own in per_run if name in own)
        for name in names
    }
    floor_names = {row.name for rows in (baseline or []) for row in rows}
    first: dict[str, Import] = {}
    for own in per_run:
        for name, row in own.items():
            first.setdefault(name, row)
    children: dict[int, list[Import]] = {}
    for row in first.values():
        if row.parent is not None:
            children.setdefault(id(row.parent), []).append(row)

    def subtree(row: Import) -> list[Import]:
        out = [row]
        for child in children.get(id(row), []):
            out.extend(subtree(child))
        return out

    def describe(name: str, why: str = "") -> ImportRow:
        row = first[name]
        return ImportRow(
            module=name,
            cum_us=median[name],
            imported_by=row.parent.name if row.parent else "(top level)",
            chain=row.chain(),
            # what would go if it were not imported: its subtree, less what the floor
            # (requests + boto3) loads anyway
            saving_us=sum(
                self_us.get(r.name, 0) for r in subtree(row) if r.name not in floor_names
            ),
            why=why,
        )

    top = sorted(names, key=lambda n: median[n], reverse=True)[:16]
    unneeded_map = UNNEEDED_ON_ONCE if unneeded_map is None else unneeded_map
    unneeded = [describe(n, why) for n, why in unneeded_map.items() if n in median]
    notable = [describe(n, why) for n, why in NOTABLE.items() if n in median]
    extra: dict[str, float] = {}
    for name in names - floor_names if baseline else set():
        group = name if name.startswith("rotator") else name.split(".")[0]
        extra[group] = extra.get(group, 0.0) + self_us[name]
    union: set[str] = set()
    for name in unneeded_map:
        if name in first:
            union |= {r.name for r in subtree(first[name])}
    totals = [sum(r.cum_us for r in rows if r.depth == 0) for rows in runs]
    return ImportSummary(
        total_us=statistics.median(totals),
        # all unneeded subtrees together (they nest), less what the baseline loads
        unneeded_saving_us=sum(self_us.get(n, 0) for n in union - floor_names),
        modules=len(names),
        top=tuple(describe(n) for n in top),
        unneeded=tuple(sorted(unneeded, key=lambda r: -r.cum_us)),
        notable=tuple(notable),
        # modules rotator loads and the floor does not, self time grouped by package
        beyond_floor_us=dict(sorted(extra.items(), key=lambda kv: -kv[1])),
        beyond_floor_total_us=sum(extra.values()),
    )


def importtime_runs(cmd: list[str], env: dict[str, str], n: int) -> list[list[Import]]:
    out = []
    for _ in range(n):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", *cmd],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        )
        out.append(parse_importtime(proc.stderr))
    return out


# ---------------------------------------------------------------- phases


def phases(
    rotator_env: dict[str, str], floor_env: dict[str, str], rounds: int
) -> dict[str, Phases]:
    """Median wall ms of start-up, imports and work, rotator vs the floor, interleaved."""
    samples: dict[str, list[dict[str, float]]] = {"rotator": [], "floor": []}
    envs = {"rotator": rotator_env, "floor": floor_env}
    for i in range(rounds + 1):
        for mode in ("rotator", "floor") if i % 2 else ("floor", "rotator"):
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, str(HERE / "phases.py"), mode],
                env=envs[mode],
                check=True,
                capture_output=True,
                text=True,
            )
            wall = (time.perf_counter() - t) * 1000
            data = json.loads(out.stdout)
            data["startup_ms"] = wall - data["imports_ms"] - data["work_ms"]
            data["wall_ms"] = wall
            if i:  # the first round warms up
                samples[mode].append(data)
    return {
        mode: Phases(
            **{
                key: statistics.median(x[key] for x in rows)
                for key in ("startup_ms", "imports_ms", "work_ms", "wall_ms")
            }
        )
        for mode, rows in samples.items()
    }


# ---------------------------------------------------------------- moto call latency


def call_latency_ms(endpoint: str, n: int = 25) -> dict[str, float]:
    """Client-observed wall ms per Secrets Manager call on this moto server (boto3 in-process)."""
    import uuid

    sm = aws_client("secretsmanager", endpoint)
    sid = "bench/latency"
    sm.create_secret(Name=sid, SecretString="{}")
    samples: dict[str, list[float]] = {
        k: []
        for k in ("GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage", "PutParameter")
    }
    ssm = aws_client("ssm", endpoint)
    for _ in range(n):
        t = time.perf_counter()
        cur = sm.get_secret_value(SecretId=sid, VersionStage="AWSCURRENT")
        samples["GetSecretValue"].append(time.perf_counter() - t)
        new = str(uuid.uuid4())
        t = time.perf_counter()
        sm.put_secret_value(
            SecretId=sid, SecretString="{}", ClientRequestToken=new, VersionStages=["AWSPENDING"]
        )
        samples["PutSecretValue"].append(time.perf_counter() - t)
        t = time.perf_counter()
        sm.update_secret_version_stage(
            SecretId=sid,
            VersionStage="AWSCURRENT",
            MoveToVersionId=new,
            RemoveFromVersionId=cur["VersionId"],
        )
        samples["UpdateSecretVersionStage"].append(time.perf_counter() - t)
        sm.update_secret_version_stage(
            SecretId=sid, VersionStage="AWSPENDING", RemoveFromVersionId=new
        )
        t = time.perf_counter()
        ssm.put_parameter(Name="/bench/latency", Value="{}", Type="SecureString", Overwrite=True)
        samples["PutParameter"].append(time.perf_counter() - t)
    return {k: statistics.median(v[3:]) * 1000 for k, v in samples.items()}


# ---------------------------------------------------------------- the section


def run(moto: MotoProcess, stub: Any, *, rounds: int = 9, importtime_n: int = 5) -> OneshotResult:
    stub.set_access_token_lifespan(300)
    moto.reset()
    sm = aws_client("secretsmanager", moto.endpoint)
    for sid in (FLOOR_SECRET_ID, SHELL_SECRET_ID):
        sm.create_secret(Name=sid, SecretString="{}")
    aws_cli, aws_note = find_aws_cli()
    vs = variants(stub.token_url, moto.endpoint, aws_cli)
    for v in vs:  # warm-up: page cache, .pyc files, the secret created by rotator
        first = measure(v.cmd, v.env)
        if first.returncode != 0:
            raise RuntimeError(f"{v.label} failed (exit {first.returncode})")
    for i in range(rounds):
        shift = i % len(vs)
        for v in vs[shift:] + vs[:shift]:
            result = measure(v.cmd, v.env)
            if result.returncode != 0:
                raise RuntimeError(f"{v.label} failed (exit {result.returncode})")
            v.runs.append(result)
    by = {v.key: v for v in vs}
    rows = tuple(
        VariantRow(
            key=v.key,
            label=v.label,
            wall_ms=v.median("wall") * 1000,
            rss_mib=v.median("maxrss_kib") / 1024,
            cpu_ms=v.median("cpu") * 1000,
            n=len(v.runs),
        )
        for v in vs
    )
    ratios: dict[str, Ratio] = {}
    pairs = [("rotator", "floor"), ("rotator", "shell"), ("floor", "shell")]
    for a, b in pairs:
        if a in by and b in by:
            per_round = sorted(x.wall / y.wall for x, y in zip(by[a].runs, by[b].runs, strict=True))
            ratios[f"{a}/{b}"] = Ratio(
                wall=by[a].median("wall") / by[b].median("wall"),
                rss=by[a].median("maxrss_kib") / by[b].median("maxrss_kib"),
                cpu=by[a].median("cpu") / by[b].median("cpu"),
                # the same ratio within each round: its spread shows the noise
                wall_p25=per_round[len(per_round) // 4],
                wall_p75=per_round[(3 * len(per_round)) // 4],
            )
    env = by["rotator"].env
    floor_runs = importtime_runs([str(HERE / "floor_script.py")], by["floor"].env, importtime_n)
    once_imports = importtime_summary(
        importtime_runs(["-m", "rotator", "once", "--force"], env, importtime_n), floor_runs
    )
    floor_imports = importtime_summary(floor_runs)
    file_env = {k: v for k, v in env.items() if not k.startswith("ROTATOR_SECRETSMANAGER")}
    file_env["ROTATOR_FILE_PATH"] = str(SCRATCH / "oneshot-token.json")
    requests_only = importtime_runs(["-c", "import requests"], file_env, importtime_n)
    file_imports = importtime_summary(
        importtime_runs(["-m", "rotator", "once", "--force"], file_env, importtime_n),
        requests_only,
        UNNEEDED_ON_FILE_ONCE,
    )
    tokens = stub.count(grant_type="client_credentials")
    present = {x.module for x in once_imports.unneeded}
    return OneshotResult(
        rows=rows,
        ratios=ratios,
        rounds=rounds,
        aws_cli=AwsCli(aws_cli, aws_note, aws_cli_version(aws_cli))
        if aws_cli
        else AwsCli(None, aws_note),
        importtime=once_imports,
        importtime_file=file_imports,
        floor_importtime_total_us=floor_imports.total_us,
        call_latency_ms=call_latency_ms(moto.endpoint),
        phases=phases(env, by["floor"].env, rounds),
        lazy_absent=tuple(m for m in UNNEEDED_ON_ONCE if m not in present),
        token_requests=tokens,
        python=os.path.realpath(sys.executable).replace(str(ROOT) + "/", ""),
    )
