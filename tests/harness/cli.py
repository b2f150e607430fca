"""The CLI tests' vocabulary: their credentials, environment, and what they read back.

* ``server_env(aws, token_url, ...)``: one credential from ``ROTATOR_*`` variables on the
  allow-listed environment (``tests.harness.env``), publishing to Secrets Manager and SSM.
* ``read_sm``/``read_ssm``/``check_document``/``lifetime``: the published document.
* ``assert_clean``/``assert_json_lines``: no secret, no traceback; JSON log lines.
* ``ConsumerWatcher``: polls every target and records each time it sees a dead token.
* ``rotate_three_times``/``run_at_a_bad_phase``: the run daemon watched by a consumer.
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from rotator.testing import KeycloakStub
from tests.fixtures.aws import AwsEnv
from tests.fixtures.oidc import OidcPeer
from tests.harness.env import rotator_env
from tests.harness.poll import Poller
from tests.harness.process import Daemon, Result, wait_until

CLIENT_ID = "oms-client"
# Distinctive values, so that a leak into any output is found by a plain search.
STUB_SECRET = "kc-secret-3f9a71c2-never-logged"
TEST_CLIENT_ID = "oms-test-client"
TEST_SECRET = "kc-test-secret-b81e04d7-never-logged"
SECRET_ID = "oms/access-token"
PARAMETER = "/oms/access-token"
DOC_KEYS = {"access_token", "token_type", "expires_at", "issued_at"}
RFC3339_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


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
    env = rotator_env(aws)
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


def write_toml(tmp_path: Path, text: str) -> str:
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


def consumer_readers(
    aws: AwsEnv, token_file: Path | None = None
) -> dict[str, Callable[[], str | None]]:
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


def cc_ok(stub: KeycloakStub) -> int:
    return stub.count(grant_type="client_credentials", outcome="ok")


def peer_env(aws: AwsEnv, peer: OidcPeer) -> dict[str, str]:
    return server_env(aws, peer.token_url, client_id=peer.client_id, secret=peer.client_secret)


def token_requests(peer: OidcPeer) -> int:
    return int(peer.stats()["token_requests"])


class ConsumerWatcher(Poller):
    """A consumer that polls every target and records each time it sees a dead token.

    A look is the read of one target; its instant is taken *before* the read, so a
    document that had expired by then and was still returned was certainly published
    while expired. ``is_active`` asks the token server; ``ignore`` lists tokens the
    test planted itself (not issued by the server).
    """

    def __init__(
        self,
        readers: Mapping[str, Callable[[], str | None]],
        is_active: Callable[[str], bool],
        interval: float = 0.1,
        ignore: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(readers, interval=interval)
        self.is_active = is_active
        self.ignore = ignore
        self.violations: list[str] = []
        self.seen: dict[str, list[str]] = {}
        self.looks = 0
        self.errors: list[str] = []
        self._last_expiry: dict[str, datetime] = {}

    def distinct(self, target: str) -> int:
        return len(self.seen.get(target, []))

    def record(self, store: str, started: float, ended: float, value: str | None) -> None:
        if value is None:
            return  # not published yet
        self.looks += 1
        self._look(store, value, datetime.fromtimestamp(started, UTC), self._last_expiry)

    def record_error(self, store: str, started: float, ended: float, exc: Exception) -> None:
        self.errors.append(f"{store}: {type(exc).__name__}: {exc}")

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


# The planted token's life (s): the daemon may take up to about 0.75 of it, less 2 s, to
# start and adopt it before the planned refresh (a bound for a hang, not a speed).
PLANTED_LIFETIME = 20.0
PLANNED_RUN = re.compile(r"adopted credential=oms expires_at=\S+ next_run=(\S+)")


def rotate_three_times(
    daemon: Daemon, watcher: ConsumerWatcher, token_requests: Callable[[], int]
) -> None:
    """Wait (25 s, a hang detector) until the daemon made four token requests and every
    target showed four distinct tokens (the first publish and three rotations); stop the
    watcher, then the daemon, and check both: exit 0, no read error, no dead token seen."""
    wait_until(
        lambda: (
            daemon.assert_running()
            and token_requests() >= 4
            and all(watcher.distinct(t) >= 4 for t in watcher.readers)
        ),
        25,
        "three rotations seen in every target",
    )
    watcher.stop()
    code = daemon.terminate()
    assert code == 0, daemon.stderr
    assert watcher.errors == []
    assert watcher.violations == [], "\n".join(watcher.violations)


def run_at_a_bad_phase(
    aws: AwsEnv,
    tmp_path: Path,
    *,
    token_url: str,
    client_id: str,
    secret: str,
    is_active: Callable[[str], bool],
) -> ConsumerWatcher:
    """Make the daemon fetch a 3 s token at .9 of a wall-clock second, and watch.

    A fresh token is planted whose planned refresh (75 % of its life, no jitter) falls at
    N.9, about 13 s ahead; the daemon adopts it at start-up and logs that plan (checked
    to the millisecond: the set-up is proved by the daemon's own log, not by timing),
    then fetches at N.9. The server's `exp` (and the published, whole-second expires_at)
    is N+3, but a daemon planning from the unrounded send time would refresh at
    N.9 + 2.25 = N+3.15: its published token would be dead for ~0.15 s. The watcher
    keeps looking until the second fetched token is published, however long that takes.
    """
    ratio = 0.75
    run_at = math.floor(time.time()) + 12.9
    issued = run_at - PLANTED_LIFETIME * ratio

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"

    planted = "planted-token-not-from-the-server"
    doc = {"access_token": planted, "token_type": "Bearer", "issued_at": iso(issued)}
    doc["expires_at"] = iso(issued + PLANTED_LIFETIME)
    aws.ssm.put_parameter(Name=PARAMETER, Value=json.dumps(doc), Type="SecureString")
    config = write_toml(
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
    env = rotator_env(aws)
    env["OMS_CLIENT_SECRET"] = secret
    readers = {"ssm": consumer_readers(aws)["ssm"]}
    watcher = ConsumerWatcher(
        readers, is_active=is_active, interval=0.02, ignore=frozenset([planted])
    )
    with Daemon(env, tmp_path, args=("--config", config)) as daemon, watcher:
        while PLANNED_RUN.search(daemon.stderr) is None and time.time() < run_at:
            daemon.assert_running()
            time.sleep(0.05)
        plan = PLANNED_RUN.search(daemon.stderr)
        if plan is None or watcher.distinct("ssm") != 1:
            pytest.fail(
                f"set-up: the planted token was not adopted before its refresh:\n{daemon.stderr}"
            )
        assert plan.group(1) == iso(run_at), f"set-up: the daemon planned {plan.group(1)}"
        # the first fetch (N.9) and the second (due by N+3): three distinct tokens
        deadline = run_at + 60
        while watcher.distinct("ssm") < 3 and time.time() < deadline:
            daemon.assert_running()
            time.sleep(0.05)
        watcher.stop()
        code = daemon.terminate()
    if code != 0 or watcher.distinct("ssm") < 3:
        pytest.fail(f"set-up: expected two rotations and a clean exit:\n{daemon.stderr}")
    fetched_at = [line for line in daemon.stderr.splitlines() if "rotated credential=oms" in line]
    assert len(fetched_at) >= 2, daemon.stderr
    assert_clean([daemon], [secret, *watcher.seen["ssm"]])
    return watcher
