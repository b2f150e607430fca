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
* The deterministic tests (``test_crash_points.py``) SIGKILL the process at exact
  points (between the Secrets Manager write and its promotion, just after the promotion (the
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
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.harness.crash import (
    CLIENT_SECRET,
    LIFESPAN,
    PARAMETER,
    PUBLISHED,
    STUB,
    TOKEN_FILE,
    Ramp,
    assert_recovered,
    check_watchers,
    leftovers,
    log_time,
    sm_stages,
    token_file,
    watchers_for,
    write_configs,
)
from tests.harness.env import rotator_env as cli_env
from tests.harness.factories import StubFactory
from tests.harness.process import ROTATOR, Daemon, run_cli

pytestmark = pytest.mark.timeout(1200)  # above RANDOM_BUDGET: the budget fails first, with figures

ROTATIONS = int(
    os.environ.get("CRASH_TEST_ROTATIONS", "100")
)  # distinct published tokens required in every store
# A hang detector, not a speed requirement: on a loaded 2-core machine 100 rotations
# have taken more than 170 s (57 per store in 174 s, load average 8).
RANDOM_BUDGET = 900.0  # seconds before the random test gives up reaching ROTATIONS
DAEMON_ROUNDS = 4


def _wait_for_request(
    stub: KeycloakStub, seen: int, proc: subprocess.Popen[bytes], timeout: float
) -> None:
    """Until the token endpoint has seen a request after the first ``seen`` (or ``proc`` ended)."""
    deadline = time.monotonic() + timeout
    while len(stub.requests()) <= seen and proc.poll() is None:
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(ROTATOR, timeout)
        time.sleep(0.002)


@pytest.fixture
def stub(make_stub: StubFactory) -> KeycloakStub:
    return make_stub(**STUB)


def test_kill_9_at_random_moments_never_corrupts_any_store(
    aws: AwsEnv,
    stub: KeycloakStub,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    seed = int(os.environ.get("CRASH_TEST_SEED") or time.time_ns() % 2**32)
    rng = random.Random(seed)
    print(f"CRASH_TEST_SEED={seed}")
    file_path = token_file(tmp_path)
    folder = file_path.parent
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
            # Kills timed from the token request's arrival at the endpoint land between
            # the fetch and the first publish whatever the machine's load; the timed kills
            # below follow the medians and miss that window when start-up times swing.
            on_fetch = not unkilled and 0.1 <= draw < 0.25
            if unkilled:
                delay = 30.0
            elif draw < 0.1:  # anywhere in the process's life
                delay = rng.uniform(0.0, exit_at)
            elif on_fetch:  # as the token request arrives (waited for below)
                delay = 30.0
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
                if on_fetch:
                    _wait_for_request(stub, requests_before, proc, delay)
                    time.sleep(rng.uniform(0.0, 0.02))
                    proc.kill()  # SIGKILL: kill -9
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
