"""Leak hunting: planted markers, what must never show, and a transcript of every output.

Used by ``tests/integration/test_leaks_*.py``; see ``test_leaks_cli.py`` for the method.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import requests

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.harness.process import Daemon, Result, run_cli, wait_until

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

    def daemons(
        self,
        env: Mapping[str, str],
        out_dir: Path,
        runs: Sequence[tuple[str, str, str, str]],
        until: Callable[[list[Daemon]], bool],
        what: str,
    ) -> None:
        """One ``rotator run --config CONFIG --log-format FMT --log-level debug`` per
        ``(name, config, fmt, where)``, health on a free port; once ``until(daemons)``
        holds (a 90 s hang detector names ``what``), each one's health pages and output
        (it must exit 0) go into the transcript as ``where``. Killed whatever happens."""
        started: list[tuple[Daemon, str]] = []
        try:
            for name, config, fmt, where in runs:
                args = ("--config", config, "--log-format", fmt, "--log-level", "debug")
                daemon = Daemon(env, out_dir, name=name, args=(*args, "--metrics-port", "0"))
                started.append((daemon, where))
            wait_until(lambda: until([d for d, _ in started]), 90, what)
            for daemon, where in started:
                self.health(daemon, where)
                self.daemon(daemon, where)
        finally:
            for daemon, _ in started:
                daemon.kill()

    def assert_clean(self, marks: Mapping[str, str]) -> None:
        found = [
            f"{where}: {label}" for where, text in self.outputs for label in leaks(text, marks)
        ]
        assert not found, "secrets or tokens shown:\n" + "\n".join(found)
        print(f"\n{self.runs} runs, {len(self.outputs)} outputs, {len(marks)} markers, none shown")


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


def daemon_run(
    token_url: str, folder: Path, tag: str, fmt: str, where: str, **toml_args: str
) -> tuple[str, str, str, str]:
    """One ``Transcript.daemons`` run named ``tag``: its configuration (all three targets,
    health on 127.0.0.1, ``toml_args`` as ``toml`` takes them) written to the folder."""
    config = toml(
        token_url,
        all_targets(tag, folder / tag),
        top='metrics_host = "127.0.0.1"\n',
        **toml_args,
    )
    return tag, write(folder / f"{tag}.toml", config), fmt, where


def published_token(aws: AwsEnv, secret_id: str) -> str:
    value = aws.secretsmanager.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
    token: str = json.loads(value["SecretString"])["access_token"]
    return token


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
