"""An AWS client-secret source the caller may not read is a configuration error.

The README's exit-code table: 2 = "usage or configuration error (including an
unresolvable client secret)". AccessDenied on ``client_secret_secretsmanager`` /
``client_secret_ssm`` is made real by moto's IAM checks (``aws.deny``), and the
CLI runs as a subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.fixtures.procs import cli_env, run_cli

CLIENT_ID = "oms-client"
SECRET = "kc-secret-denied-9d2e5b01-never-logged"


def _config(tmp_path: Path, stub: KeycloakStub, source: str, ref: str) -> Path:
    path = tmp_path / "rotator.toml"
    path.write_text(
        f"""
[[credentials]]
name = "denied"
token_url = "{stub.token_url}"
client_id = "{CLIENT_ID}"
{source} = "{ref}"

  [[credentials.targets]]
  type = "file"
  path = "{tmp_path / "token.json"}"
"""
    )
    return path


@pytest.fixture
def stub() -> Iterator[KeycloakStub]:
    with KeycloakStub(clients={CLIENT_ID: SECRET}) as kc:
        yield kc


@pytest.mark.parametrize(
    ("source", "ref", "action"),
    [
        ("client_secret_secretsmanager", "oms/client-secret", "secretsmanager:GetSecretValue"),
        ("client_secret_ssm", "/oms/client-secret", "ssm:GetParameter"),
    ],
)
def test_access_denied_on_the_client_secret_source_exits_2(
    aws: AwsEnv, stub: KeycloakStub, tmp_path: Path, source: str, ref: str, action: str
) -> None:
    if source == "client_secret_secretsmanager":
        aws.secretsmanager.create_secret(Name=ref, SecretString=SECRET)
    else:
        aws.ssm.put_parameter(Name=ref, Value=SECRET, Type="SecureString")
    config = _config(tmp_path, stub, source, ref)
    env = cli_env(aws)

    allowed = run_cli(["--config", str(config), "once"], env)
    assert allowed.returncode == 0, allowed.describe()  # the set-up works when allowed

    aws.deny(action)
    env = cli_env(aws)  # the denied user's keys
    once = run_cli(["--config", str(config), "once", "--force"], env)
    assert once.returncode == 2, once.describe()
    assert "client secret" in once.stderr and action in once.stderr, once.describe()
    assert "Traceback" not in once.stderr

    check = run_cli(["--config", str(config), "check"], env)
    assert check.returncode == 2, check.describe()
    assert "client secret: FAILED" in check.stdout, check.describe()

    for result in (allowed, once, check):
        assert SECRET not in result.stdout + result.stderr
    assert len(stub.issued_tokens()) == 1  # the denied runs never reached the token endpoint
