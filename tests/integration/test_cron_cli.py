"""Cron mode and Kubernetes, end to end as subprocesses (issue 15, points 1 and 2).

* A Service named ``rotator`` makes Kubernetes inject ROTATOR_SERVICE_HOST,
  ROTATOR_PORT... into the pod: ``rotator once`` must still run.
* ``once --interval`` and ``check --interval`` say when the schedule cannot
  survive a missed run of the token lifetime the server hands out, naming an
  interval that would.
"""

from __future__ import annotations

import json
from pathlib import Path

from rotator.testing import KeycloakStub
from tests.fixtures.procs import cli_env, run_cli
from tests.unit.test_service_links import SERVICE_LINKS  # what the kubelet injects

CLIENT_ID = "oms-client"
SECRET = "kc-secret-cron-5c1a77e0-never-logged"


def _env(stub: KeycloakStub, token_file: Path, **extra: str) -> dict[str, str]:
    return cli_env(
        ROTATOR_TOKEN_URL=stub.token_url,
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_CLIENT_SECRET=SECRET,
        ROTATOR_FILE_PATH=str(token_file),
        **extra,
    )


def test_once_runs_with_kubernetes_service_link_variables(tmp_path: Path) -> None:
    token_file = tmp_path / "token.json"
    with KeycloakStub(clients={CLIENT_ID: SECRET}) as stub:
        result = run_cli(["once"], _env(stub, token_file, **SERVICE_LINKS))
        issued = stub.issued_tokens()
    assert result.returncode == 0, result.describe()
    assert json.loads(token_file.read_text())["access_token"] in issued
    # a real typo next to them is still refused, by name
    with KeycloakStub(clients={CLIENT_ID: SECRET}) as stub:
        typo = run_cli(["once"], _env(stub, token_file, **SERVICE_LINKS, ROTATOR_SCOPES="x"))
    assert typo.returncode == 2, typo.describe()
    assert "ROTATOR_SCOPES" in typo.stderr and "ROTATOR_SERVICE_HOST" not in typo.stderr


def test_once_and_check_say_when_the_schedule_cannot_survive_a_missed_run(
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token.json"
    with KeycloakStub(clients={CLIENT_ID: SECRET}, access_token_lifespan=180) as short:
        env = _env(short, token_file)
        once = run_cli(["once", "--interval", "120"], env)
        check = run_cli(["check", "--interval", "120"], env)
        from_env = run_cli(["check"], {**env, "ROTATOR_ONCE_INTERVAL": "120"})
    assert once.returncode == 0, once.describe()
    assert "cannot survive a missed run of a 180s token" in once.stderr, once.describe()
    assert "--interval 75 or less" in once.stderr, once.describe()
    for result in (check, from_env):
        assert result.returncode == 0, result.describe()
        assert "cron schedule: WARNING:" in result.stdout, result.describe()
        assert "--interval 75 or less" in result.stdout, result.describe()

    with KeycloakStub(clients={CLIENT_ID: SECRET}, access_token_lifespan=300) as default:
        env = _env(default, tmp_path / "other.json")
        fine = run_cli(["once", "--interval", "120"], env)
        fine_check = run_cli(["check", "--interval", "120"], env)
    assert fine.returncode == 0, fine.describe()
    assert "missed run" not in fine.stderr, fine.describe()
    assert "cron schedule: ok (once --interval 120 survives" in fine_check.stdout
