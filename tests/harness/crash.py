"""The crash tests' world: one credential publishing to all three stores, read as it goes.

* ``write_configs(folder, token_url, file_path)``: one config per order of the targets.
* ``watchers_for``/``check_watchers``: one ``StoreWatcher`` per store, and the verdict.
* ``current_values``/``sm_stages``/``leftovers``/``assert_recovered``: what the stores hold.
* ``Ramp``: a strictly later token every run.
* ``CRASH_WRAPPER``/``CRASH_POINTS``/``run_with_crash``: ``rotator once`` that SIGKILLs
  itself at one exact point.
* ``STUB``: the ``make_stub`` arguments of the crash tests' token server.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.harness.process import ROTATOR, run_cli
from tests.harness.watch import StoreWatcher, file_reader, secretsmanager_reader, ssm_reader

LIFESPAN = 2.0
CLIENT_ID = "oms-client"
CLIENT_SECRET = "crash-client-secret"
SECRET_ID = "crash/token"
PARAMETER = "/crash/token"
TOKEN_FILE = "token.json"
STORES = ("secretsmanager", "ssm", "file")
STUB: dict[str, Any] = {"clients": {CLIENT_ID: CLIENT_SECRET}, "access_token_lifespan": LIFESPAN}

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


def target_tables(file_path: Path) -> dict[str, str]:
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
    tables = target_tables(file_path)
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


def token_file(tmp_path: Path) -> Path:
    """The token file's path, in a folder of its own (made here) under ``tmp_path``."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder / TOKEN_FILE


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
    token: str = tokens["file"]
    assert token in stub.issued_tokens()
    stages = sm_stages(aws)
    assert stages["AWSCURRENT"] == 1, stages
    assert stages["unpromoted_pending"] == 0, stages  # the pending label stays on AWSCURRENT only
    assert stages["AWSPREVIOUS"] <= 1, stages
    assert (file_path.stat().st_mode & 0o777) == 0o600
    return token


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
