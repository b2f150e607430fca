"""Scenario 6, at exact points: ``rotator once`` SIGKILLs itself between the Secrets
Manager write and its promotion, just after the promotion (the publish's last call),
before and after the SSM write, with the file lock held and the temp file empty, just
before the rename, ...; each kill is followed by a clean run that must recover. The
random kills are in ``test_crash.py``; the shared world in ``tests/harness/crash.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.harness.crash import (
    CLIENT_ID,
    CLIENT_SECRET,
    CRASH_POINTS,
    LIFESPAN,
    STORES,
    STUB,
    Ramp,
    assert_recovered,
    check_watchers,
    current_values,
    leftovers,
    run_with_crash,
    sm_stages,
    target_tables,
    token_file,
    watchers_for,
    write_configs,
)
from tests.harness.env import rotator_env as cli_env
from tests.harness.factories import StubFactory
from tests.harness.process import run_cli

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def stub(make_stub: StubFactory) -> KeycloakStub:
    return make_stub(**STUB)


def test_kill_9_at_exact_points_then_recovery(
    aws: AwsEnv, stub: KeycloakStub, tmp_path: Path
) -> None:
    file_path = token_file(tmp_path)
    folder = file_path.parent
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
    file_path = token_file(tmp_path)
    folder = file_path.parent
    config = tmp_path / "file-only.toml"
    config.write_text(
        "[[credentials]]\n"
        'name = "crash"\n'
        f'token_url = "{stub.token_url}"\n'
        f'client_id = "{CLIENT_ID}"\n'
        'client_secret_env = "CRASH_CLIENT_SECRET"\n' + target_tables(file_path)["file"]
    )
    env = cli_env(aws, CRASH_CLIENT_SECRET=CLIENT_SECRET)
    run_with_crash("file:rename", config, env)  # leaves one temp file (checked elsewhere)
    # The next writer holds the lock, so any temp file it finds is a dead writer's.
    stub.set_access_token_lifespan(LIFESPAN + 1)  # a strictly later token: a real write
    clean = run_cli(["once", "--force", "--config", str(config)], env, timeout=30)
    assert clean.returncode == 0, clean.describe()
    assert leftovers(folder) == []
