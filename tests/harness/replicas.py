"""Several ``rotator run`` replicas over one store, watched as a consumer reads it.

* ``Replicas(env, out_dir, watcher, count=3)``: ``count`` daemons (``replica0``...)
  sharing one environment, hence one credential and one target, with a ``StoreWatcher``
  on that target; a context manager that kills every replica and stops the watcher.
  ``wait_published``, ``wait_cold_start`` and ``wait_replacement`` wait for states
  (never for a time); ``revocation_round`` is the round the three-replica revocation
  tests share; ``stop()`` ends them all and returns their ``Result``s.
* ``store_target(kind, aws, name, path)``: the environment and consumer reader of a
  Secrets Manager secret, an SSM parameter or a file.
* ``fetch_figures(times, gap)``: token requests grouped into refresh periods (a gap
  longer than ``gap`` starts one), with the per-period counts and duplicate-fetch rates.
* ``daemon_actions(results)``: what the replicas logged (steps and store writes, counted
  by kind) and their ERROR lines.
* ``write_figures(factory, name, title, figures)``: print figures and write them as JSON
  to ``<pytest basetemp>/<name>.json``, for BENCHMARKS.md; never asserted on.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

from tests.fixtures.aws import AwsEnv
from tests.harness.poll import Reader
from tests.harness.process import Daemon, Result, wait_for_daemons
from tests.harness.watch import StoreWatcher, file_reader, secretsmanager_reader, ssm_reader

# A replica's line per run, and the rotator's line per store write.
STEP = re.compile(r" (rotated|adopted|published) credential=\S+ expires_at=")
WRITE = re.compile(r" (published|kept newer token) credential=\S+ target=")
HOLDS_A_TOKEN = re.compile(r" (rotated|adopted) credential=")


def store_target(
    kind: str, aws: AwsEnv, name: str, path: Path | None = None
) -> tuple[dict[str, str], Reader]:
    """``ROTATOR_*`` variables for one target and a reader of it: the secret ``<name>/token``
    (created by the first writer), the parameter ``/<name>/token``, or the file ``path``."""
    if kind == "secretsmanager":
        secret_id = f"{name}/token"
        env = {
            "ROTATOR_SECRETSMANAGER_SECRET_ID": secret_id,
            "ROTATOR_SECRETSMANAGER_CREATE": "true",
        }
        return env, secretsmanager_reader(aws, secret_id)
    if kind == "ssm":
        parameter = f"/{name}/token"
        return {"ROTATOR_SSM_PARAMETER": parameter}, ssm_reader(aws, parameter)
    assert kind == "file" and path is not None, (kind, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"ROTATOR_FILE_PATH": str(path)}, file_reader(path)


@dataclass(frozen=True)
class Revocation:
    """One revocation round: token requests before it and caused by it, and when the
    tokens were revoked and a replacement was first read (epoch seconds, reported only)."""

    cold_start_requests: int
    extra_requests: int
    revoked_at: float
    replaced_at: float
    results: list[Result]
    revoked: Collection[str]  # the tokens the revocation refused


class Replicas:
    """``count`` ``rotator run`` replicas on one environment, and a watcher of their target."""

    def __init__(
        self,
        env: Mapping[str, str],
        out_dir: Path,
        watcher: StoreWatcher,
        *,
        count: int = 3,
        timeout: float = 30.0,
        poll: float = 0.05,
    ) -> None:
        self.env = dict(env)
        self.out_dir = out_dir
        self.watcher = watcher
        self.count = count
        self.timeout = timeout
        self.poll = poll
        self.daemons: list[Daemon] = []

    def __enter__(self) -> Self:
        self.watcher.start()
        try:
            for i in range(self.count):
                self.daemons.append(Daemon(self.env, self.out_dir, name=f"replica{i}"))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for daemon in self.daemons:
            daemon.kill()
        self.watcher.stop()

    def wait_for(self, what: str, ready: Callable[[], bool], timeout: float | None = None) -> None:
        wait_for_daemons(what, ready, self.daemons, timeout=timeout or self.timeout, poll=self.poll)

    def wait_published(self, timeout: float | None = None) -> None:
        """Until the watcher has read a published token."""
        self.wait_for("a replica publishing", lambda: self.watcher.distinct_values > 0, timeout)

    def wait_cold_start(self) -> None:
        """Until every replica holds the cold-start token (it fetched or adopted it)."""
        self.wait_for(
            "cold start",
            lambda: all(HOLDS_A_TOKEN.search(d.stderr_text()) for d in self.daemons),
        )

    def replaced_at(self, before: Collection[str]) -> float | None:
        """When the watcher first read a token not in ``before``; None: not yet."""
        for o in list(self.watcher.observations):
            if o.value and json.loads(o.value)["access_token"] not in before:
                return o.at
        return None

    def wait_replacement(self, before: Collection[str]) -> float:
        self.wait_for("replacement", lambda: self.replaced_at(before) is not None)
        return self.replaced_at(before) or 0.0

    def assert_running(self) -> None:
        for daemon in self.daemons:
            assert daemon.is_running, daemon.stop().describe()

    def stop(self) -> list[Result]:
        """SIGTERM to each replica in turn; their results, in order."""
        return [daemon.stop() for daemon in self.daemons]

    def logs(self) -> dict[str, str]:
        return {f"replica{i}": daemon.stderr_text() for i, daemon in enumerate(self.daemons)}

    def revocation_round(
        self,
        requests: Callable[[], int],
        revoke: Callable[[], tuple[float, Collection[str]]],
        settle: float,
    ) -> Revocation:
        """Wait until every replica holds the cold-start token; count the token requests;
        ``revoke()`` (it returns when it revoked, and the tokens revoked); wait until a
        token not among them is published, then ``settle`` seconds more (every replica
        probes the replacement); count again; stop the replicas."""
        self.wait_cold_start()
        cold = requests()
        revoked_at, before = revoke()
        replaced_at = self.wait_replacement(before)
        time.sleep(settle)
        extra = requests() - cold
        return Revocation(cold, extra, revoked_at, replaced_at, self.stop(), before)


def periods(times: Iterable[float], gap: float) -> list[list[float]]:
    """Group request times into refresh periods: a gap longer than ``gap`` starts one."""
    groups: list[list[float]] = []
    for t in sorted(times):
        if groups and t - groups[-1][-1] <= gap:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def fetch_figures(times: Iterable[float], gap: float) -> dict[str, Any]:
    """Token requests (their times) per refresh period; the first period is the cold start
    (every replica finds the target empty at once) and is counted apart."""
    ok = list(times)
    groups = periods(ok, gap=gap)
    steady = groups[1:]
    steady_fetches = sum(len(g) for g in steady)
    return {
        "tokens_issued": len(ok),
        "refresh_periods": len(groups),
        "cold_start_fetches": len(groups[0]) if groups else 0,
        "steady_periods": len(steady),
        "steady_fetches": steady_fetches,
        "fetches_per_period": round(len(ok) / len(groups), 3) if groups else None,
        "steady_fetches_per_period": round(steady_fetches / len(steady), 3) if steady else None,
        "duplicate_fetch_rate": round((len(ok) - len(groups)) / len(groups), 3) if groups else None,
        "steady_duplicate_fetch_rate": round((steady_fetches - len(steady)) / len(steady), 3)
        if steady
        else None,
        "fetches_per_steady_period": [len(g) for g in steady],
        "spread_ms_of_duplicates": [round((g[-1] - g[0]) * 1000) for g in steady if len(g) > 1],
    }


def daemon_actions(results: Iterable[Result]) -> tuple[Counter[str], list[str]]:
    """Steps (``step_rotated``, ``step_adopted``...) and store writes (``write_published``,
    ``write_kept_newer_token``) the daemons logged, counted; and their ERROR lines."""
    actions: Counter[str] = Counter()
    errors: list[str] = []
    for result in results:
        for line in result.stderr.splitlines():
            if match := STEP.search(line):
                actions[f"step_{match.group(1)}"] += 1
            if match := WRITE.search(line):
                actions[f"write_{match.group(1).replace(' ', '_')}"] += 1
            if " ERROR " in line:
                errors.append(line)
    return actions, errors


def write_figures(
    factory: pytest.TempPathFactory, name: str, title: str, figures: Mapping[str, object]
) -> None:
    """Print ``figures`` under ``title`` and write them to ``<basetemp>/<name>.json``."""
    text = json.dumps(figures, indent=2)
    print(f"\n{title}:\n{text}")
    (factory.getbasetemp() / f"{name}.json").write_text(text + "\n")
