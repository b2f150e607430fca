"""Security: no client secret and no token ever shows, anywhere, but where it must.

Known markers are planted: the client secret (``CLIENTSECRET-MARKER-<random>``,
given through ROTATOR_CLIENT_SECRET, ROTATOR_CLIENT_SECRET_FILE and a TOML
``client_secret_env``), every access and refresh token the KeycloakStub issues
(refresh tokens switched on, recorded by a small subclass since the stub keeps
only their ids), and a token-shaped marker inside nonsense responses. The CLI
then runs as a subprocess, successful and failing paths alike, in both
``--log-format text`` and ``json`` at ``--log-level debug``; daemons also serve
/healthz, /readyz and /metrics. Every stdout and stderr byte and every health
page is searched for each marker (whole, and each JWT's payload and signature
segment, and the secret's Basic-auth encoding). The one place a token may show
is ``rotator get``'s stdout, which must hold exactly the published token.

Also: no command-line option takes a secret. The in-process half is
``test_leaks_inprocess.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.fixtures.aws import AwsEnv
from tests.harness.env import rotator_env as cli_env
from tests.harness.leaks import (
    CLIENT_ID,
    ECHO_BODY,
    FORMATS,
    NONSENSE_BODIES,
    SECRET,
    RecordingStub,
    Transcript,
    all_targets,
    daemon_run,
    leaks,
    markers,
    published_token,
    toml,
    write,
)
from tests.harness.process import run_cli

pytestmark = pytest.mark.timeout(180)


# ---------------------------------------------------------------- the CLI, successful paths


def test_successful_commands_show_no_secret_or_token(
    aws: AwsEnv, leak_stub: RecordingStub, tmp_path: Path
) -> None:
    transcript = Transcript()
    common = {
        "ROTATOR_TOKEN_URL": leak_stub.token_url,
        "ROTATOR_CLIENT_ID": CLIENT_ID,
        "ROTATOR_VERIFY_URL": leak_stub.verify_url,
        "ROTATOR_SECRETSMANAGER_SECRET_ID": "leak/env",
        "ROTATOR_SECRETSMANAGER_CREATE": "true",
        "ROTATOR_SSM_PARAMETER": "/leak/env",
        "ROTATOR_FILE_PATH": str(tmp_path / "token.json"),
    }
    env = cli_env(aws, ROTATOR_CLIENT_SECRET=SECRET, **common)
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(SECRET + "\n")
    env_file = cli_env(aws, ROTATOR_CLIENT_SECRET_FILE=str(secret_file), **common)

    transcript.both(["once"], env, expect=0)
    transcript.both(["check"], env, expect=0)
    transcript.both(["once", "--force"], env, expect=0)
    transcript.both(["once", "--force"], env_file, expect=0)
    transcript.both(["check"], env_file, expect=0)
    transcript.both(["status"], env, expect=0)
    transcript.both(["status", "--json"], env, expect=0)
    current = published_token(aws, "leak/env")
    for get in transcript.both(["get"], env, expect=0):
        assert get.stdout == current + "\n"
    for get in transcript.both(["get", "--json"], env, expect=0):
        document = json.loads(get.stdout)
        assert document["access_token"] == current
        assert set(document) <= {"access_token", "token_type", "expires_at", "issued_at", "scope"}
        # The document shows its own token and nothing else secret.
        rest = get.stdout.replace(current, "")
        assert not leaks(rest, markers(leak_stub)), leaks(rest, markers(leak_stub))
    assert leak_stub.verify_count(ok=True) > 0

    # Daemons rotating 2 s tokens with the refresh grant, both auth methods, health on.
    leak_stub.set_access_token_lifespan(2)
    runs = [
        daemon_run(
            leak_stub.token_url,
            tmp_path,
            f"run-{fmt}",
            fmt,
            f"rotator run [{fmt}, {auth}]",
            auth=auth,
            extra=f'verify_url = "{leak_stub.verify_url}"\n',
        )
        for fmt, auth in (("text", "client_secret_post"), ("json", "client_secret_basic"))
    ]
    # every daemon rotated three times (the first token, then refresh grants)
    transcript.daemons(
        env,
        tmp_path / "logs",
        runs,
        lambda daemons: (
            all(d.stderr_text().count("rotated credential=oms") >= 3 for d in daemons)
            and leak_stub.count(grant_type="refresh_token", outcome="ok") >= 2
        ),
        "three rotations by each daemon, two of them refresh grants",
    )
    assert leak_stub.count(grant_type="refresh_token", outcome="ok") >= 2, "no refresh grant ran"
    assert leak_stub.refresh_tokens, "the leak_stub issued no refresh token"

    transcript.assert_clean(markers(leak_stub))


# ---------------------------------------------------------------- the CLI, failing paths


def test_failing_commands_show_no_secret_or_token(
    aws: AwsEnv, leak_stub: RecordingStub, tmp_path: Path
) -> None:
    transcript = Transcript()
    cfg = write(
        tmp_path / "oms.toml", toml(leak_stub.token_url, all_targets("fail", tmp_path / "f"))
    )
    env = cli_env(aws, ROTATOR_CLIENT_SECRET=SECRET)
    once = ["once", "--force", "--config", cfg]
    transcript.both(once, env, expect=0)  # something published, for the failures to keep

    # The token endpoint rejects the client: exit 3 at once.
    leak_stub.set_client_secret(CLIENT_ID, "not-the-marker")
    transcript.both(once, env, expect=3)
    transcript.both(["check", "--config", cfg], env, expect=3)
    leak_stub.set_client_secret(CLIENT_ID, SECRET)

    # The token endpoint answers 503 (with Retry-After), or is not there at all.
    leak_stub.enqueue(503, "<html>503 Service Unavailable</html>", {"Retry-After": "1"}, times=200)
    transcript.both(once, env, expect=1)
    leak_stub.clear_enqueued()
    down = write(
        tmp_path / "down.toml",
        toml(
            "http://127.0.0.1:9/auth/realms/x/protocol/openid-connect/token",
            all_targets("fail", tmp_path / "f"),
        ),
    )
    transcript.both(["once", "--force", "--config", down], env, expect=1)

    # Nonsense answers, and a server echoing the secret (the log scrubs it).
    for status, body in [*NONSENSE_BODIES, ECHO_BODY]:
        leak_stub.enqueue(status, body, times=50)
        transcript.both(once, env, expect=1)
        leak_stub.clear_enqueued()

    # A daemon facing nonsense keeps going; its health pages name the error, no secret.
    leak_stub.enqueue(*NONSENSE_BODIES[2], times=1000)
    injected_before = leak_stub.count(outcome="injected")
    runs = [
        daemon_run(
            leak_stub.token_url,
            tmp_path,
            f"health-{fmt}",
            fmt,
            f"rotator run, nonsense answers [{fmt}]",
        )
        for fmt in FORMATS
    ]
    # every daemon reached the nonsense endpoint and failed on its answer
    transcript.daemons(
        env,
        tmp_path / "logs",
        runs,
        lambda daemons: (
            all("rotation failed credential=oms" in d.stderr_text() for d in daemons)
            and leak_stub.count(outcome="injected") >= injected_before + len(daemons)
        ),
        "each daemon to have been answered nonsense",
    )
    leak_stub.clear_enqueued()

    # AWS refuses: AccessDenied names the action, and shows no token.
    aws.deny("secretsmanager:PutSecretValue", "ssm:PutParameter")
    denied_env = cli_env(aws, ROTATOR_CLIENT_SECRET=SECRET)
    for result in transcript.both(once, denied_env, expect=1):
        assert "secretsmanager:PutSecretValue" in result.stderr
        assert "ssm:PutParameter" in result.stderr
    aws.deny("secretsmanager:GetSecretValue")
    denied_env = cli_env(aws, ROTATOR_CLIENT_SECRET=SECRET)
    for result in transcript.both(["get", "--config", cfg], denied_env, expect=1):
        assert result.stdout == ""
    aws.allow_all()

    # Broken configurations: exit 2, and the secret is not echoed from anywhere.
    url = leak_stub.token_url
    targets = all_targets("fail", tmp_path / "f")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    empty_file = tmp_path / "empty"
    empty_file.write_text("\n")
    broken = {
        "syntax": toml(url, targets).replace(
            'name = "oms"', f'name = "oms"\nclient_secret = "{SECRET}'
        ),
        "inline": toml(url, targets, secret=f'client_secret = "{SECRET}"'),
        "unknown key": toml(url, targets).replace(
            'name = "oms"', f'name = "oms"\nclientsecret = "{SECRET}"'
        ),
        "two sources": toml(
            url, targets, secret=f'client_secret_env = "X"\nclient_secret_file = "{secret_file}"'
        ),
        "missing file": toml(url, targets, secret=f'client_secret_file = "{tmp_path / "nope"}"'),
        "empty file": toml(url, targets, secret=f'client_secret_file = "{empty_file}"'),
        "bad target": toml(url, '[[credentials.targets]]\ntype = "ftp"\npath = "x"\n'),
        "http": toml("http://kc.example.com/token", targets),
        "userinfo": toml(f"https://{CLIENT_ID}:{SECRET}@kc.example.com/token", targets),
    }
    for name, text in broken.items():
        path = write(tmp_path / f"broken-{name.replace(' ', '-')}.toml", text)
        transcript.both(["once", "--force", "--config", path], env, expect=2)
    transcript.both(["once", "--config", str(tmp_path / "absent.toml")], env, expect=2)
    env_base = cli_env(aws, ROTATOR_TOKEN_URL=url, ROTATOR_CLIENT_ID=CLIENT_ID)
    env_base["ROTATOR_FILE_PATH"] = str(tmp_path / "env.json")
    broken_env = {
        "both secrets": {
            "ROTATOR_CLIENT_SECRET": SECRET,
            "ROTATOR_CLIENT_SECRET_FILE": str(secret_file),
        },
        "userinfo": {
            "ROTATOR_CLIENT_SECRET": SECRET,
            "ROTATOR_TOKEN_URL": f"https://{CLIENT_ID}:{SECRET}@kc.example.com/token",
        },
        "bad auth method": {"ROTATOR_CLIENT_SECRET": SECRET, "ROTATOR_AUTH_METHOD": "magic"},
        "no client id": {"ROTATOR_CLIENT_SECRET": SECRET, "ROTATOR_CLIENT_ID": ""},
    }
    for extra in broken_env.values():
        transcript.both(["once", "--force"], {**env_base, **extra}, expect=2)

    transcript.assert_clean(markers(leak_stub))


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    "argv",
    [
        ["once", "--client-secret", SECRET],
        ["once", f"--client-secret={SECRET}"],
        ["check", "--secret", SECRET],
        ["run", "--client_secret", SECRET],
        ["once", SECRET],
        ["--client-secret", f"--x={SECRET}", "run"],
        pytest.param(["--client-secret", SECRET, "run"]),
        pytest.param([SECRET]),
    ],
    ids=[
        "option",
        "option=value",
        "secret",
        "underscore",
        "positional",
        "before-command=value",
        "before-command",
        "as-command",
    ],
)
def test_client_secret_is_never_taken_on_the_command_line(argv: list[str], tmp_path: Path) -> None:
    env = cli_env(
        ROTATOR_TOKEN_URL="http://127.0.0.1:9/token",
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_FILE_PATH=str(tmp_path / "token.json"),
    )
    result = run_cli(argv, env, timeout=30)
    assert result.returncode == 2, result.describe()
    assert SECRET not in result.stdout + result.stderr
    assert SECRET.rsplit("-", 1)[1] not in result.stdout + result.stderr
    assert not (tmp_path / "token.json").exists()


def test_help_offers_no_secret_option() -> None:
    for argv in (
        ["--help"],
        *([cmd, "--help"] for cmd in ("run", "once", "get", "check", "status")),
    ):
        result = run_cli(argv, cli_env(), timeout=30)
        assert result.returncode == 0, result.describe()
        options = re.findall(r"--[a-z][a-z-]*", result.stdout.split("exit codes:")[0])
        assert not [o for o in options if "secret" in o], options
