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

In-process: repr()/str() of the config, token and client objects are redacted,
a Secret cannot be pickled, and the text (with its traceback and causes) of every
error raised on the failing paths carries no marker. Also: no command-line
option takes a secret, the file store writes 0600 and follows no symlink, and
http:// token URLs are refused unless the host is loopback.
"""

from __future__ import annotations

import base64
import json
import pickle
import re
import secrets
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
import requests

from rotator import config
from rotator.app import build
from rotator.errors import RotatorError
from rotator.stores.secretsmanager import SecretsManagerStore
from rotator.stores.ssm import SsmStore
from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.fixtures.procs import Daemon, Result, cli_env, run_cli, wait_until

pytestmark = pytest.mark.timeout(180)

CLIENT_ID = "oms-client"
SECRET = f"CLIENTSECRET-MARKER-{secrets.token_hex(12)}"
NONSENSE_TOKEN = f"NONSENSETOKEN-MARKER-{secrets.token_hex(12)}"
FORMATS = ("text", "json")
HEALTH_PORT = re.compile(r"metrics and health on port (\d+)")


class RecordingStub(KeycloakStub):
    """A KeycloakStub that also remembers every refresh token it hands out."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refresh_tokens: list[str] = []

    def _issue(
        self, client_id: str, scope: str, now: float, *, session_state: str | None
    ) -> dict[str, object]:
        payload = super()._issue(client_id, scope, now, session_state=session_state)
        token = payload.get("refresh_token")
        if isinstance(token, str):
            self.refresh_tokens.append(token)
        return payload


@pytest.fixture
def stub() -> Iterator[RecordingStub]:
    with RecordingStub(
        clients={CLIENT_ID: SECRET}, access_token_lifespan=30, use_refresh_tokens=True
    ) as keycloak:
        yield keycloak


def markers(stub: RecordingStub, *extra: str) -> dict[str, str]:
    """label -> a string that must never show (labels, not values, go in failures)."""
    found = {
        "client secret": SECRET,
        "client secret (random part)": SECRET.rsplit("-", 1)[1],
        "client secret (form-encoded)": quote_plus(SECRET),
        "client secret (Basic auth)": base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode(),
        "nonsense token": NONSENSE_TOKEN,
    }
    tokens = [("access", t) for t in sorted(stub.issued_tokens())]
    tokens += [("refresh", t) for t in stub.refresh_tokens]
    for i, (kind, token) in enumerate(tokens):
        found[f"{kind} token #{i}"] = token
        _, payload, signature = token.split(".")
        found[f"{kind} token #{i} payload"] = payload
        found[f"{kind} token #{i} signature"] = signature
    for i, value in enumerate(extra):
        found[f"extra #{i}"] = value
    return found


def leaks(text: str, marks: Mapping[str, str]) -> list[str]:
    return [label for label, value in marks.items() if value and value in text]


class Transcript:
    """Everything every run wrote or served, searched for markers at the end."""

    def __init__(self) -> None:
        self.outputs: list[tuple[str, str]] = []
        self.runs = 0

    def add(self, where: str, text: str) -> None:
        self.outputs.append((where, text))

    def cli(self, args: list[str], env: Mapping[str, str], *, expect: int, fmt: str) -> Result:
        result = run_cli(["--log-format", fmt, "--log-level", "debug", *args], env, timeout=90)
        self.runs += 1
        assert result.returncode == expect, result.describe()
        where = f"rotator {' '.join(args)} [{fmt}]"
        if args[0] != "get":  # get's stdout is checked by the caller
            self.add(f"{where} stdout", result.stdout)
        self.add(f"{where} stderr", result.stderr)
        if fmt == "json":
            for line in result.stderr.splitlines():
                assert isinstance(json.loads(line), dict), f"{where}: not a JSON log line: {line}"
        return result

    def both(self, args: list[str], env: Mapping[str, str], *, expect: int) -> list[Result]:
        return [self.cli(args, env, expect=expect, fmt=fmt) for fmt in FORMATS]

    def daemon(self, daemon: Daemon, where: str) -> None:
        result = daemon.stop()
        self.runs += 1
        assert result.returncode == 0, result.describe()
        self.add(f"{where} stdout", result.stdout)
        self.add(f"{where} stderr", result.stderr)

    def health(self, daemon: Daemon, where: str) -> None:
        """Fetch the daemon's health and metrics pages into the transcript."""
        deadline = time.monotonic() + 10
        while not (match := HEALTH_PORT.search(daemon.stderr_text())):
            assert time.monotonic() < deadline, daemon.stop().describe()
            time.sleep(0.05)
        base = f"http://127.0.0.1:{match.group(1)}"
        for page in ("/healthz", "/readyz", "/metrics"):
            response = requests.get(base + page, timeout=5)
            self.add(f"{where} GET {page} -> {response.status_code}", response.text)

    def assert_clean(self, marks: Mapping[str, str]) -> None:
        found = [
            f"{where}: {label}" for where, text in self.outputs for label in leaks(text, marks)
        ]
        assert not found, "secrets or tokens shown:\n" + "\n".join(found)


def toml(
    token_url: str,
    targets: str,
    *,
    secret: str = 'client_secret_env = "ROTATOR_CLIENT_SECRET"',
    auth: str = "client_secret_post",
    extra: str = "",
    top: str = "",
) -> str:
    return (
        f"{top}"
        "[[credentials]]\n"
        'name = "oms"\n'
        f'token_url = "{token_url}"\n'
        f'client_id = "{CLIENT_ID}"\n'
        f"{secret}\n"
        f'auth_method = "{auth}"\n'
        f"{extra}"
        "[credentials.refresh]\n"
        "retry_budget_seconds = 1.5\n"
        "max_retry_wait_seconds = 0.3\n"
        f"{targets}"
    )


def all_targets(tag: str, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return (
        "[[credentials.targets]]\n"
        f'type = "secretsmanager"\nsecret_id = "leak/{tag}"\ncreate = true\n'
        "[[credentials.targets]]\n"
        f'type = "ssm"\nparameter = "/leak/{tag}"\n'
        "[[credentials.targets]]\n"
        f'type = "file"\npath = "{folder / "token.json"}"\n'
    )


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def published_token(aws: AwsEnv, secret_id: str) -> str:
    value = aws.secretsmanager.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
    token: str = json.loads(value["SecretString"])["access_token"]
    return token


# ---------------------------------------------------------------- the CLI, successful paths


def test_successful_commands_show_no_secret_or_token(
    aws: AwsEnv, stub: RecordingStub, tmp_path: Path
) -> None:
    transcript = Transcript()
    common = {
        "ROTATOR_TOKEN_URL": stub.token_url,
        "ROTATOR_CLIENT_ID": CLIENT_ID,
        "ROTATOR_VERIFY_URL": stub.verify_url,
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
        assert not leaks(rest, markers(stub)), leaks(rest, markers(stub))
    assert stub.verify_count(ok=True) > 0

    # Daemons rotating 2 s tokens with the refresh grant, both auth methods, health on.
    stub.set_access_token_lifespan(2)
    daemons: list[tuple[Daemon, str]] = []
    try:
        for fmt, auth in (("text", "client_secret_post"), ("json", "client_secret_basic")):
            cfg = write(
                tmp_path / f"run-{fmt}.toml",
                toml(
                    stub.token_url,
                    all_targets(f"run-{fmt}", tmp_path / f"run-{fmt}"),
                    auth=auth,
                    extra=f'verify_url = "{stub.verify_url}"\n',
                    top='metrics_host = "127.0.0.1"\n',
                ),
            )
            args = ("--config", cfg, "--log-format", fmt, "--log-level", "debug")
            daemons.append(
                (
                    Daemon(
                        env,
                        tmp_path / "logs",
                        name=f"run-{fmt}",
                        args=(*args, "--metrics-port", "0"),
                    ),
                    f"rotator run [{fmt}, {auth}]",
                )
            )
        # every daemon rotated three times (the first token, then refresh grants)
        wait_until(
            lambda: (
                all(d.stderr_text().count("rotated credential=oms") >= 3 for d, _ in daemons)
                and stub.count(grant_type="refresh_token", outcome="ok") >= 2
            ),
            90,
            "three rotations by each daemon, two of them refresh grants",
        )
        for daemon, where in daemons:
            transcript.health(daemon, where)
            transcript.daemon(daemon, where)
    finally:
        for daemon, _ in daemons:
            daemon.kill()
    assert stub.count(grant_type="refresh_token", outcome="ok") >= 2, "no refresh grant ran"
    assert stub.refresh_tokens, "the stub issued no refresh token"

    transcript.assert_clean(markers(stub))
    print(
        f"\n{transcript.runs} runs, {len(transcript.outputs)} outputs, "
        f"{len(markers(stub))} markers, none shown"
    )


# ---------------------------------------------------------------- the CLI, failing paths


NONSENSE_BODIES: list[tuple[int, str]] = [
    (200, "<html><body><h1>Welcome</h1> please log in</body></html>"),
    (200, json.dumps({"token_type": "Bearer", "expires_in": 60})),
    (200, json.dumps({"access_token": NONSENSE_TOKEN, "token_type": "mac", "expires_in": 60})),
    (200, json.dumps({"access_token": NONSENSE_TOKEN, "token_type": "Bearer", "expires_in": "x"})),
    (200, json.dumps({"access_token": NONSENSE_TOKEN, "token_type": "Bearer", "expires_in": -5})),
    (200, json.dumps({"access_token": NONSENSE_TOKEN, "token_type": "Bearer"})),
    (200, json.dumps({"access_token": 12345, "token_type": "Bearer", "expires_in": 60})),
    (
        200,
        json.dumps(
            {
                "access_token": NONSENSE_TOKEN + "A" * (2 << 20),
                "token_type": "Bearer",
                "expires_in": 60,
            }
        ),
    ),
]
# A server that echoes what it was sent in its error_description.
ECHO_BODY = (400, json.dumps({"error": "invalid_request", "error_description": f"bad {SECRET}"}))


def test_failing_commands_show_no_secret_or_token(
    aws: AwsEnv, stub: RecordingStub, tmp_path: Path
) -> None:
    transcript = Transcript()
    cfg = write(tmp_path / "oms.toml", toml(stub.token_url, all_targets("fail", tmp_path / "f")))
    env = cli_env(aws, ROTATOR_CLIENT_SECRET=SECRET)
    once = ["once", "--force", "--config", cfg]
    transcript.both(once, env, expect=0)  # something published, for the failures to keep

    # The token endpoint rejects the client: exit 3 at once.
    stub.set_client_secret(CLIENT_ID, "not-the-marker")
    transcript.both(once, env, expect=3)
    transcript.both(["check", "--config", cfg], env, expect=3)
    stub.set_client_secret(CLIENT_ID, SECRET)

    # The token endpoint answers 503 (with Retry-After), or is not there at all.
    stub.enqueue(503, "<html>503 Service Unavailable</html>", {"Retry-After": "1"}, times=200)
    transcript.both(once, env, expect=1)
    stub.clear_enqueued()
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
        stub.enqueue(status, body, times=50)
        transcript.both(once, env, expect=1)
        stub.clear_enqueued()

    # A daemon facing nonsense keeps going; its health pages name the error, no secret.
    stub.enqueue(*NONSENSE_BODIES[2], times=1000)
    injected_before = stub.count(outcome="injected")
    daemons: list[tuple[Daemon, str]] = []
    try:
        for fmt in FORMATS:
            health_cfg = write(
                tmp_path / f"health-{fmt}.toml",
                toml(
                    stub.token_url,
                    all_targets(f"health-{fmt}", tmp_path / f"h-{fmt}"),
                    top='metrics_host = "127.0.0.1"\n',
                ),
            )
            args = ("--config", health_cfg, "--log-format", fmt, "--log-level", "debug")
            daemons.append(
                (
                    Daemon(
                        env,
                        tmp_path / "logs",
                        name=f"bad-{fmt}",
                        args=(*args, "--metrics-port", "0"),
                    ),
                    f"rotator run, nonsense answers [{fmt}]",
                )
            )
        # every daemon reached the nonsense endpoint and failed on its answer
        wait_until(
            lambda: (
                all("rotation failed credential=oms" in d.stderr_text() for d, _ in daemons)
                and stub.count(outcome="injected") >= injected_before + len(daemons)
            ),
            90,
            "each daemon to have been answered nonsense",
        )
        for daemon, where in daemons:
            transcript.health(daemon, where)
            transcript.daemon(daemon, where)
    finally:
        for daemon, _ in daemons:
            daemon.kill()
    stub.clear_enqueued()

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
    url = stub.token_url
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

    transcript.assert_clean(markers(stub))
    print(
        f"\n{transcript.runs} runs, {len(transcript.outputs)} outputs, "
        f"{len(markers(stub))} markers, none shown"
    )


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


# ---------------------------------------------------------------- in-process


def redaction_problems(name: str, obj: object, marks: Mapping[str, str]) -> list[str]:
    texts = {"repr": repr(obj), "str": str(obj), "format": f"{obj}"}
    return [f"{name} {how}: {label}" for how, text in texts.items() for label in leaks(text, marks)]


def test_reprs_and_strs_are_redacted(
    aws: AwsEnv, stub: RecordingStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)  # the App's own boto3 clients
    env = {
        "ROTATOR_TOKEN_URL": stub.token_url,
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
        "SecretSource": cred.secret_source,
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
    marks = markers(stub)
    problems = [p for name, obj in objects.items() for p in redaction_problems(name, obj, marks)]
    assert not problems, "\n".join(problems)
    assert secret.reveal() == SECRET  # the marker was really in there
    assert grant.token.access_token in stub.issued_tokens()
    assert len(stub.refresh_tokens) >= 2

    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        pickle.dumps(grant)  # it holds the refresh token


def test_app_repr_is_redacted(stub: RecordingStub, tmp_path: Path) -> None:
    env = {
        "ROTATOR_TOKEN_URL": stub.token_url,
        "ROTATOR_CLIENT_ID": CLIENT_ID,
        "ROTATOR_CLIENT_SECRET": SECRET,
        "ROTATOR_FILE_PATH": str(tmp_path / "token.json"),
    }
    app = build(config.from_env(env), env=env)
    assert not redaction_problems("App", app, markers(stub))


def error_texts(exc: BaseException) -> str:
    """Everything an error can show: str, repr, args, and the formatted chain."""
    parts = [str(exc), repr(exc), *map(str, exc.args)]
    parts += traceback.format_exception(exc)
    return "\n".join(parts)


def test_error_texts_carry_no_secret_or_token(
    aws: AwsEnv, stub: RecordingStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)  # the App's own boto3 clients
    env = {
        "ROTATOR_TOKEN_URL": stub.token_url,
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

    stub.set_client_secret(CLIENT_ID, "not-the-marker")
    expect_error("credentials rejected", client.client_credentials)
    stub.set_client_secret(CLIENT_ID, SECRET)
    stub.revoke_refresh_tokens()
    assert grant.refresh_token is not None
    refresh_token = grant.refresh_token
    expect_error("refresh token rejected", lambda: client.refresh(refresh_token))
    stub.enqueue(503, "<html>down</html>", {"Retry-After": "3"})
    expect_error("503", client.client_credentials)
    for i, (status, body) in enumerate(NONSENSE_BODIES):
        stub.enqueue(status, body)
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

    marks = markers(stub)
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


def test_secret_echoed_by_the_server_is_not_shown(stub: RecordingStub, tmp_path: Path) -> None:
    transcript = Transcript()
    cfg = write(
        tmp_path / "echo.toml",
        toml(
            stub.token_url,
            f'[[credentials.targets]]\ntype = "file"\npath = "{tmp_path / "t.json"}"\n',
            top='metrics_host = "127.0.0.1"\n',
        ),
    )
    stub.enqueue(*ECHO_BODY, times=1000)
    env = cli_env(ROTATOR_CLIENT_SECRET=SECRET)
    with Daemon(
        env, tmp_path / "logs", name="echo", args=("--config", cfg, "--metrics-port", "0")
    ) as daemon:
        wait_until(  # the server has echoed the secret to the daemon, which logged its failure
            lambda: (
                stub.count(outcome="injected") >= 1
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
    transcript.assert_clean(markers(stub))


# ---------------------------------------------------------------- the file store


def test_file_store_writes_0600_and_refuses_symlinks(stub: RecordingStub, tmp_path: Path) -> None:
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
            ROTATOR_TOKEN_URL=stub.token_url,
            ROTATOR_CLIENT_ID=CLIENT_ID,
            ROTATOR_CLIENT_SECRET=SECRET,
            ROTATOR_FILE_PATH=str(path),
        )

    # Whatever the umask, the token file (and its lock) is private.
    result = run_cli(["once"], env_for(target), umask=0, timeout=60)
    assert result.returncode == 0, result.describe()
    assert (target.lstat().st_mode & 0o777) == 0o600
    assert (out / "token.json.lock").lstat().st_mode & 0o777 == 0o600
    assert json.loads(target.read_text())["access_token"] in stub.issued_tokens()

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
