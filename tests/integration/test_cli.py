"""The CLI end to end, as a subprocess (``python -m rotator ...``).

Configured by the ROTATOR_* environment variables (the container convention)
or by a TOML file, against a token server on 127.0.0.1 (our Keycloak-faithful
``KeycloakStub`` and the npm ``oidc-provider`` peer) and a moto server over
HTTP. Assertions are on what the stores hold (read with boto3, Secrets Manager
with ``VersionStage="AWSCURRENT"``), on what the token server says of the
published token, and on exit codes, stdout and stderr.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest
from botocore.exceptions import ClientError

from rotator.testing import KeycloakStub
from tests.fixtures.aws import REGION, AwsEnv
from tests.fixtures.oidc import OidcPeer

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "oms-client"
# Distinctive values, so that a leak into any output is found by a plain search.
STUB_SECRET = "kc-secret-3f9a71c2-never-logged"
TEST_CLIENT_ID = "oms-test-client"
TEST_SECRET = "kc-test-secret-b81e04d7-never-logged"
SECRET_ID = "oms/access-token"
PARAMETER = "/oms/access-token"
DOC_KEYS = {"access_token", "token_type", "expires_at", "issued_at"}
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
CLI_TIMEOUT = 40.0
STOP_TIMEOUT = 5.0


# ----------------------------------------------------------------------------- helpers


@dataclass
class Result:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:
        return (
            f"rotator {' '.join(self.args)} -> exit {self.code} in {self.seconds:.1f}s\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def cli(env: Mapping[str, str], *args: str, timeout: float = CLI_TIMEOUT) -> Result:
    """Run ``python -m rotator ARGS``; subprocess.run kills it on timeout."""
    began = time.monotonic()
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "rotator", *args],
        env=dict(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - began)


class Daemon:
    """``rotator run`` in the background; always stopped (SIGTERM, then kill) on exit."""

    def __init__(self, env: Mapping[str, str], *args: str, tmp_path: Path) -> None:
        self.args = ("run", *args)
        self._env = dict(env)
        self._out_path = tmp_path / "daemon.stdout"
        self._err_path = tmp_path / "daemon.stderr"
        self._files: list[IO[str]] = []
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Daemon:
        out = self._out_path.open("w", encoding="utf-8")
        err = self._err_path.open("w", encoding="utf-8")
        self._files = [out, err]
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "rotator", *self.args],
            env=self._env,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
        for f in self._files:
            f.close()

    def assert_running(self) -> bool:
        """True while running; fails the test if the daemon has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"daemon exited early with {self.proc.returncode}:\n{self.stderr}")
        return True

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit). Kills it after STOP_TIMEOUT."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
            pytest.fail(f"daemon ignored SIGTERM for {STOP_TIMEOUT}s:\n{self.stderr}")
        return code, time.monotonic() - began

    @property
    def stdout(self) -> str:
        return self._out_path.read_text(encoding="utf-8")

    @property
    def stderr(self) -> str:
        return self._err_path.read_text(encoding="utf-8")


def base_env(aws: AwsEnv) -> dict[str, str]:
    """The test process's environment without ROTATOR_*/AWS_*, pointed at moto."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "AWS_"))}
    env.update(
        AWS_ENDPOINT_URL=aws.endpoint,
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 - moto's dummy key
        AWS_EC2_METADATA_DISABLED="true",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        # plain moto has no version quota: 300 s test tokens may go to Secrets Manager
        ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY="100000",
    )
    return env


def server_env(
    aws: AwsEnv,
    token_url: str,
    *,
    client_id: str = CLIENT_ID,
    secret: str = STUB_SECRET,
    sm: bool = True,
    ssm: bool = True,
    **extra: str,
) -> dict[str, str]:
    """One credential from the ROTATOR_* variables, publishing to SM and/or SSM."""
    env = base_env(aws)
    env.update(ROTATOR_TOKEN_URL=token_url, ROTATOR_CLIENT_ID=client_id)
    env["ROTATOR_CLIENT_SECRET"] = secret
    if sm:
        env.update(ROTATOR_SECRETSMANAGER_SECRET_ID=SECRET_ID, ROTATOR_SECRETSMANAGER_CREATE="true")
    if ssm:
        env["ROTATOR_SSM_PARAMETER"] = PARAMETER
    env.update(extra)
    return env


def toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rotator.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def read_sm(aws: AwsEnv, secret_id: str = SECRET_ID, client: Any = None) -> str | None:
    try:
        response = (client or aws.secretsmanager).get_secret_value(
            SecretId=secret_id, VersionStage="AWSCURRENT"
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise
    value: str = response["SecretString"]
    return value


def read_ssm(aws: AwsEnv, name: str = PARAMETER, client: Any = None) -> str | None:
    try:
        response = (client or aws.ssm).get_parameter(Name=name, WithDecryption=True)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ParameterNotFound":
            return None
        raise
    value: str = response["Parameter"]["Value"]
    return value


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z") + "+00:00")


def check_document(value: str | None, *, with_scope: bool | None = True) -> dict[str, str]:
    """The published document: exactly the contract's keys, instants in RFC 3339 with Z.

    ``with_scope=None`` accepts the document with or without ``scope``.
    """
    assert value is not None, "nothing published"
    doc = json.loads(value)
    assert isinstance(doc, dict)
    keys = set(doc)
    if with_scope is None:
        assert keys in (DOC_KEYS, DOC_KEYS | {"scope"}), keys
    else:
        assert keys == (DOC_KEYS | {"scope"} if with_scope else DOC_KEYS), keys
    assert isinstance(doc["access_token"], str) and doc["access_token"]
    assert doc["token_type"].lower() == "bearer"
    for key in ("expires_at", "issued_at"):
        assert RFC3339_Z.match(doc[key]), (key, doc[key])
    assert parse_instant(doc["issued_at"]) < parse_instant(doc["expires_at"])
    if "scope" in doc:
        assert isinstance(doc["scope"], str) and doc["scope"]
    return doc


def lifetime(doc: Mapping[str, str]) -> float:
    return (parse_instant(doc["expires_at"]) - parse_instant(doc["issued_at"])).total_seconds()


def assert_clean(
    results: Iterable[Result | Daemon], secrets: Iterable[str], *, stdout_ok: bool = False
) -> None:
    """No secret or token on stderr (nor stdout, unless ``stdout_ok``); no traceback."""
    needles = [s for s in secrets if s]
    for result in results:
        streams = {"stderr": result.stderr}
        if not stdout_ok:
            streams["stdout"] = result.stdout
        for name, text in streams.items():
            assert "Traceback" not in text, f"traceback on {name}:\n{text}"
            for needle in needles:
                assert needle not in text, f"a secret or token leaked on {name}:\n{text}"


def assert_json_lines(text: str) -> list[dict[str, Any]]:
    """Every stderr line is one JSON object with time, level and message."""
    records = []
    lines = text.splitlines()
    assert lines, "no log lines"
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "message"} <= set(record), line
        records.append(record)
    return records


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class StoreWatcher:
    """A consumer that polls every target and records each time it sees a dead token.

    A look is the read of one target; its instant is taken *before* the read, so a
    document that had expired by then and was still returned was certainly published
    while expired. ``is_active`` asks the token server; ``ignore`` lists tokens the
    test planted itself (not issued by the server).
    """

    readers: Mapping[str, Callable[[], str | None]]
    is_active: Callable[[str], bool]
    interval: float = 0.1
    ignore: frozenset[str] = frozenset()
    violations: list[str] = field(default_factory=list)
    seen: dict[str, list[str]] = field(default_factory=dict)
    looks: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> StoreWatcher:
        self._thread = threading.Thread(target=self._run, name="store-watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def distinct(self, target: str) -> int:
        return len(self.seen.get(target, []))

    def _run(self) -> None:
        last_expiry: dict[str, datetime] = {}
        while not self._stop.is_set():
            for target, read in self.readers.items():
                looked_at = datetime.now(UTC)
                try:
                    value = read()
                except Exception as exc:  # noqa: BLE001 - recorded, asserted on by the test
                    self.errors.append(f"{target}: {type(exc).__name__}: {exc}")
                    continue
                if value is None:
                    continue  # not published yet
                self.looks += 1
                self._look(target, value, looked_at, last_expiry)
            self._stop.wait(self.interval)

    def _look(
        self, target: str, value: str, looked_at: datetime, last_expiry: dict[str, datetime]
    ) -> None:
        try:
            doc = json.loads(value)
            token = doc["access_token"]
            expires_at = parse_instant(doc["expires_at"])
        except (ValueError, KeyError, TypeError) as exc:
            self.violations.append(f"{target}: unreadable document ({exc})")
            return
        tokens = self.seen.setdefault(target, [])
        if not tokens or tokens[-1] != token:
            tokens.append(token)
        at = looked_at.isoformat(timespec="milliseconds")
        if expires_at <= looked_at:
            self.violations.append(
                f"{target}: published token expired at {doc['expires_at']}, seen at {at}"
            )
        if token not in self.ignore and not self.is_active(token):
            self.violations.append(f"{target}: the server says the token is not active at {at}")
        previous = last_expiry.get(target)
        if previous is not None and expires_at < previous:
            self.violations.append(f"{target}: expires_at went backwards at {at}")
        last_expiry[target] = expires_at


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}", pytrace=False)
        time.sleep(0.05)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def keycloak() -> Iterator[Callable[..., KeycloakStub]]:
    """``make(**KeycloakStub kwargs)``: started stubs, all stopped after the test."""
    stubs: list[KeycloakStub] = []

    def make(**kwargs: Any) -> KeycloakStub:
        kwargs.setdefault("clients", {CLIENT_ID: STUB_SECRET})
        stub = KeycloakStub(**kwargs).start()
        stubs.append(stub)
        return stub

    yield make
    for stub in stubs:
        stub.stop()


@pytest.fixture
def kc(keycloak: Callable[..., KeycloakStub]) -> KeycloakStub:
    """A stub with Keycloak's default 300 s lifespan: a published token stays fresh."""
    return keycloak(access_token_lifespan=300)


def cc_ok(stub: KeycloakStub) -> int:
    return stub.count(grant_type="client_credentials", outcome="ok")


# ----------------------------------------------------------------------------- basics


def test_version() -> None:
    result = cli(dict(os.environ), "--version")
    assert result.code == 0, result
    assert re.fullmatch(r"rotator \d+\.\d+\.\d+\S*\n", result.stdout), result


def test_no_command_and_unknown_option_exit_2(aws: AwsEnv) -> None:
    env = base_env(aws)
    for args in ((), ("once", "--no-such-option"), ("rotate-now",)):
        result = cli(env, *args)
        assert result.code == 2, result
        assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- once


def test_once_publishes_to_secretsmanager_and_ssm_then_does_nothing_until_forced(
    aws: AwsEnv, kc: KeycloakStub
) -> None:
    env = server_env(aws, kc.token_url)
    results = []

    first = cli(env, "once")
    results.append(first)
    assert first.code == 0, first
    assert first.stdout == ""
    assert cc_ok(kc) == 1
    sm_doc = check_document(read_sm(aws))
    ssm_doc = check_document(read_ssm(aws))
    assert sm_doc == ssm_doc
    token = sm_doc["access_token"]
    assert token in kc.issued_tokens()
    assert kc.is_active(token)
    assert sm_doc["token_type"] == "Bearer"
    assert sm_doc["scope"] == "profile email"
    assert 299 <= lifetime(sm_doc) <= 301
    issued_at = parse_instant(sm_doc["issued_at"])
    assert abs((datetime.now(UTC) - issued_at).total_seconds()) < 30

    second = cli(env, "once")
    results.append(second)
    assert second.code == 0, second
    assert cc_ok(kc) == 1, "a fresh token must not be fetched again"
    assert kc.count() == 1
    assert json.loads(read_sm(aws) or "") == sm_doc
    assert json.loads(read_ssm(aws) or "") == sm_doc
    assert "fresh" in second.stderr

    forced = cli(env, "once", "--force")
    results.append(forced)
    assert forced.code == 0, forced
    assert cc_ok(kc) == 2
    new_doc = check_document(read_sm(aws))
    assert check_document(read_ssm(aws)) == new_doc
    assert new_doc["access_token"] != token
    assert kc.is_active(new_doc["access_token"])
    assert parse_instant(new_doc["expires_at"]) >= parse_instant(sm_doc["expires_at"])

    assert_clean(results, [STUB_SECRET, *kc.issued_tokens()])


def test_once_reads_the_client_secret_file_and_writes_a_private_file(
    aws: AwsEnv, kc: KeycloakStub, tmp_path: Path
) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(STUB_SECRET + "\n", encoding="utf-8")  # one trailing newline
    token_file = tmp_path / "out" / "token.json"
    token_file.parent.mkdir()
    env = base_env(aws)
    env.update(
        ROTATOR_TOKEN_URL=kc.token_url,
        ROTATOR_CLIENT_ID=CLIENT_ID,
        ROTATOR_CLIENT_SECRET_FILE=str(secret_file),
        ROTATOR_FILE_PATH=str(token_file),
        ROTATOR_CREDENTIAL_NAME="oms",
    )
    result = cli(env, "once")
    assert result.code == 0, result
    doc = check_document(token_file.read_text(encoding="utf-8"))
    assert kc.is_active(doc["access_token"])
    assert token_file.stat().st_mode & 0o777 == 0o600
    leftovers = [p.name for p in token_file.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "the atomic write leaves no temp file"
    assert "credential=oms" in result.stderr
    assert_clean([result], [STUB_SECRET, *kc.issued_tokens()])


def _two_credentials_config(
    tmp_path: Path, kc: KeycloakStub, *, test_secret_file: Path, extra_prod: str = ""
) -> str:
    return write_config(
        tmp_path,
        f"""
[[credentials]]
name = "prod"
token_url = {toml_str(kc.token_url)}
client_id = {toml_str(CLIENT_ID)}
client_secret_env = "OMS_PROD_CLIENT_SECRET"
{extra_prod}

[[credentials.targets]]
type = "secretsmanager"
secret_id = "oms/prod/token"
create = true

[[credentials.targets]]
type = "ssm"
parameter = "/oms/prod/token"

[[credentials]]
name = "test"
token_url = {toml_str(kc.token_url)}
client_id = {toml_str(TEST_CLIENT_ID)}
client_secret_file = {toml_str(str(test_secret_file))}
auth_method = "client_secret_basic"

[[credentials.targets]]
type = "ssm"
parameter = "/oms/test/token"
format = "raw"

[[credentials.targets]]
type = "file"
path = {toml_str(str(tmp_path / "test-token.json"))}
""",
    )


def test_toml_two_credentials_once_and_get(
    aws: AwsEnv, keycloak: Callable[..., KeycloakStub], tmp_path: Path
) -> None:
    kc = keycloak(
        access_token_lifespan=300, clients={CLIENT_ID: STUB_SECRET, TEST_CLIENT_ID: TEST_SECRET}
    )
    secret_file = tmp_path / "test-secret"
    secret_file.write_text(TEST_SECRET + "\n", encoding="utf-8")
    config = _two_credentials_config(tmp_path, kc, test_secret_file=secret_file)
    env = base_env(aws)
    env["OMS_PROD_CLIENT_SECRET"] = STUB_SECRET
    results = []

    once = cli(env, "--config", config, "once")
    results.append(once)
    assert once.code == 0, once
    assert cc_ok(kc) == 2
    by_client = {r.client_id: r.auth_method for r in kc.requests()}
    assert by_client == {CLIENT_ID: "client_secret_post", TEST_CLIENT_ID: "client_secret_basic"}

    prod = check_document(read_sm(aws, "oms/prod/token"))
    assert check_document(read_ssm(aws, "/oms/prod/token")) == prod
    assert kc.token_claims(prod["access_token"])["azp"] == CLIENT_ID  # type: ignore[index]
    raw = read_ssm(aws, "/oms/test/token")
    assert raw is not None
    assert raw == raw.strip() and not raw.startswith("{"), "format = raw writes the bare token"
    assert kc.is_active(raw)
    assert kc.token_claims(raw)["azp"] == TEST_CLIENT_ID  # type: ignore[index]
    test_doc = check_document((tmp_path / "test-token.json").read_text(encoding="utf-8"))
    assert test_doc["access_token"] == raw

    # get: the first credential by default, its first target; --credential picks another.
    default = cli(env, "--config", config, "get")
    assert default.code == 0, default
    assert default.stdout == prod["access_token"] + "\n"
    as_json = cli(env, "get", "--credential", "prod", "--json", "--config", config)
    assert as_json.code == 0, as_json
    assert json.loads(as_json.stdout) == prod
    test_raw = cli(env, "--config", config, "get", "--credential", "test")
    assert test_raw.code == 0, test_raw
    assert test_raw.stdout == raw + "\n"
    for result in (default, as_json, test_raw):
        assert_clean([result], [STUB_SECRET, TEST_SECRET], stdout_ok=True)
        assert_clean([result], kc.issued_tokens(), stdout_ok=True)

    unknown = cli(env, "--config", config, "get", "--credential", "staging")
    results.append(unknown)
    assert unknown.code == 2, unknown
    assert "'staging'" in unknown.stderr
    assert unknown.stdout == ""

    again = cli(env, "--config", config, "once")
    results.append(again)
    assert again.code == 0, again
    assert cc_ok(kc) == 2, "both tokens are fresh: nothing to fetch"
    assert_clean(results, [STUB_SECRET, TEST_SECRET, *kc.issued_tokens()])


# ----------------------------------------------------------------------------- get


def test_get_nothing_published_is_nonzero(aws: AwsEnv) -> None:
    # A consumer configures only the target it reads: no token URL, no client.
    env = base_env(aws)
    env["ROTATOR_SSM_PARAMETER"] = PARAMETER
    for args in (("get",), ("get", "--json")):
        result = cli(env, *args)
        assert result.code == 1, result
        assert result.stdout == ""
        assert "no token published" in result.stderr
        assert_clean([result], [])


def test_get_expired_token_is_nonzero(aws: AwsEnv, keycloak: Callable[..., KeycloakStub]) -> None:
    kc = keycloak(access_token_lifespan=1)
    env = server_env(aws, kc.token_url, sm=False)
    once = cli(env, "once")
    assert once.code == 0, once
    doc = check_document(read_ssm(aws))
    expires_at = parse_instant(doc["expires_at"])
    wait_until(lambda: datetime.now(UTC) > expires_at, 5, "the published token to expire")

    consumer = base_env(aws)
    consumer["ROTATOR_SSM_PARAMETER"] = PARAMETER
    for args in (("get",), ("get", "--json")):
        result = cli(consumer, *args)
        assert result.code == 1, result
        assert result.stdout == "", "an expired token must not be printed"
        assert "expired" in result.stderr
        assert_clean([result], [STUB_SECRET, doc["access_token"]])


def test_get_planted_expired_document_in_secretsmanager(aws: AwsEnv) -> None:
    planted = {
        "access_token": "planted-token-8c1d",
        "token_type": "Bearer",
        "expires_at": "2020-01-01T00:05:00Z",
        "issued_at": "2020-01-01T00:00:00Z",
    }
    aws.secretsmanager.create_secret(Name=SECRET_ID, SecretString=json.dumps(planted))
    env = base_env(aws)
    env["ROTATOR_SECRETSMANAGER_SECRET_ID"] = SECRET_ID
    result = cli(env, "get")
    assert result.code == 1, result
    assert result.stdout == ""
    assert "expired" in result.stderr
    assert "2020-01-01T00:05:00Z" in result.stderr
    assert_clean([result], ["planted-token-8c1d"])


# ----------------------------------------------------------------------------- check


def test_check_gets_a_token_and_publishes_nothing(aws: AwsEnv, kc: KeycloakStub) -> None:
    env = server_env(aws, kc.token_url)
    result = cli(env, "check")
    assert result.code == 0, result
    assert cc_ok(kc) == 1
    assert "token endpoint: ok" in result.stdout
    assert f"target secretsmanager:{SECRET_ID}: ok" in result.stdout
    assert f"target ssm:{PARAMETER}: ok" in result.stdout
    assert read_sm(aws) is None
    assert read_ssm(aws) is None
    assert aws.secretsmanager.list_secrets()["SecretList"] == []
    assert_clean([result], [STUB_SECRET, *kc.issued_tokens()])


def test_check_calls_verify_url(aws: AwsEnv, kc: KeycloakStub) -> None:
    env = server_env(aws, kc.token_url, ROTATOR_VERIFY_URL=kc.verify_url)
    result = cli(env, "check")
    assert result.code == 0, result
    assert "verify_url: ok" in result.stdout
    assert kc.verify_count(ok=True) == 1
    assert read_ssm(aws) is None
    assert_clean([result], [STUB_SECRET, *kc.issued_tokens()])


@pytest.mark.parametrize("legacy_errors", [False, True], ids=["unauthorized_client", "legacy"])
def test_wrong_client_secret_exits_3_at_once(
    aws: AwsEnv, keycloak: Callable[..., KeycloakStub], legacy_errors: bool
) -> None:
    kc = keycloak(access_token_lifespan=300, legacy_errors=legacy_errors)
    wrong = "wrong-secret-5e2b0c"
    env = server_env(aws, kc.token_url, secret=wrong)
    check = cli(env, "check")
    assert check.code == 3, check
    assert "FAILED" in check.stdout
    once = cli(env, "once")  # the default retry budget is about a minute
    assert once.code == 3, once
    assert once.seconds < 10, "a rejection is not retried"
    assert kc.count() == 2, "one request each, no retries"
    assert kc.count(outcome="ok") == 0
    assert read_sm(aws) is None
    assert read_ssm(aws) is None
    assert_clean([check, once], [wrong, STUB_SECRET])


@pytest.mark.parametrize("command", ["check", "once"])
def test_unreachable_token_endpoint_exits_1_within_the_retry_budget(
    aws: AwsEnv, tmp_path: Path, command: str
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/auth/realms/astore-p2p/protocol/openid-connect/token"
    config = write_config(
        tmp_path,
        f"""
[[credentials]]
name = "oms"
token_url = {toml_str(url)}
client_id = {toml_str(CLIENT_ID)}
client_secret_env = "OMS_CLIENT_SECRET"

[credentials.refresh]
retry_budget_seconds = 2

[[credentials.targets]]
type = "ssm"
parameter = {toml_str(PARAMETER)}
""",
    )
    env = base_env(aws)
    env["OMS_CLIENT_SECRET"] = STUB_SECRET
    result = cli(env, "--config", config, command)
    assert result.code == 1, result
    assert result.seconds < 12, result
    assert "unreachable" in result.stdout + result.stderr
    assert read_ssm(aws) is None
    assert_clean([result], [STUB_SECRET])


# ----------------------------------------------------------------------------- config errors


CONFIG_ERRORS: dict[str, tuple[dict[str, str], str | None, list[str]]] = {
    # name: (environment, TOML text or None, what the message must name)
    "bad boolean": (
        {"ROTATOR_SECRETSMANAGER_CREATE": "maybe"},
        None,
        ["ROTATOR_SECRETSMANAGER_CREATE", "'maybe'"],
    ),
    "plain http": (
        {"ROTATOR_TOKEN_URL": "http://sso.example.com/auth/realms/x/protocol/openid-connect/token"},
        None,
        ["ROTATOR_TOKEN_URL", "http://sso.example.com"],
    ),
    "bad auth method": (
        {"ROTATOR_AUTH_METHOD": "private_key_jwt"},
        None,
        ["ROTATOR_AUTH_METHOD", "'private_key_jwt'"],
    ),
    "no client id": ({"ROTATOR_CLIENT_ID": ""}, None, ["ROTATOR_CLIENT_ID"]),
    "no target": (
        {"ROTATOR_SECRETSMANAGER_SECRET_ID": "", "ROTATOR_SSM_PARAMETER": ""},
        None,
        ["ROTATOR_SECRETSMANAGER_SECRET_ID", "ROTATOR_SSM_PARAMETER", "ROTATOR_FILE_PATH"],
    ),
    "toml unknown key": ({}, "lifespan = 300", ["lifespan"]),
    "toml bad value": (
        {},
        'auth_method = "private_key_jwt"',
        ["credentials[oms].auth_method", "'private_key_jwt'"],
    ),
    "toml bad refresh": (
        {},
        "[credentials.refresh]\nratio = 1.5",
        ["credentials[oms].refresh.ratio", "1.5"],
    ),
    "toml inline secret": (
        {},
        f"client_secret = {toml_str(STUB_SECRET)}",
        ["client_secret", "never inline"],
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_errors_exit_2_naming_the_key_and_value(
    aws: AwsEnv, kc: KeycloakStub, tmp_path: Path, case: str
) -> None:
    env_changes, toml_extra, names = CONFIG_ERRORS[case]
    if toml_extra is None:
        env = server_env(aws, kc.token_url)
        env.update(env_changes)
        args: tuple[str, ...] = ("once",)
    else:
        env = base_env(aws)
        env["OMS_CLIENT_SECRET"] = STUB_SECRET
        config = write_config(
            tmp_path,
            f"""
[[credentials]]
name = "oms"
token_url = {toml_str(kc.token_url)}
client_id = {toml_str(CLIENT_ID)}
client_secret_env = "OMS_CLIENT_SECRET"
{toml_extra}

[[credentials.targets]]
type = "ssm"
parameter = {toml_str(PARAMETER)}
""",
        )
        args = ("--config", config, "once")
    result = cli(env, *args)
    assert result.code == 2, result
    for name in names:
        assert name in result.stderr, (name, str(result))
    assert kc.count() == 0, "a configuration error is found before any request"
    assert read_ssm(aws) is None
    assert_clean([result], [STUB_SECRET])


def test_missing_config_file_exits_2(aws: AwsEnv, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    result = cli(base_env(aws), "check", "--config", missing)
    assert result.code == 2, result
    assert missing in result.stderr
    env = base_env(aws)
    env["ROTATOR_CONFIG"] = missing
    via_env = cli(env, "once")
    assert via_env.code == 2, via_env
    assert missing in via_env.stderr


# ----------------------------------------------------------------------------- logs


def test_json_logs_one_object_per_line_and_no_secrets(aws: AwsEnv, kc: KeycloakStub) -> None:
    env = server_env(aws, kc.token_url, ROTATOR_VERIFY_URL=kc.verify_url)
    results = [
        cli(env, "--log-format", "json", "--log-level", "debug", "once"),
        cli(env, "once", "--log-format", "json", "--log-level", "debug"),
        cli(env, "once", "--force", "--log-format", "json"),
        cli(env, "--log-format", "json", "get", "--credential", "nope"),
    ]
    assert [r.code for r in results] == [0, 0, 0, 2], "\n".join(map(str, results))
    for result in results:
        records = assert_json_lines(result.stderr)
        assert all(r["level"] in ("debug", "info", "warning", "error") for r in records)
    messages = " ".join(r["message"] for r in assert_json_lines(results[0].stderr))
    assert "published" in messages and "rotated" in messages
    assert cc_ok(kc) == 2
    assert_clean(results, [STUB_SECRET, *kc.issued_tokens()])


# ----------------------------------------------------------------------------- run


def _readers(aws: AwsEnv, token_file: Path | None = None) -> dict[str, Callable[[], str | None]]:
    sm = aws.client("secretsmanager")
    ssm = aws.client("ssm")
    readers: dict[str, Callable[[], str | None]] = {
        "secretsmanager": lambda: read_sm(aws, client=sm),
        "ssm": lambda: read_ssm(aws, client=ssm),
    }
    if token_file is not None:
        readers["file"] = lambda: (
            token_file.read_text(encoding="utf-8") if token_file.exists() else None
        )
    return readers


@pytest.mark.timeout(60)
def test_run_daemon_keeps_every_target_fresh_then_stops_on_sigterm(
    aws: AwsEnv, keycloak: Callable[..., KeycloakStub], tmp_path: Path
) -> None:
    kc = keycloak(access_token_lifespan=4)
    token_file = tmp_path / "token.json"
    env = server_env(aws, kc.token_url, ROTATOR_FILE_PATH=str(token_file))
    watcher = StoreWatcher(_readers(aws, token_file), is_active=kc.is_active, interval=0.1)
    with Daemon(env, "--log-format", "json", tmp_path=tmp_path) as daemon, watcher:
        # the first publish, then at least three rotations
        wait_until(
            lambda: (
                daemon.assert_running()
                and cc_ok(kc) >= 4
                and all(watcher.distinct(t) >= 4 for t in watcher.readers)
            ),
            25,
            "three rotations seen in every target",
        )
        watcher.stop()
        code, seconds = daemon.terminate()
    assert code == 0, daemon.stderr
    assert seconds < STOP_TIMEOUT
    assert watcher.errors == []
    assert watcher.violations == [], "\n".join(watcher.violations)
    assert watcher.looks > 50
    for target in watcher.readers:
        assert set(watcher.seen[target]) <= kc.issued_tokens()
    assert kc.count() == cc_ok(kc), "every token request succeeded"
    assert daemon.stdout == ""
    records = assert_json_lines(daemon.stderr)
    assert any("received SIGTERM" in r["message"] for r in records)
    assert records[-1]["message"] == "daemon stopped"
    assert_clean([daemon], [STUB_SECRET, *kc.issued_tokens()])


def test_run_adopts_a_fresh_published_token_at_startup(
    aws: AwsEnv, kc: KeycloakStub, tmp_path: Path
) -> None:
    env = server_env(aws, kc.token_url)
    once = cli(env, "once")
    assert once.code == 0, once
    published = read_ssm(aws)
    with Daemon(env, tmp_path=tmp_path) as daemon:
        wait_until(
            lambda: daemon.assert_running() and "adopted" in daemon.stderr,
            15,
            "the daemon to adopt the published token",
        )
        code, seconds = daemon.terminate()
    assert code == 0, daemon.stderr
    assert seconds < STOP_TIMEOUT
    assert cc_ok(kc) == 1, "a restart must not fetch a new token while the published one is fresh"
    assert read_ssm(aws) == published
    assert_clean([once, daemon], [STUB_SECRET, *kc.issued_tokens()])


def _run_at_a_bad_phase(
    aws: AwsEnv,
    tmp_path: Path,
    *,
    token_url: str,
    client_id: str,
    secret: str,
    is_active: Callable[[str], bool],
) -> StoreWatcher:
    """Make the daemon fetch a 3 s token at .9 of a wall-clock second, and watch.

    A fresh token is planted whose planned refresh (75 % of 3 s, no jitter) falls at
    N.9; the daemon adopts it at start-up and fetches at N.9. The server's `exp` (and
    the published, whole-second expires_at) is N+3, but the daemon plans the next
    refresh at N.9 + 2.25 = N+3.15: the published token is dead for ~0.15 s.
    """
    run_at = math.floor(time.time()) + 3.9
    issued = run_at - 2.25

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"

    planted = "planted-token-not-from-the-server"
    doc = {"access_token": planted, "token_type": "Bearer", "issued_at": iso(issued)}
    doc["expires_at"] = iso(issued + 3)
    aws.ssm.put_parameter(Name=PARAMETER, Value=json.dumps(doc), Type="SecureString")
    config = write_config(
        tmp_path,
        f"""
[[credentials]]
name = "oms"
token_url = {toml_str(token_url)}
client_id = {toml_str(client_id)}
client_secret_env = "OMS_CLIENT_SECRET"

[credentials.refresh]
jitter_ratio = 0

[[credentials.targets]]
type = "ssm"
parameter = {toml_str(PARAMETER)}
""",
    )
    env = base_env(aws)
    env["OMS_CLIENT_SECRET"] = secret
    readers = {"ssm": _readers(aws)["ssm"]}
    watcher = StoreWatcher(readers, is_active=is_active, interval=0.02, ignore=frozenset([planted]))
    with Daemon(env, "--config", config, tmp_path=tmp_path) as daemon, watcher:
        deadline = run_at - 0.2
        while "adopted" not in daemon.stderr and time.time() < deadline:
            daemon.assert_running()
            time.sleep(0.05)
        if watcher.distinct("ssm") != 1 or "adopted" not in daemon.stderr:
            pytest.fail(f"set-up: the planted token was not adopted in time:\n{daemon.stderr}")
        # past the second fetch (N+3.15) and its publish
        time.sleep(max(0.0, run_at + 2.25 + 0.6 - time.time()))
        watcher.stop()
        code, _ = daemon.terminate()
    if code != 0 or watcher.distinct("ssm") < 3:
        pytest.fail(f"set-up: expected two rotations and a clean exit:\n{daemon.stderr}")
    assert_clean([daemon], [secret, *watcher.seen["ssm"]])
    return watcher


def test_run_publishes_no_expired_token_whatever_the_phase_keycloak(
    aws: AwsEnv, keycloak: Callable[..., KeycloakStub], tmp_path: Path
) -> None:
    kc = keycloak(access_token_lifespan=3)
    watcher = _run_at_a_bad_phase(
        aws,
        tmp_path,
        token_url=kc.token_url,
        client_id=CLIENT_ID,
        secret=STUB_SECRET,
        is_active=kc.is_active,
    )
    # Keycloak itself keeps the token a second longer, but the published
    # expires_at (what consumers and `rotator get` go by) has passed.
    assert watcher.violations == [], "\n".join(watcher.violations)


# ----------------------------------------------------------------------------- oidc-provider


def peer_env(aws: AwsEnv, peer: OidcPeer) -> dict[str, str]:
    return server_env(aws, peer.token_url, client_id=peer.client_id, secret=peer.client_secret)


def token_requests(peer: OidcPeer) -> int:
    return int(peer.stats()["token_requests"])


@pytest.mark.node
def test_oidc_check_once_get(aws: AwsEnv, oidc_peer_factory: Callable[..., OidcPeer]) -> None:
    peer = oidc_peer_factory(ttl=300)
    env = peer_env(aws, peer)
    results = []

    check = cli(env, "check")
    results.append(check)
    assert check.code == 0, check
    assert "token endpoint: ok" in check.stdout
    assert read_sm(aws) is None and read_ssm(aws) is None
    assert token_requests(peer) == 1

    once = cli(env, "once")
    results.append(once)
    assert once.code == 0, once
    doc = check_document(read_sm(aws), with_scope=None)
    assert check_document(read_ssm(aws), with_scope=None) == doc
    assert peer.introspect(doc["access_token"])
    assert 299 <= lifetime(doc) <= 301
    assert token_requests(peer) == 2

    again = cli(env, "once")
    results.append(again)
    assert again.code == 0, again
    assert "fresh, nothing to do" in again.stderr
    assert token_requests(peer) == 2, "a fresh token must not be fetched again"
    assert json.loads(read_sm(aws) or "") == doc

    got = cli(env, "get", "--json")
    assert got.code == 0, got
    assert json.loads(got.stdout) == doc

    forced = cli(env, "once", "--force")
    results.append(forced)
    assert forced.code == 0, forced
    assert token_requests(peer) == 3
    new_doc = check_document(read_ssm(aws), with_scope=None)
    assert json.loads(read_sm(aws) or "") == new_doc
    assert new_doc["access_token"] != doc["access_token"]
    assert peer.introspect(new_doc["access_token"])
    plain = cli(env, "get")
    assert plain.code == 0, plain
    assert plain.stdout == new_doc["access_token"] + "\n"
    assert_clean(results, [peer.client_secret, doc["access_token"], new_doc["access_token"]])
    assert_clean([got, plain], [peer.client_secret], stdout_ok=True)


@pytest.mark.node
def test_oidc_wrong_secret_exits_3(aws: AwsEnv, oidc_peer: OidcPeer) -> None:
    wrong = "oidc-wrong-secret-77aa"
    env = peer_env(aws, oidc_peer)
    env["ROTATOR_CLIENT_SECRET"] = wrong
    check = cli(env, "check")
    assert check.code == 3, check
    once = cli(env, "once")
    assert once.code == 3, once
    assert once.seconds < 10
    assert oidc_peer.stats()["by_grant"]["client_credentials"] == {"invalid_client": 2}
    assert read_sm(aws) is None and read_ssm(aws) is None
    assert_clean([check, once], [wrong, oidc_peer.client_secret])


@pytest.mark.node
@pytest.mark.timeout(60)
def test_oidc_run_daemon_rotates_and_never_publishes_a_dead_token(
    aws: AwsEnv, oidc_peer: OidcPeer, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path,
        f"""
[[credentials]]
name = "oms"
token_url = {toml_str(oidc_peer.token_url)}
client_id = {toml_str(oidc_peer.client_id)}
client_secret_env = "OMS_CLIENT_SECRET"

[[credentials.targets]]
type = "secretsmanager"
secret_id = {toml_str(SECRET_ID)}
create = true

[[credentials.targets]]
type = "ssm"
parameter = {toml_str(PARAMETER)}
""",
    )
    env = base_env(aws)
    env["OMS_CLIENT_SECRET"] = oidc_peer.client_secret
    watcher = StoreWatcher(_readers(aws), is_active=oidc_peer.introspect, interval=0.1)
    with Daemon(env, "--config", config, tmp_path=tmp_path) as daemon, watcher:
        wait_until(
            lambda: (
                daemon.assert_running()
                and token_requests(oidc_peer) >= 4
                and all(watcher.distinct(t) >= 4 for t in watcher.readers)
            ),
            25,
            "three rotations seen in every target",
        )
        watcher.stop()
        code, seconds = daemon.terminate()
    assert code == 0, daemon.stderr
    assert seconds < STOP_TIMEOUT
    assert watcher.errors == []
    assert watcher.violations == [], "\n".join(watcher.violations)
    assert oidc_peer.stats()["by_grant"]["client_credentials"].keys() == {"ok"}
    assert daemon.stdout == ""
    assert_clean([daemon], [oidc_peer.client_secret, *watcher.seen["ssm"]])


@pytest.mark.node
def test_run_publishes_no_expired_token_whatever_the_phase_oidc(
    aws: AwsEnv, oidc_peer: OidcPeer, tmp_path: Path
) -> None:
    watcher = _run_at_a_bad_phase(
        aws,
        tmp_path,
        token_url=oidc_peer.token_url,
        client_id=oidc_peer.client_id,
        secret=oidc_peer.client_secret,
        is_active=oidc_peer.introspect,
    )
    # Here the server agrees: introspection says the published token is not active.
    assert watcher.violations == [], "\n".join(watcher.violations)
