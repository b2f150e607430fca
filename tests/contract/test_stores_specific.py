"""What only one backend does: Secrets Manager stages and creation, SSM tiers,
file permissions and locking, the memory store's seams, and the AWS error map."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import botocore
import pytest
import requests
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from rotator.errors import (
    StoreAccessDenied,
    StoreError,
    StoreNotFound,
    StoreRejected,
    StoreUnavailable,
    StoreValueTooLarge,
)
from rotator.stores import FileStore, MemoryStore, SecretsManagerStore, SsmStore
from rotator.stores import secretsmanager as sm_module
from rotator.stores import ssm as ssm_module
from rotator.stores.aws import map_aws_error
from rotator.token import Token, encode
from tests.contract.test_store_contract import BASE, PARAMETER, SECRET_ID, make_token

REPO = Path(__file__).resolve().parents[2]


def opaque(size: int, char: str = "x") -> Token:
    """A raw-format token of exactly `size` characters with no readable expiry."""
    return Token(
        access_token=char * size,
        token_type="Bearer",
        issued_at=BASE,
        expires_at=BASE + timedelta(seconds=300),
    )


def stages(aws: Any) -> dict[str | None, list[str]]:
    described = aws.secretsmanager.describe_secret(SecretId=SECRET_ID)
    return {v: sorted(s) for v, s in described.get("VersionIdsToStages", {}).items()}


def record_calls(client: Any) -> list[str]:
    """The names of the operations `client` sends from now on (botocore's own event hook)."""
    calls: list[str] = []

    def before_call(model: Any, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-call", before_call)
    return calls


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- IAM actions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "service"), [(sm_module, "secretsmanager"), (ssm_module, "ssm")]
)
def test_iam_actions_match_the_client_calls(module: Any, service: str) -> None:
    source = Path(module.__file__).read_text(encoding="utf-8")
    methods = set(re.findall(r"self\._client\.(\w+)\(", source))
    assert methods
    make: Any = boto3.client
    model = make(service, region_name="us-east-1").meta.service_model
    by_method = {botocore.xform_name(op): op for op in model.operation_names}
    used = {f"{service}:{by_method[m]}" for m in methods}
    assert used == set(module.IAM_ACTIONS)
    assert len(module.IAM_ACTIONS) == len(set(module.IAM_ACTIONS))


# -- Secrets Manager ----------------------------------------------------------


def test_sm_missing_secret_without_create_is_not_found(aws: Any) -> None:
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID)
    assert store.name == f"secretsmanager:{SECRET_ID}"
    assert store.get().is_missing
    with pytest.raises(StoreNotFound) as put_info:
        store.put(make_token("json"))
    message = str(put_info.value)
    assert SECRET_ID in message
    assert "create = true" in message
    assert put_info.value.action == "secretsmanager:PutSecretValue"
    with pytest.raises(StoreNotFound, match="create = true"):
        store.ping()


def test_sm_create_true_creates_with_kms_key(aws: Any) -> None:
    store = SecretsManagerStore(
        aws.secretsmanager, SECRET_ID, create=True, kms_key_id="alias/rotator-test"
    )
    store.ping()  # missing is fine: put creates it
    token = make_token("json")
    result = store.put(token)
    assert result.is_ours
    described = aws.secretsmanager.describe_secret(SecretId=SECRET_ID)
    assert described["KmsKeyId"] == "alias/rotator-test"
    assert stages(aws) == {result.version: ["AWSCURRENT"]}
    assert store.get().token == token
    store.ping()


def test_sm_publish_moves_stages_and_pending_only_on_current(aws: Any) -> None:
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID, create=True)
    first = store.put(make_token("json", 300))
    second = store.put(make_token("json", 600))
    assert first.version != second.version
    assert stages(aws) == {
        first.version: ["AWSPREVIOUS"],
        second.version: ["AWSCURRENT", "RotatorPending"],
    }
    third = store.put(make_token("json", 900))
    now = stages(aws)
    # the pending label moved off the old version with the next Put: only the current has it
    assert now[third.version] == ["AWSCURRENT", "RotatorPending"]
    assert now[second.version] == ["AWSPREVIOUS"]
    assert [v for v, s in now.items() if "RotatorPending" in s] == [third.version]


def test_sm_lost_race_retries_against_the_new_version(aws: Any) -> None:
    ours = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    theirs = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    ours.put(make_token("json", 100))
    basis = ours.get()
    between = theirs.put(make_token("json", 300))
    mine = make_token("json", 600)
    calls = record_calls(ours._client)
    result = ours.put(mine, basis)
    assert result.is_ours
    assert calls == [
        "PutSecretValue",
        "UpdateSecretVersionStage",  # fails: AWSCURRENT moved since our read
        "GetSecretValue",
        "UpdateSecretVersionStage",  # against the winner's version
    ]
    now = stages(aws)
    assert now[result.version] == ["AWSCURRENT", "RotatorPending"]
    assert now[between.version] == ["AWSPREVIOUS"]


def test_sm_later_basis_means_no_call_and_winner_adoption_means_no_promotion(aws: Any) -> None:
    ours = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    theirs = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    later = make_token("json", 900)
    ours.put(later)
    basis = ours.get()
    calls = record_calls(ours._client)
    assert not ours.put(make_token("json", 300), basis).is_ours
    assert calls == []

    old = ours.get()
    winner = make_token("json", 1200)
    theirs.put(winner)
    calls.clear()
    result = ours.put(make_token("json", 1000), old)
    assert (result.is_ours, result.published) == (False, winner)
    assert calls == [
        "PutSecretValue",
        "UpdateSecretVersionStage",
        "GetSecretValue",
        "UpdateSecretVersionStage",  # drop our pending label from our unused version
    ]
    assert all("RotatorPending" not in s for s in stages(aws).values())


def test_sm_empty_secret_gets_its_first_version(aws: Any) -> None:
    aws.secretsmanager.create_secret(Name=SECRET_ID)  # as Terraform does: no value yet
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID)
    store.ping()
    assert store.get().is_missing
    token = make_token("json")
    result = store.put(token)
    assert result.is_ours
    # the pending label stays on the current version until the next Put moves it
    assert stages(aws) == {result.version: ["AWSCURRENT", "RotatorPending"]}
    assert store.get().token == token


def test_sm_create_race_falls_back_to_compare_and_set(aws: Any) -> None:
    ours = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    theirs = SecretsManagerStore(aws.client("secretsmanager"), SECRET_ID, create=True)
    basis = ours.get()
    theirs.put(make_token("json", 300))
    mine = make_token("json", 600)
    result = ours.put(mine, basis)
    assert result.is_ours
    assert ours.get().token == mine


def test_sm_binary_secret_is_unreadable(aws: Any) -> None:
    aws.secretsmanager.create_secret(Name=SECRET_ID, SecretBinary=b"\x00\x01")
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID)
    reading = store.get()
    assert reading.is_unreadable
    assert "SecretBinary" in (reading.problem or "")
    token = make_token("json")
    assert store.put(token, reading).is_ours
    assert store.get().token == token


def test_sm_size_limit_is_checked_before_any_call(aws: Any) -> None:
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID, fmt="raw", create=True)
    calls = record_calls(aws.secretsmanager)
    with pytest.raises(StoreValueTooLarge) as info:
        store.put(opaque(65_537))
    assert calls == []
    assert "65537 bytes" in str(info.value)
    assert "x" * 50 not in str(info.value)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        aws.secretsmanager.describe_secret(SecretId=SECRET_ID)
    with pytest.raises(StoreValueTooLarge):
        store.put(opaque(32_769, "\u00e9"))  # 65,538 bytes in UTF-8
    assert store.put(opaque(65_536)).is_ours


def test_sm_put_denied_names_action_and_secret(aws: Any) -> None:
    SecretsManagerStore(aws.secretsmanager, SECRET_ID, create=True).put(make_token("json", 300))
    aws.deny("secretsmanager:PutSecretValue")
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID, create=True)
    assert store.get().token is not None  # everything else is still allowed
    store.ping()
    token = make_token("json", 600)
    with pytest.raises(StoreAccessDenied) as info:
        store.put(token)
    message = str(info.value)
    assert message.startswith(f"secretsmanager:PutSecretValue on {SECRET_ID} denied: ")
    assert "not authorized" in message
    assert "<" not in message and "\n" not in message
    assert token.access_token not in message
    assert info.value.action == "secretsmanager:PutSecretValue"
    assert isinstance(info.value.__cause__, ClientError)

    aws.allow_all()
    assert store.put(token).is_ours


def test_sm_get_denied(aws: Any) -> None:
    aws.deny("secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret")
    store = SecretsManagerStore(aws.secretsmanager, SECRET_ID)
    with pytest.raises(StoreAccessDenied, match="secretsmanager:GetSecretValue on oms/token"):
        store.get()
    with pytest.raises(StoreAccessDenied, match="secretsmanager:DescribeSecret on oms/token"):
        store.ping()


def test_deny_makes_the_old_keys_unrecognised(aws: Any) -> None:
    old = aws.client("ssm")
    aws.deny("ssm:PutParameter")
    with pytest.raises(StoreAccessDenied, match="ssm:GetParameter on /oms/token denied"):
        SsmStore(old, PARAMETER).get()


# -- SSM ---------------------------------------------------------------------


def describe_parameter(aws: Any) -> dict[str, Any]:
    found = aws.ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [PARAMETER]}])[
        "Parameters"
    ]
    assert len(found) == 1
    parameter: dict[str, Any] = found[0]
    return parameter


def test_ssm_writes_securestring_standard_and_versions(aws: Any) -> None:
    store = SsmStore(aws.ssm, PARAMETER)
    assert store.name == f"ssm:{PARAMETER}"
    store.ping()  # missing is fine: put creates it
    first = store.put(make_token("json", 300))
    second = store.put(make_token("json", 600))
    assert (first.version, second.version) == ("1", "2")
    described = describe_parameter(aws)
    assert described["Type"] == "SecureString"
    assert described["Tier"] == "Standard"
    assert described["KeyId"] == "alias/aws/ssm"
    history = aws.ssm.get_parameter_history(Name=PARAMETER, WithDecryption=False)["Parameters"]
    assert all(not h.get("Labels") for h in history)
    assert store.get().version == "2"


def test_ssm_uses_the_given_kms_key(aws: Any) -> None:
    SsmStore(aws.ssm, PARAMETER, kms_key_id="alias/rotator-test").put(make_token("json"))
    assert describe_parameter(aws)["KeyId"] == "alias/rotator-test"


@pytest.mark.parametrize(
    ("token", "tier"),
    [
        (opaque(4_096), "Standard"),
        (opaque(4_097), "Advanced"),
        (opaque(2_049, "\u00e9"), "Advanced"),  # 4,098 bytes, 2,049 characters
        (opaque(5_000), "Advanced"),
        (opaque(8_192), "Advanced"),
    ],
    ids=["4096", "4097", "4098-bytes-utf8", "5000", "8192"],
)
def test_ssm_tier_follows_the_utf8_size(aws: Any, token: Token, tier: str) -> None:
    store = SsmStore(aws.ssm, PARAMETER, fmt="raw")
    assert store.put(token).is_ours
    assert describe_parameter(aws)["Tier"] == tier
    assert store.get().value == token.access_token


@pytest.mark.parametrize("size", [8_193, 9_000])
def test_ssm_too_large_is_refused_before_any_call(aws: Any, size: int) -> None:
    store = SsmStore(aws.ssm, PARAMETER, fmt="raw")
    calls = record_calls(aws.ssm)
    with pytest.raises(StoreValueTooLarge) as info:
        store.put(opaque(size))
    assert calls == []
    assert f"{size} bytes" in str(info.value)
    assert info.value.action == "ssm:PutParameter"
    with pytest.raises(ClientError, match="ParameterNotFound"):
        aws.ssm.get_parameter(Name=PARAMETER)


def test_ssm_put_denied_names_action_and_parameter(aws: Any) -> None:
    aws.deny("ssm:PutParameter")
    store = SsmStore(aws.ssm, PARAMETER)
    store.ping()
    token = make_token("json")
    with pytest.raises(StoreAccessDenied) as info:
        store.put(token)
    message = str(info.value)
    assert message.startswith(f"ssm:PutParameter on {PARAMETER} denied: ")
    assert token.access_token not in message
    with pytest.raises(ClientError, match="ParameterNotFound"):
        aws.ssm.get_parameter(Name=PARAMETER)


def test_ssm_get_denied_fails_ping(aws: Any) -> None:
    aws.deny("ssm:GetParameter")
    with pytest.raises(StoreAccessDenied, match="ssm:GetParameter on /oms/token"):
        SsmStore(aws.ssm, PARAMETER).ping()


class _TierRefusingProxy(ThreadingHTTPServer):
    """Forwards to moto, refusing a Standard write to a parameter it saw go Advanced.

    moto lets a parameter go back from Advanced to Standard; AWS does not.
    """

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = urllib.parse.urlsplit(upstream)
        self.advanced: set[str] = set()
        self.tiers: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _TierRefusingProxy

    def log_message(self, fmt: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("X-Amz-Target") == "AmazonSSM.PutParameter":
            request = json.loads(body)
            tier = request.get("Tier", "Standard")
            self.server.tiers.append(tier)
            if tier == "Standard" and request["Name"] in self.server.advanced:
                self._reply(
                    400,
                    {
                        "__type": "ValidationException",
                        "message": "This parameter uses the advanced-parameter tier. You can't "
                        "downgrade a parameter from the advanced-parameter tier to the "
                        "standard-parameter tier.",
                    },
                )
                return
            if tier == "Advanced":
                self.server.advanced.add(request["Name"])
        connection = http.client.HTTPConnection(
            self.server.upstream.hostname or "127.0.0.1", self.server.upstream.port, timeout=10
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        connection.request("POST", self.path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in {"connection", "transfer-encoding", "content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        connection.close()

    def _reply(self, status: int, payload: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def tier_proxy(aws: Any) -> Iterator[_TierRefusingProxy]:
    proxy = _TierRefusingProxy(aws.endpoint)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(5)


def test_ssm_retries_advanced_when_aws_refuses_a_downgrade(
    aws: Any, tier_proxy: _TierRefusingProxy
) -> None:
    client = aws.client("ssm", endpoint_url=tier_proxy.endpoint)
    store = SsmStore(client, PARAMETER, fmt="raw")
    big = opaque(5_000)
    store.put(big)
    small = Token(
        access_token="small-token",
        token_type="Bearer",
        issued_at=BASE,
        expires_at=BASE + timedelta(seconds=600),
    )
    result = store.put(small)
    assert result.is_ours
    assert tier_proxy.tiers == ["Advanced", "Standard", "Advanced"]
    assert describe_parameter(aws)["Tier"] == "Advanced"
    assert store.get().value == "small-token"


# -- file ---------------------------------------------------------------------


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_file_is_private_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o644)
    store = FileStore(path)
    assert store.name == f"file:{path}"
    old_umask = os.umask(0)
    try:
        for seconds in (300, 600, 900):
            store.put(make_token("json", seconds))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "token.json.lock").stat().st_mode) == 0o600
    assert listing(tmp_path) == ["token.json", "token.json.lock"]
    store.ping()


def test_file_version_changes_with_each_write(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "token.json")
    first = store.put(make_token("json", 300))
    second = store.put(make_token("json", 600))
    assert first.version != second.version
    assert store.get().version == second.version


def test_file_refuses_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    link = tmp_path / "token.json"
    link.symlink_to(victim)
    store = FileStore(link)
    with pytest.raises(StoreRejected, match="symlink") as info:
        store.put(make_token("json"))
    assert str(link) in str(info.value)
    with pytest.raises(StoreRejected, match="symlink"):
        store.get()
    with pytest.raises(StoreRejected, match="symlink"):
        store.ping()
    assert victim.read_text(encoding="utf-8") == "precious"
    assert link.is_symlink()
    assert listing(tmp_path) == ["token.json", "token.json.lock", "victim.txt"]


def test_file_refuses_a_symlinked_lock(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    (tmp_path / "token.json.lock").symlink_to(victim)
    with pytest.raises(StoreRejected, match="symlink"):
        FileStore(tmp_path / "token.json").put(make_token("json"))
    assert victim.read_text(encoding="utf-8") == "precious"
    assert not (tmp_path / "token.json").exists()


def test_file_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "token.json").mkdir()
    store = FileStore(tmp_path / "token.json")
    with pytest.raises(StoreRejected, match="not a regular file"):
        store.get()
    with pytest.raises(StoreRejected, match="not a regular file"):
        store.put(make_token("json"))
    with pytest.raises(StoreRejected):
        store.ping()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(StoreRejected, match="not a regular file"):
        FileStore(fifo).get()  # and does not block on open


def test_file_missing_folder(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "nowhere" / "token.json")
    assert store.get().is_missing
    with pytest.raises(StoreNotFound, match="does not exist"):
        store.ping()
    with pytest.raises(StoreNotFound, match=str(tmp_path / "nowhere")):
        store.put(make_token("json"))


def test_file_non_utf8_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    store = FileStore(path)
    reading = store.get()
    assert reading.is_unreadable
    assert store.put(make_token("json"), reading).is_ours


_FAILING_WRITE = """
import json, resource, signal, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from rotator.stores import FileStore
from rotator.token import Token

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
base = datetime(2031, 5, 4, 12, tzinfo=UTC)
token = Token("T" * 500, "Bearer", base, base + timedelta(seconds=900))
try:
    FileStore(Path(sys.argv[1])).put(token)
except Exception as exc:
    print(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
else:
    print(json.dumps({"type": None}))
"""


def test_file_failed_write_leaves_old_value_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    store = FileStore(path)
    old = make_token("json", 300)
    store.put(old)
    # A real mid-write failure: the file size limit makes write() fail with EFBIG.
    run = subprocess.run(
        [sys.executable, "-c", _FAILING_WRITE, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    outcome = json.loads(run.stdout)
    assert outcome["type"] == "StoreRejected"
    assert str(tmp_path) in outcome["message"]
    assert "TTTT" not in outcome["message"]
    assert store.get().token == old
    assert listing(tmp_path) == ["token.json", "token.json.lock"]


def _in_child_as_nobody(func: Any) -> dict[str, str]:
    """Run `func` in a forked child that dropped root; return its outcome."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            func()
            outcome = {"type": ""}
        except StoreError as exc:
            outcome = {"type": type(exc).__name__, "message": str(exc)}
        except BaseException as exc:
            outcome = {"type": "unexpected " + type(exc).__name__, "message": str(exc)}
        os.write(write_end, json.dumps(outcome).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result: dict[str, str] = json.loads(data)
    return result


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="rotator-acl-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_file_permission_errors_are_access_denied(shared_dir: Path) -> None:
    path = shared_dir / "token.json"
    FileStore(path).put(make_token("json"))  # root-owned, 0600
    token = make_token("json", 900)
    if os.geteuid() == 0:
        read = _in_child_as_nobody(lambda: FileStore(path).get())
        write = _in_child_as_nobody(lambda: FileStore(path).put(token))
        ping = _in_child_as_nobody(lambda: FileStore(path).ping())
    else:
        shared_dir.chmod(0o555)
        path.chmod(0o000)
        outcomes = []
        for call in (
            lambda: FileStore(path).get(),
            lambda: FileStore(path).put(token),
            lambda: FileStore(path).ping(),
        ):
            try:
                call()
                outcomes.append({"type": ""})
            except StoreError as exc:
                outcomes.append({"type": type(exc).__name__, "message": str(exc)})
        shared_dir.chmod(0o755)
        read, write, ping = outcomes
    assert read["type"] == "StoreAccessDenied"
    assert str(path) in read["message"] and "EACCES" in read["message"]
    assert write["type"] == "StoreAccessDenied"
    assert str(shared_dir) in write["message"]
    assert token.access_token not in write["message"]
    assert ping["type"] == "StoreAccessDenied"


def test_file_threads_racing_never_lose_the_later_token(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    writers, per_writer = 6, 15
    errors: list[BaseException] = []
    seen: list[int] = []
    stop = threading.Event()

    def write(i: int) -> None:
        store = FileStore(path)
        try:
            for j in range(per_writer):
                seconds = 100 + j * writers + i
                result = store.put(make_token("json", seconds, tag=f"w{i}"))
                assert result.published.expires_at >= BASE + timedelta(seconds=seconds)
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        store = FileStore(path)
        while not stop.is_set():
            reading = store.get()
            if reading.token is not None:
                seen.append(int((reading.token.expires_at - BASE).total_seconds()))
            elif not reading.is_missing:
                errors.append(AssertionError(f"torn read: {reading.problem}"))

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reader.join()
    assert not errors
    assert seen == sorted(seen)  # readers never see the expiry go back
    final = FileStore(path).get().token
    assert final is not None
    assert final.expires_at == BASE + timedelta(seconds=100 + per_writer * writers - 1)
    assert listing(tmp_path) == ["token.json", "token.json.lock"]


_RACER = """
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from rotator.stores import FileStore
from rotator.token import Token

path, index, writers, count = Path(sys.argv[1]), *map(int, sys.argv[2:5])
base = datetime(2031, 5, 4, 12, tzinfo=UTC)
store = FileStore(path)
for j in range(count):
    seconds = 100 + j * writers + index
    token = Token(f"p{index}-{j}", "Bearer", base, base + timedelta(seconds=seconds))
    result = store.put(token)
    assert result.published.expires_at >= token.expires_at
"""


def test_file_processes_racing_never_lose_the_later_token(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    writers, per_writer = 4, 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(path), str(i), str(writers), str(per_writer)],
            cwd=REPO,
        )
        for i in range(writers)
    ]
    store = FileStore(path)
    last = 0
    while any(p.poll() is None for p in procs):
        reading = store.get()
        assert reading.is_missing or reading.token is not None, reading.problem
        if reading.token is not None:
            now = int((reading.token.expires_at - BASE).total_seconds())
            assert now >= last
            last = now
    assert [p.wait(60) for p in procs] == [0] * writers
    final = store.get().token
    assert final is not None
    assert final.expires_at == BASE + timedelta(seconds=100 + per_writer * writers - 1)
    assert listing(tmp_path) == ["token.json", "token.json.lock"]


# -- memory -------------------------------------------------------------------


def test_memory_fail_next_and_history() -> None:
    store = MemoryStore(name="mem", fmt="json")
    assert store.name == "mem"
    store.fail_next(StoreUnavailable("throttled", target="mem", action="put"), times=2)
    token = make_token("json", 300)
    with pytest.raises(StoreUnavailable):
        store.get()
    with pytest.raises(StoreUnavailable):
        store.put(token)
    assert store.writes == 0
    assert store.put(token).is_ours
    assert not store.put(make_token("json", 200)).is_ours
    later = make_token("json", 600)
    assert store.put(later).is_ours
    assert store.writes == 2
    assert store.values == [encode(token, "json"), encode(later, "json")]
    with pytest.raises(ValueError):
        store.fail_next(StoreUnavailable("x"), times=0)


def test_memory_threads_racing_never_lose_the_later_token() -> None:
    store = MemoryStore()

    def write(i: int) -> None:
        for j in range(50):
            store.put(make_token("json", 100 + j * 8 + i))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = store.get().token
    assert final is not None
    assert final.expires_at == BASE + timedelta(seconds=100 + 49 * 8 + 7)
    expiries = [json.loads(v)["expires_at"] for v in store.values]
    assert expiries == sorted(expiries)


# -- the AWS error map ----------------------------------------------------------


def client_error(code: str, message: str = "something", status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutSecretValue")


def mapped(exc: Exception) -> StoreError:
    return map_aws_error(exc, target="oms/token", action="secretsmanager:PutSecretValue")


@pytest.mark.parametrize(
    "code",
    [
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyUpdates",
        "ProvisionedThroughputExceeded",
    ],
)
def test_map_throttling_is_unavailable(code: str) -> None:
    error = mapped(client_error(code, "Rate exceeded"))
    assert type(error) is StoreUnavailable
    assert error.is_transient
    assert (
        str(error) == f"secretsmanager:PutSecretValue on oms/token throttled: {code}: Rate exceeded"
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("InternalServiceError", 500),
        ("InternalFailure", 500),
        ("ServiceUnavailable", 503),
        ("InternalServerError", 500),
        ("SomethingNew", 502),
        ("", 504),
        ("Whatever", 429),
    ],
)
def test_map_server_errors_are_unavailable(code: str, status: int) -> None:
    assert type(mapped(client_error(code, status=status))) is StoreUnavailable


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="https://secretsmanager.us-east-1.amazonaws.com"),
        ConnectionClosedError(endpoint_url="https://x"),
        ReadTimeoutError(endpoint_url="https://x"),
        ConnectTimeoutError(endpoint_url="https://x"),
        urllib3.exceptions.ProtocolError("Connection aborted."),
        urllib3.exceptions.NewConnectionError(None, "refused"),  # type: ignore[arg-type]
        requests.exceptions.ConnectionError("reset"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_map_connection_errors_are_unavailable(exc: Exception) -> None:
    error = mapped(exc)
    assert type(error) is StoreUnavailable
    assert str(error).startswith("secretsmanager:PutSecretValue on oms/token unavailable: ")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AccessDeniedException", "User: arn:aws:iam::1:user/x is not authorized"),
        ("AccessDenied", "not authorized"),
        ("UnrecognizedClientException", "The security token included in the request is invalid"),
        ("KMSAccessDeniedException", "no grant"),
        ("AccessDeniedException", "Access to KMS is not allowed"),
        ("DecryptionFailure", "can't decrypt the protected secret text using the provided KMS key"),
    ],
)
def test_map_access_errors(code: str, message: str) -> None:
    error = mapped(client_error(code, message, status=400))
    assert type(error) is StoreAccessDenied
    assert str(error).startswith("secretsmanager:PutSecretValue on oms/token denied")
    assert message in str(error)
    assert error.target == "oms/token"
    assert error.action == "secretsmanager:PutSecretValue"


def test_map_access_denied_message_shape() -> None:
    error = mapped(client_error("AccessDeniedException", "User: u is not authorized"))
    assert (
        str(error) == "secretsmanager:PutSecretValue on oms/token denied: User: u is not authorized"
    )


def test_map_moto_xml_denial() -> None:
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error>'
        "<Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/u is not "
        "authorized to perform: secretsmanager:PutSecretValue</Message><Type>Sender</Type>"
        "</Error></Errors></ErrorResponse>"
    )
    error = mapped(client_error("403", xml, status=403))
    assert type(error) is StoreAccessDenied
    assert str(error) == (
        "secretsmanager:PutSecretValue on oms/token denied: User: arn:aws:iam::123456789012:"
        "user/u is not authorized to perform: secretsmanager:PutSecretValue"
    )


@pytest.mark.parametrize("code", ["ResourceNotFoundException", "ParameterNotFound"])
def test_map_not_found(code: str) -> None:
    assert type(mapped(client_error(code, status=404))) is StoreNotFound


def test_map_no_credentials() -> None:
    error = mapped(NoCredentialsError())
    assert type(error) is StoreAccessDenied
    assert "no AWS credentials found" in str(error)


def test_map_everything_else_is_rejected_on_one_line_without_the_value() -> None:
    secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.c2ln"
    exc = client_error(
        "ValidationException", f"1 validation error:\nValue '{secret}' failed\nto satisfy"
    )
    error = map_aws_error(exc, target="/oms/token", action="ssm:PutParameter", redact=[secret])
    assert type(error) is StoreRejected
    assert not error.is_transient
    assert "\n" not in str(error)
    assert secret not in str(error)
    assert str(error).startswith("ssm:PutParameter on /oms/token rejected: ValidationException")

    validation = mapped(
        ParamValidationError(report=f"Invalid type for parameter X, value: {secret}")
    )
    assert type(validation) is StoreRejected
    assert secret not in str(validation)
    assert type(mapped(ValueError("odd"))) is StoreRejected


def test_map_long_messages_are_cut() -> None:
    error = mapped(client_error("ValidationException", "x" * 5_000))
    assert len(str(error)) <= 300


@pytest.mark.parametrize("service", ["secretsmanager", "ssm"])
def test_closed_port_is_unavailable(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    make: Any = boto3.client
    client: Any = make(
        service,
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2),
    )
    store: SecretsManagerStore | SsmStore
    if service == "secretsmanager":
        store = SecretsManagerStore(client, SECRET_ID, create=True)
        action = "secretsmanager:GetSecretValue"
    else:
        store = SsmStore(client, PARAMETER)
        action = "ssm:GetParameter"
    for call in (store.get, store.ping, lambda: store.put(make_token("json"))):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert info.value.is_transient
        assert isinstance(info.value.__cause__, EndpointConnectionError)
    with pytest.raises(StoreUnavailable, match=re.escape(action)):
        store.get()
