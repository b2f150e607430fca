"""Security, in-process: repr()/str() of the config, token and client objects are
redacted, a Secret cannot be pickled, and the text (with its traceback and causes) of
every error raised on the failing paths carries no marker (``tests/harness/leaks.py``).
Also: a server echoing the secret, the file store writes 0600 and follows no symlink,
and http:// token URLs are refused unless the host is loopback.
"""

from __future__ import annotations

import json
import pickle
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from rotator import config
from rotator.app import build
from rotator.errors import RotatorError
from rotator.stores.secretsmanager import SecretsManagerStore
from rotator.stores.ssm import SsmStore
from tests.fixtures.aws import AwsEnv
from tests.harness.env import rotator_env as cli_env
from tests.harness.leaks import (
    CLIENT_ID,
    ECHO_BODY,
    NONSENSE_BODIES,
    SECRET,
    RecordingStub,
    Transcript,
    leaks,
    markers,
    toml,
    write,
)
from tests.harness.process import Daemon, run_cli, wait_until

pytestmark = pytest.mark.timeout(180)


# ---------------------------------------------------------------- in-process


def redaction_problems(name: str, obj: object, marks: Mapping[str, str]) -> list[str]:
    texts = {"repr": repr(obj), "str": str(obj), "format": f"{obj}"}
    return [f"{name} {how}: {label}" for how, text in texts.items() for label in leaks(text, marks)]


def test_reprs_and_strs_are_redacted(
    aws: AwsEnv, leak_stub: RecordingStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)  # the App's own boto3 clients
    env = {
        "ROTATOR_TOKEN_URL": leak_stub.token_url,
        "ROTATOR_CLIENT_ID": CLIENT_ID,
        "ROTATOR_CLIENT_SECRET": SECRET,
        "ROTATOR_SECRETSMANAGER_SECRET_ID": "repr/token",
        "ROTATOR_SECRETSMANAGER_CREATE": "true",
        "ROTATOR_SSM_PARAMETER": "/repr/token",
        "ROTATOR_FILE_PATH": str(tmp_path / "token.json"),
    }
    settings = config.from_env(env)
    app = build(settings, env=env)
    cred = settings.credentials[0]
    provider = app.secret(cred)
    secret = provider.get()
    client = app.token_client(cred)
    grant = client.client_credentials()
    assert grant.refresh_token is not None
    refreshed = client.refresh(grant.refresh_token)
    rotator = app.rotator(cred)
    step = rotator.rotate(force=True)
    readings = [store.get() for store in rotator.stores]
    objects: dict[str, object] = {
        "Settings": settings,
        "Credential": cred,
        "SecretSource": cred.require_client().secret_source,
        "Target": cred.targets[0],
        "Refresh": cred.refresh,
        "Secret": secret,
        "SecretProvider": provider,
        "TokenClient": client,
        "Grant": grant,
        "Grant (refreshed)": refreshed,
        "Token": grant.token,
        "refresh token Secret": grant.refresh_token,
        "CredentialRotator": rotator,
        "StepResult": step,
        "Token (published)": step.token,
        "Readings": readings,
        "stores": list(rotator.stores),
    }
    marks = markers(leak_stub)
    problems = [p for name, obj in objects.items() for p in redaction_problems(name, obj, marks)]
    assert not problems, "\n".join(problems)
    assert secret.reveal() == SECRET  # the marker was really in there
    assert grant.token.access_token in leak_stub.issued_tokens()
    assert len(leak_stub.refresh_tokens) >= 2

    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        pickle.dumps(grant)  # it holds the refresh token


def test_app_repr_is_redacted(leak_stub: RecordingStub, tmp_path: Path) -> None:
    env = {
        "ROTATOR_TOKEN_URL": leak_stub.token_url,
        "ROTATOR_CLIENT_ID": CLIENT_ID,
        "ROTATOR_CLIENT_SECRET": SECRET,
        "ROTATOR_FILE_PATH": str(tmp_path / "token.json"),
    }
    app = build(config.from_env(env), env=env)
    assert not redaction_problems("App", app, markers(leak_stub))


def error_texts(exc: BaseException) -> str:
    """Everything an error can show: str, repr, args, and the formatted chain."""
    parts = [str(exc), repr(exc), *map(str, exc.args)]
    parts += traceback.format_exception(exc)
    return "\n".join(parts)


def test_error_texts_carry_no_secret_or_token(
    aws: AwsEnv, leak_stub: RecordingStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)  # the App's own boto3 clients
    env = {
        "ROTATOR_TOKEN_URL": leak_stub.token_url,
        "ROTATOR_CLIENT_ID": CLIENT_ID,
        "ROTATOR_CLIENT_SECRET": SECRET,
        "ROTATOR_SECRETSMANAGER_SECRET_ID": "errors/token",
        "ROTATOR_SECRETSMANAGER_CREATE": "true",
        "ROTATOR_SSM_PARAMETER": "/errors/token",
    }
    settings = config.from_env(env)
    app = build(settings, env=env)
    cred = settings.credentials[0]
    client = app.token_client(cred)
    grant = client.client_credentials()
    raised: list[tuple[str, BaseException]] = []

    def expect_error(name: str, call: Callable[[], object]) -> None:
        try:
            call()
        except RotatorError as exc:
            raised.append((name, exc))
        else:
            pytest.fail(f"{name}: no error")

    leak_stub.set_client_secret(CLIENT_ID, "not-the-marker")
    expect_error("credentials rejected", client.client_credentials)
    leak_stub.set_client_secret(CLIENT_ID, SECRET)
    leak_stub.revoke_refresh_tokens()
    assert grant.refresh_token is not None
    refresh_token = grant.refresh_token
    expect_error("refresh token rejected", lambda: client.refresh(refresh_token))
    leak_stub.enqueue(503, "<html>down</html>", {"Retry-After": "3"})
    expect_error("503", client.client_credentials)
    for i, (status, body) in enumerate(NONSENSE_BODIES):
        leak_stub.enqueue(status, body)
        expect_error(f"nonsense #{i}", client.client_credentials)
    down = app.token_client(
        config.from_env({**env, "ROTATOR_TOKEN_URL": "http://127.0.0.1:9/token"}).credentials[0]
    )
    expect_error("endpoint down", down.client_credentials)

    token = client.client_credentials().token
    aws.deny("secretsmanager:PutSecretValue", "secretsmanager:CreateSecret", "ssm:PutParameter")
    sm = SecretsManagerStore(aws.client("secretsmanager"), "errors/token", create=True)
    ssm = SsmStore(aws.client("ssm"), "/errors/token")
    expect_error("secretsmanager denied", lambda: sm.put(token))
    expect_error("ssm denied", lambda: ssm.put(token))
    denied_app = build(settings, env=env)  # fresh boto3 clients, with the denied user's keys
    expect_error("rotation denied", lambda: denied_app.rotator(cred).rotate(force=True))
    aws.allow_all()

    for name, mapping in {
        "inline secret": {"credentials": [{"name": "x", "client_secret": SECRET}]},
        "unknown key": {"credentials": [{"name": "x", "clientsecret": SECRET}]},
        "userinfo url": {
            "credentials": [
                {
                    "name": "x",
                    "token_url": f"https://u:{SECRET}@kc.example.com/t",
                    "client_id": "c",
                    "client_secret_env": "E",
                    "targets": [{"type": "file", "path": "/tmp/x"}],
                }
            ]
        },
    }.items():
        expect_error(f"config: {name}", lambda m=mapping: config.from_mapping(m))
    expect_error(
        "config: both secrets",
        lambda: config.from_env({**env, "ROTATOR_CLIENT_SECRET_FILE": "/tmp/x"}),
    )
    broken = tmp_path / "broken.toml"
    broken.write_text(f'[[credentials]]\nclient_secret = "{SECRET}\n')
    expect_error("config: TOML syntax", lambda: config.load(broken))
    missing = {**env, "ROTATOR_CLIENT_SECRET_FILE": str(tmp_path / "nope")}
    missing.pop("ROTATOR_CLIENT_SECRET")
    missing_settings = config.from_env(missing)
    expect_error(
        "secret file missing",
        lambda: build(missing_settings, env=missing).secret(missing_settings.credentials[0]).get(),
    )

    marks = markers(leak_stub)
    problems = [
        f"{name} ({type(exc).__name__}): {label}"
        for name, exc in raised
        for label in leaks(error_texts(exc), marks)
    ]
    assert not problems, "\n".join(problems)
    assert {type(exc).__name__ for _, exc in raised} >= {
        "CredentialsRejected",
        "InvalidGrant",
        "TokenEndpointUnavailable",
        "InvalidTokenResponse",
        "StoreAccessDenied",
        "ConfigError",
        "SecretSourceError",
    }


def test_secret_echoed_by_the_server_is_not_shown(leak_stub: RecordingStub, tmp_path: Path) -> None:
    transcript = Transcript()
    cfg = write(
        tmp_path / "echo.toml",
        toml(
            leak_stub.token_url,
            f'[[credentials.targets]]\ntype = "file"\npath = "{tmp_path / "t.json"}"\n',
            top='metrics_host = "127.0.0.1"\n',
        ),
    )
    leak_stub.enqueue(*ECHO_BODY, times=1000)
    env = cli_env(ROTATOR_CLIENT_SECRET=SECRET)
    with Daemon(
        env, tmp_path / "logs", name="echo", args=("--config", cfg, "--metrics-port", "0")
    ) as daemon:
        wait_until(  # the server has echoed the secret to the daemon, which logged its failure
            lambda: (
                leak_stub.count(outcome="injected") >= 1
                and "rotation failed credential=oms" in daemon.stderr_text()
            ),
            90,
            "the daemon to have been answered with the echo",
        )
        transcript.health(daemon, "rotator run, echoing server")
        transcript.daemon(daemon, "rotator run, echoing server")
    settings = config.load(cfg, env={"ROTATOR_CLIENT_SECRET": SECRET})
    app = build(settings, env={"ROTATOR_CLIENT_SECRET": SECRET})
    with pytest.raises(RotatorError) as caught:
        app.token_client(settings.credentials[0]).client_credentials()
    transcript.add("the error's text", error_texts(caught.value))
    transcript.assert_clean(markers(leak_stub))


# ---------------------------------------------------------------- the file store


def test_file_store_writes_0600_and_refuses_symlinks(
    leak_stub: RecordingStub, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    target = out / "token.json"

    def env_for(path: Path) -> dict[str, str]:
        return cli_env(
            ROTATOR_TOKEN_URL=leak_stub.token_url,
            ROTATOR_CLIENT_ID=CLIENT_ID,
            ROTATOR_CLIENT_SECRET=SECRET,
            ROTATOR_FILE_PATH=str(path),
        )

    # Whatever the umask, the token file (and its lock) is private.
    result = run_cli(["once"], env_for(target), umask=0, timeout=60)
    assert result.returncode == 0, result.describe()
    assert (target.lstat().st_mode & 0o777) == 0o600
    assert (out / "token.json.lock").lstat().st_mode & 0o777 == 0o600
    assert json.loads(target.read_text())["access_token"] in leak_stub.issued_tokens()

    # A symlink planted at the target path, at its lock, or dangling: refused, nothing followed.
    link = out / "linked.json"
    link.symlink_to(victim)
    dangling = out / "dangling.json"
    dangling.symlink_to(elsewhere / "created-through-link")
    lock_linked = out / "locked.json"
    (out / "locked.json.lock").symlink_to(victim)
    for path in (link, dangling, lock_linked):
        # `check` writes nothing, so it has no lock to open: it only vets the target path.
        commands = [["once"], ["once", "--force"]] + ([["check"]] if path != lock_linked else [])
        for args in commands:
            result = run_cli(args, env_for(path), umask=0, timeout=60)
            assert result.returncode != 0, result.describe()
            said = result.stdout + result.stderr
            assert "symlink" in said or "not a regular file" in said, result.describe()
    assert victim.read_text() == "precious\n"
    assert (victim.stat().st_mode & 0o777) == 0o644
    assert link.is_symlink() and dangling.is_symlink()
    assert not (elsewhere / "created-through-link").exists()
    assert not lock_linked.exists()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim"]


# ---------------------------------------------------------------- http:// only to loopback


@pytest.mark.parametrize(
    "url",
    [
        "http://kc.example.com/auth/realms/r/protocol/openid-connect/token",
        "http://10.0.0.5:8080/token",
        "http://127.0.0.1.nip.io/token",
        "http://localhost.example.com/token",
        "http://evil.example.com#@127.0.0.1/token",
        "ftp://127.0.0.1/token",
    ],
)
@pytest.mark.parametrize("command", ["once", "check", "run"])
def test_plain_http_token_url_to_a_remote_host_is_refused(
    url: str, command: str, tmp_path: Path
) -> None:
    env = cli_env(
        ROTATOR_TOKEN_URL=url,
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_CLIENT_SECRET=SECRET,
        ROTATOR_FILE_PATH=str(tmp_path / "token.json"),
    )
    result = run_cli([command], env, timeout=30)
    assert result.returncode == 2, result.describe()
    assert SECRET not in result.stderr + result.stdout
    assert not (tmp_path / "token.json").exists()


def test_plain_http_to_remote_host_refused_in_toml_and_for_verify_url(tmp_path: Path) -> None:
    target = f'[[credentials.targets]]\ntype = "file"\npath = "{tmp_path / "t.json"}"\n'
    for name, text in {
        "token_url": toml("http://kc.example.com/token", target),
        "verify_url": toml(
            "http://127.0.0.1:9/token",
            target,
            extra='verify_url = "http://oms.example.com/oms-api/"\n',
        ),
    }.items():
        path = write(tmp_path / f"{name}.toml", text)
        result = run_cli(
            ["check", "--config", path], cli_env(ROTATOR_CLIENT_SECRET=SECRET), timeout=30
        )
        assert result.returncode == 2, result.describe()
        assert name in result.stderr, result.describe()
