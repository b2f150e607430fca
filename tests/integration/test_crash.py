"""Scenario 6: kill -9 at any moment never leaves a store holding anything but a
complete document of a token the server issued, and ``expires_at`` never goes back.

One credential publishes to all three store types (a file, Secrets Manager and
SSM through a moto server); the order of the targets changes from run to run, so
a kill lands before, between and inside every store's publish. While processes
are being killed, one reader thread per store reads it continuously, as a
consumer would.

* The random test first kills ``rotator run`` daemons (2 s tokens, refreshed
  about every 1.5 s) at random moments, then runs ``rotator once --force``
  again and again against the KeycloakStub, SIGKILLs each run at a random delay
  drawn mostly from the fetch through the last publish (measured as it goes:
  ~0.25 s of start-up, then ~20-40 ms of work), and goes on until every store
  has published at least 100 distinct tokens (CRASH_TEST_ROTATIONS changes
  that). Tokens are on whole seconds and a store keeps a token that expires at
  the same second, so the stub's lifespan grows by a second per run: every
  run's token is strictly later, and every publish that is not killed writes.
  Set CRASH_TEST_SEED to replay a run; the seed, the counts and where kills
  landed are printed and written to ``<pytest basetemp>/crash-report.json``.
* The deterministic test SIGKILLs the process at exact points (between the
  Secrets Manager write and its promotion, just after the promotion (the
  publish's last call), before and after the SSM write, with the file lock
  held and the temp file empty, just before the rename, ...), each followed by
  a clean run that must recover.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.fixtures.procs import (
    ROTATOR,
    Daemon,
    StoreWatcher,
    cli_env,
    file_reader,
    run_cli,
    secretsmanager_reader,
    ssm_reader,
)

pytestmark = pytest.mark.timeout(1200)  # above RANDOM_BUDGET: the budget fails first, with figures

LIFESPAN = 2.0
ROTATIONS = int(
    os.environ.get("CRASH_TEST_ROTATIONS", "100")
)  # distinct published tokens required in every store
# A hang detector, not a speed requirement: on a loaded 2-core machine 100 rotations
# have taken more than 170 s (57 per store in 174 s, load average 8).
RANDOM_BUDGET = 900.0  # seconds before the random test gives up reaching ROTATIONS
DAEMON_ROUNDS = 4
CLIENT_ID = "oms-client"
CLIENT_SECRET = "crash-client-secret"
SECRET_ID = "crash/token"
PARAMETER = "/crash/token"
TOKEN_FILE = "token.json"
STORES = ("secretsmanager", "ssm", "file")

# Runs the CLI in a subprocess that SIGKILLs itself at one exact point.
CRASH_WRAPPER = r"""
import os, signal, sys

point, args = sys.argv[1], sys.argv[2:]


def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


if point.startswith("aws:"):  # aws:<botocore event>, e.g. after-call.ssm.PutParameter
    from rotator import app

    event = point[4:]
    build = app.AwsClients._build

    def hooked(self, service, region, *rest):
        client = build(self, service, region, *rest)
        client.meta.events.register(event, die)
        return client

    app.AwsClients._build = hooked
elif point == "after-fetch":
    from rotator import oauth

    post = oauth.TokenClient._post

    def hooked_post(self, form, grant_type):
        post(self, form, grant_type)
        die()

    oauth.TokenClient._post = hooked_post
elif point.startswith("file:"):  # file:chmod (temp file made, lock held) / file:rename
    wanted = {"file:chmod": "os.chmod", "file:rename": "os.rename"}[point]

    def audit(event, event_args):
        if event != wanted:
            return
        if wanted == "os.chmod" and isinstance(event_args[0], int):
            die()  # os.fchmod of the fresh temp file: empty, lock held
        if wanted == "os.rename" and str(event_args[0]).endswith(".tmp"):
            die()  # the temp file is complete and fsynced, not yet renamed

    sys.addaudithook(audit)
else:
    raise SystemExit(f"unknown crash point {point!r}")

from rotator.cli import main

sys.exit(main(args))
"""


@pytest.fixture
def stub() -> Iterator[KeycloakStub]:
    with KeycloakStub(
        clients={CLIENT_ID: CLIENT_SECRET}, access_token_lifespan=LIFESPAN
    ) as keycloak:
        yield keycloak


def _target_tables(file_path: Path) -> dict[str, str]:
    return {
        "secretsmanager": (
            f'[[credentials.targets]]\ntype = "secretsmanager"\n'
            f'secret_id = "{SECRET_ID}"\ncreate = true\n'
        ),
        "ssm": f'[[credentials.targets]]\ntype = "ssm"\nparameter = "{PARAMETER}"\n',
        "file": f'[[credentials.targets]]\ntype = "file"\npath = "{file_path}"\n',
    }


def write_configs(folder: Path, token_url: str, file_path: Path) -> list[Path]:
    """One config per rotation of the target order, so every store gets to be first,
    middle and last: a kill lands before, between and after each one's publish."""
    tables = _target_tables(file_path)
    paths = []
    for shift in range(len(STORES)):
        order = STORES[shift:] + STORES[:shift]
        text = (
            "[[credentials]]\n"
            'name = "crash"\n'
            f'token_url = "{token_url}"\n'
            f'client_id = "{CLIENT_ID}"\n'
            'client_secret_env = "CRASH_CLIENT_SECRET"\n'
            "[credentials.refresh]\n"
            "retry_budget_seconds = 5\n"
            "max_retry_wait_seconds = 0.5\n" + "".join(tables[name] for name in order)
        )
        path = folder / f"crash-{'-'.join(order)}.toml"
        path.write_text(text)
        paths.append(path)
    return paths


PUBLISHED = " published credential="


def log_time(line: str) -> float:
    """The epoch seconds of a text-format log line (``2026-11-29T00:23:23.143Z ...``)."""
    stamp = line.split(" ", 1)[0]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def watchers_for(aws: AwsEnv, file_path: Path) -> dict[str, StoreWatcher]:
    return {
        "secretsmanager": StoreWatcher(
            "secretsmanager", secretsmanager_reader(aws, SECRET_ID), interval=0.04
        ),
        "ssm": StoreWatcher("ssm", ssm_reader(aws, PARAMETER), interval=0.04),
        "file": StoreWatcher("file", file_reader(file_path), interval=0.01),
    }


def sm_stages(aws: AwsEnv) -> Counter[str]:
    versions = aws.secretsmanager.list_secret_version_ids(
        SecretId=SECRET_ID, IncludeDeprecated=True
    )["Versions"]
    stages: Counter[str] = Counter(stage for v in versions for stage in v.get("VersionStages", []))
    stages["versions"] = len(versions)
    # rotator's pending label on a version that is not AWSCURRENT: an unfinished publish
    stages["unpromoted_pending"] = sum(
        1
        for v in versions
        if "RotatorPending" in v.get("VersionStages", [])
        and "AWSCURRENT" not in v.get("VersionStages", [])
    )
    return stages


def current_values(aws: AwsEnv, file_path: Path) -> dict[str, str]:
    sm = aws.secretsmanager.get_secret_value(SecretId=SECRET_ID, VersionStage="AWSCURRENT")
    ssm = aws.ssm.get_parameter(Name=PARAMETER, WithDecryption=True)["Parameter"]
    return {
        "secretsmanager": sm["SecretString"],
        "ssm": ssm["Value"],
        "file": file_path.read_text(),
    }


def leftovers(folder: Path) -> list[Path]:
    """Anything next to the token file but the file and its lock."""
    return sorted(p for p in folder.iterdir() if p.name not in (TOKEN_FILE, TOKEN_FILE + ".lock"))


def check_watchers(
    watchers: dict[str, StoreWatcher], stub: KeycloakStub, minimum: int
) -> tuple[dict[str, Any], list[str]]:
    """A summary per store, and every problem any read showed."""
    issued = stub.issued_tokens()
    summary: dict[str, Any] = {}
    problems: list[str] = []
    for name, watcher in watchers.items():
        verdict = watcher.check(issued)
        summary[name] = {
            "reads": verdict.reads,
            "distinct_tokens": len(verdict.tokens),
            "read_errors": len(watcher.errors),
        }
        problems += verdict.problems[:10]
        problems += [f"{name}: read failed: {e}" for e in watcher.errors[:5]]
        if len(verdict.tokens) < minimum:
            problems.append(f"{name}: only {len(verdict.tokens)} distinct tokens seen")
    return summary, problems


class Ramp:
    """Lengthens the stub's token lifespan by one second before every run.

    Tokens are on whole seconds and a store keeps what it holds when the new token
    expires at the same second, so two runs within one second would publish only
    once. With the ramp every run's token expires strictly later than the last
    one's: every publish that is not killed really writes, and a clean run after
    a crash must replace what every store holds.
    """

    def __init__(self, stub: KeycloakStub, start: float) -> None:
        self._stub = stub
        self.lifespan = start

    def bump(self) -> None:
        self.lifespan += 1.0
        self._stub.set_access_token_lifespan(self.lifespan)


def assert_recovered(aws: AwsEnv, file_path: Path, stub: KeycloakStub) -> str:
    """A clean run after the crashes: every store holds its token, stages are sane."""
    values = current_values(aws, file_path)
    tokens = {name: json.loads(value)["access_token"] for name, value in values.items()}
    if len(set(tokens.values())) != 1:
        shown = {
            name: {k: v for k, v in json.loads(value).items() if k != "access_token"}
            | {"token": tokens[name][-8:]}
            for name, value in values.items()
        }
        raise AssertionError(f"stores disagree after a clean run: {shown} {dict(sm_stages(aws))}")
    token = tokens["file"]
    assert token in stub.issued_tokens()
    stages = sm_stages(aws)
    assert stages["AWSCURRENT"] == 1, stages
    assert stages["unpromoted_pending"] == 0, stages  # the pending label stays on AWSCURRENT only
    assert stages["AWSPREVIOUS"] <= 1, stages
    assert (file_path.stat().st_mode & 0o777) == 0o600
    return token


def test_kill_9_at_random_moments_never_corrupts_any_store(
    aws: AwsEnv,
    stub: KeycloakStub,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    seed = int(os.environ.get("CRASH_TEST_SEED") or time.time_ns() % 2**32)
    rng = random.Random(seed)
    print(f"CRASH_TEST_SEED={seed}")
    folder = tmp_path / "out"
    folder.mkdir()
    file_path = folder / TOKEN_FILE
    configs = write_configs(tmp_path, stub.token_url, file_path)
    env = cli_env(aws, CRASH_CLIENT_SECRET=CLIENT_SECRET)
    watchers = watchers_for(aws, file_path)
    # When, after its start, a run asks for its token, has published everywhere, and
    # has exited: measured on the runs that are left alone, from the stub's request log
    # and the run's own log lines. Kills are drawn mostly between the first two.
    fetch_offsets: list[float] = []
    publish_ends: list[float] = []
    durations: list[float] = []
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    daemon_fetches = 0
    started = time.monotonic()
    for watcher in watchers.values():
        watcher.start()
    try:
        # First the daemon, killed at random while it adopts, waits and rotates
        # (a 2 s token is refreshed about every 1.5 s).
        for _ in range(DAEMON_ROUNDS):
            before = stub.count(outcome="ok")
            with Daemon(
                env, tmp_path / "daemons", args=("--config", str(rng.choice(configs)))
            ) as d:
                time.sleep(rng.uniform(0.4, 3.0))
                if not d.is_running:
                    failures.append(d.stop().describe())
                result = d.kill()
            outcomes["daemon_rounds"] += 1
            outcomes[f"daemon_exit_{result.returncode}"] += 1
            daemon_fetches += stub.count(outcome="ok") - before
        # Then `once --force` until every store has published ROTATIONS tokens.
        ramp = Ramp(stub, LIFESPAN)
        while min(w.distinct_values for w in watchers.values()) < ROTATIONS:
            elapsed = time.monotonic() - started
            assert elapsed < RANDOM_BUDGET, (
                f"seed {seed}: fewer than {ROTATIONS} rotations per store after {elapsed:.0f}s: "
                + str({n: w.distinct_values for n, w in watchers.items()})
                + f" {dict(outcomes)}"
            )
            config = str(rng.choice(configs))
            ramp.bump()
            fetch_at = statistics.median(fetch_offsets[-25:]) if fetch_offsets else 0.3
            published_at = statistics.median(publish_ends[-25:]) if publish_ends else 0.4
            published_at = max(published_at, fetch_at + 0.02)
            exit_at = statistics.median(durations[-25:]) if durations else 0.5
            draw = rng.random()
            # Some runs are left alone: they keep the estimates honest (the runs that
            # beat their kill are the short ones) and make progress.
            unkilled = len(durations) < 3 or draw >= 0.7
            if unkilled:
                delay = 30.0
            elif draw < 0.1:  # anywhere in the process's life
                delay = rng.uniform(0.0, exit_at)
            else:  # from just before the fetch to just after the last publish
                delay = rng.uniform(fetch_at - 0.03, published_at + 0.01)
            requests_before = len(stub.requests())
            spawned_at = time.time()
            t0 = time.monotonic()
            proc = subprocess.Popen(
                [*ROTATOR, "once", "--force", "--config", config],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.kill()  # SIGKILL: kill -9
            try:
                _, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            new_requests = stub.requests()[requests_before:]
            if new_requests:
                fetch_offsets.append(new_requests[0].time - spawned_at)
            if proc.returncode == -signal.SIGKILL:
                outcomes["killed"] += 1
            elif proc.returncode == 0:
                outcomes["completed"] += 1
                if unkilled:
                    durations.append(time.monotonic() - t0)
                    ends = [
                        log_time(line) for line in err.decode().splitlines() if PUBLISHED in line
                    ]
                    if ends:
                        publish_ends.append(max(ends) - spawned_at)
            else:
                failures.append(f"once exited {proc.returncode}: {err.decode(errors='replace')}")
        random_phase = time.monotonic() - started
        before_recovery = {"sm_stages": dict(sm_stages(aws)), "leftovers": leftovers(folder)}
        ramp.bump()
        final = run_cli(["once", "--force", "--config", str(configs[0])], env, timeout=60)
        assert final.returncode == 0, final.describe()
        time.sleep(0.2)  # let every watcher read the final token
    finally:
        for watcher in watchers.values():
            watcher.stop()

    summary, problems = check_watchers(watchers, stub, ROTATIONS)
    # Where did the kills land? A token issued but published nowhere died between
    # the fetch and the first publish; one in some stores only died between stores.
    published = {name: set(w.distinct_tokens()) for name, w in watchers.items()}
    everywhere = set.intersection(*published.values())
    anywhere = set.union(*published.values())
    issued = stub.count(outcome="ok")
    orphans = leftovers(folder)
    # A kill between the temp file's creation and its rename leaves the temp file
    # behind (see test_kill_before_rename_leaves_no_temp_file): it must at least be
    # private and never be what a reader opens.
    for path in orphans:
        assert path.name.startswith(f".{TOKEN_FILE}.") and path.name.endswith(".tmp"), path
        assert (path.lstat().st_mode & 0o777) == 0o600, path
    report = {
        "seed": seed,
        "random_phase_seconds": round(random_phase, 1),
        "final_lifespan_seconds": ramp.lifespan,
        "once_runs": {
            "killed": outcomes["killed"],
            "completed_before_the_kill": outcomes["completed"] - len(durations),
            "left_alone": len(durations),
        },
        "median_fetch_after_start_seconds": round(statistics.median(fetch_offsets), 3),
        "median_last_publish_after_start_seconds": round(statistics.median(publish_ends), 3),
        "median_once_seconds": round(statistics.median(durations), 3),
        "daemon_rounds": outcomes["daemon_rounds"],
        "daemon_fetches": daemon_fetches,
        "tokens_issued": issued,
        "tokens_published_nowhere": issued - len(anywhere),
        "tokens_published_in_some_stores_only": len(anywhere - everywhere),
        "per_store": summary,
        "sm_stages_before_recovery": before_recovery["sm_stages"],
        # Versions written but never AWSCURRENT: kills between PutSecretValue and promotion.
        "sm_versions_never_current": before_recovery["sm_stages"]["versions"]
        + 1
        - summary["secretsmanager"]["distinct_tokens"],
        "ssm_versions": aws.ssm.get_parameter(Name=PARAMETER)["Parameter"]["Version"],
        "file_leftovers_before_recovery": [p.name for p in before_recovery["leftovers"]],
        "file_leftovers_after_recovery": [p.name for p in orphans],
    }
    text = json.dumps(report, indent=2)
    print(f"\ncrash report:\n{text}")
    (tmp_path_factory.getbasetemp() / "crash-report.json").write_text(text + "\n")

    assert not failures, f"seed {seed}: runs failed on their own:\n" + "\n".join(failures[:5])
    assert not problems, f"seed {seed}:\n" + "\n".join(problems)
    final_token = assert_recovered(aws, file_path, stub)
    assert watchers["file"].distinct_tokens()[-1] == final_token
    # Kills must have landed in the interesting places, or the test proved little.
    assert report["tokens_published_nowhere"] > 0, report
    assert report["tokens_published_in_some_stores_only"] > 0, report
    assert outcomes["killed"] >= ROTATIONS // 2, report


CRASH_POINTS = [
    # (point, what it leaves behind)
    ("after-fetch", "a token issued, published nowhere"),
    ("aws:after-call.secrets-manager.PutSecretValue", "a pending version, not promoted"),
    ("aws:after-call.secrets-manager.UpdateSecretVersionStage", "promoted, the run not finished"),
    ("aws:before-call.ssm.PutParameter", "SSM re-read, not written"),
    ("aws:after-call.ssm.PutParameter", "SSM written, the run not finished"),
    ("file:chmod", "file lock held, an empty temp file"),
    ("file:rename", "a complete temp file, not renamed"),
]


def run_with_crash(point: str, config: Path, env: dict[str, str]) -> None:
    result = run_cli(
        ["once", "--force", "--config", str(config)],
        env,
        timeout=60,
        prefix=(ROTATOR[0], "-c", CRASH_WRAPPER, point),
    )
    assert result.returncode == -signal.SIGKILL, f"{point}: {result.describe()}"


def test_kill_9_at_exact_points_then_recovery(
    aws: AwsEnv, stub: KeycloakStub, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    file_path = folder / TOKEN_FILE
    configs = write_configs(tmp_path, stub.token_url, file_path)
    env = cli_env(aws, CRASH_CLIENT_SECRET=CLIENT_SECRET)
    watchers = watchers_for(aws, file_path)
    ramp = Ramp(stub, LIFESPAN)
    for watcher in watchers.values():
        watcher.start()
    try:
        first = run_cli(["once", "--force", "--config", str(configs[0])], env, timeout=60)
        assert first.returncode == 0, first.describe()
        for point, _meaning in CRASH_POINTS:
            for config in configs:  # each store first, middle and last
                before = current_values(aws, file_path)
                ramp.bump()
                run_with_crash(point, config, env)
                after = current_values(aws, file_path)
                for name in STORES:  # whatever was not rewritten is untouched
                    if after[name] != before[name]:
                        assert json.loads(after[name])["access_token"] in stub.issued_tokens()
                stages = sm_stages(aws)
                assert stages["AWSCURRENT"] == 1, f"{point}: {stages}"
                if point == "aws:after-call.secrets-manager.PutSecretValue":
                    assert stages["unpromoted_pending"] == 1, stages
                    assert after["secretsmanager"] == before["secretsmanager"]
                temps = leftovers(folder)
                if point in ("file:chmod", "file:rename"):
                    # The dead writer's temp file: private, never what a reader opens.
                    assert len(temps) == 1, temps
                    assert (temps[0].lstat().st_mode & 0o777) == 0o600
                    if point == "file:chmod":
                        assert temps[0].read_text() == ""
                    else:
                        doc = json.loads(temps[0].read_text())
                        assert doc["access_token"] in stub.issued_tokens()
                    temps[0].unlink()  # see test_kill_before_rename_leaves_no_temp_file
                assert leftovers(folder) == [], f"{point}: {temps}"
                # The next run must not hang on a lock the dead process held.
                ramp.bump()
                clean = run_cli(["once", "--force", "--config", str(config)], env, timeout=30)
                assert clean.returncode == 0, f"after {point}: {clean.describe()}"
                assert_recovered(aws, file_path, stub)
        time.sleep(0.1)
    finally:
        for watcher in watchers.values():
            watcher.stop()
    _, problems = check_watchers(watchers, stub, minimum=len(CRASH_POINTS) + 1)
    assert not problems, "\n".join(problems)


def test_kill_before_rename_leaves_no_temp_file(
    aws: AwsEnv, stub: KeycloakStub, tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    file_path = folder / TOKEN_FILE
    config = tmp_path / "file-only.toml"
    config.write_text(
        "[[credentials]]\n"
        'name = "crash"\n'
        f'token_url = "{stub.token_url}"\n'
        f'client_id = "{CLIENT_ID}"\n'
        'client_secret_env = "CRASH_CLIENT_SECRET"\n' + _target_tables(file_path)["file"]
    )
    env = cli_env(aws, CRASH_CLIENT_SECRET=CLIENT_SECRET)
    run_with_crash("file:rename", config, env)  # leaves one temp file (checked elsewhere)
    # The next writer holds the lock, so any temp file it finds is a dead writer's.
    stub.set_access_token_lifespan(LIFESPAN + 1)  # a strictly later token: a real write
    clean = run_cli(["once", "--force", "--config", str(config)], env, timeout=30)
    assert clean.returncode == 0, clean.describe()
    assert leftovers(folder) == []
