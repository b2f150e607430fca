"""`rotator status` end to end: a subprocess reading Secrets Manager and SSM on a moto server
over HTTP and local files, with two credentials whose targets hold a fresh, a due, an expired
and no token. Documents are planted with the real stores' ``put``. Plus ``render`` itself.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.clock import format_instant
from rotator.status import Row, render
from rotator.stores import FileStore, SecretsManagerStore, SsmStore
from rotator.testing import KeycloakStub
from rotator.token import Token
from tests.harness.env import rotator_env

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FIELDS = {"credential", "target", "state", "issued_at", "expires_at", "seconds_left", "is_due"}
HEADER = ("CREDENTIAL", "TARGET", "STATE", "LEFT", "ISSUED_AT", "EXPIRES_AT", "DUE")


def token(issued_at: datetime, lifetime: float, marker: str) -> Token:
    return Token(
        access_token=f"access-token-MARKER-{marker}",
        token_type="Bearer",
        issued_at=issued_at,
        expires_at=issued_at + timedelta(seconds=lifetime),
    )


class Setup:
    """The planted targets and a way to write configs naming any subset of them."""

    def __init__(self, aws: Any, tmp_path: Path, stub: KeycloakStub) -> None:
        self.tmp_path = tmp_path
        self.stub = stub
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.fresh = token(self.now, 300, "fresh")
        self.due = token(self.now - timedelta(seconds=250), 300, "due")
        self.expired = token(self.now - timedelta(seconds=400), 300, "expired")
        self.due_file = tmp_path / "alpha.json"
        self.missing_file = tmp_path / "beta-missing.json"
        SecretsManagerStore(aws.secretsmanager, "alpha/token", create=True).put(self.fresh)
        FileStore(self.due_file).put(self.due)
        SsmStore(aws.ssm, "/beta/token").put(self.expired)
        self.targets = {
            "fresh": ("alpha", {"type": "secretsmanager", "secret_id": "alpha/token"}),
            "due": ("alpha", {"type": "file", "path": str(self.due_file)}),
            "expired": ("beta", {"type": "ssm", "parameter": "/beta/token"}),
            "missing": ("beta", {"type": "file", "path": str(self.missing_file)}),
        }
        self.labels = {
            "fresh": "secretsmanager:alpha/token",
            "due": f"file:{self.due_file}",
            "expired": "ssm:/beta/token",
            "missing": f"file:{self.missing_file}",
        }

    def config(self, *states: str) -> Path:
        """A TOML config with the credentials (in order) holding these targets."""
        lines: list[str] = []
        for credential in ("alpha", "beta"):
            mine = [self.targets[s][1] for s in states if self.targets[s][0] == credential]
            if not mine:
                continue
            lines += [
                "[[credentials]]",
                f'name = "{credential}"',
                f"token_url = {json.dumps(self.stub.token_url)}",
                'client_id = "oms-client"',
                'client_secret_env = "OMS_CLIENT_SECRET"',
            ]
            for target in mine:
                lines.append("[[credentials.targets]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in target.items()]
            lines.append("")
        path = self.tmp_path / f"status-{'-'.join(states)}.toml"
        path.write_text("\n".join(lines))
        return path


@pytest.fixture
def setup(aws: Any, tmp_path: Path) -> Iterator[Setup]:
    # The token endpoint is configured but must never be called: status reads stores only.
    with KeycloakStub() as stub:
        yield Setup(aws, tmp_path, stub)
        assert stub.count() == 0


@pytest.fixture
def run_status(moto_server: Any) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rotator", "--config", str(config), "status", *args],
            cwd=REPO_ROOT,
            env=status_env(moto_server.endpoint),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    return run


def status_env(endpoint: str) -> dict[str, str]:
    return rotator_env(endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")


ALL = ("fresh", "due", "expired", "missing")


def test_json_rows_for_fresh_due_expired_and_missing_targets(
    setup: Setup, run_status: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = run_status(setup.config(*ALL), "--json")
    assert result.returncode == 1, result.stderr
    assert "MARKER" not in result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert [(r["credential"], r["target"], r["state"]) for r in rows] == [
        ("alpha", setup.labels["fresh"], "fresh"),
        ("alpha", setup.labels["due"], "due"),
        ("beta", setup.labels["expired"], "expired"),
        ("beta", setup.labels["missing"], "missing"),
    ]
    for row in rows:
        assert set(row) >= FIELDS
    fresh, due, expired, missing = rows
    for row, planted in ((fresh, setup.fresh), (due, setup.due), (expired, setup.expired)):
        assert row["issued_at"] == format_instant(planted.issued_at)
        assert row["expires_at"] == format_instant(planted.expires_at)
        assert isinstance(row["seconds_left"], int | float)
    # seconds_left is measured against the status command's own clock, a moment later.
    assert 280 < fresh["seconds_left"] <= 300
    assert fresh["is_due"] is False
    assert 30 < due["seconds_left"] <= 50
    assert due["is_due"] is True
    assert -120 < expired["seconds_left"] <= -100
    assert expired["is_due"] is True
    assert missing["issued_at"] is None
    assert missing["expires_at"] is None
    assert missing["seconds_left"] is None
    assert missing["is_due"] is True


def test_plain_table_when_piped(
    setup: Setup, run_status: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = run_status(setup.config(*ALL))
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert not ANSI.search(out)
    assert "\x1b" not in out
    assert "MARKER" not in out + result.stderr
    # the table; notes under it are indented (a Secrets Manager target's version count)
    lines = [line for line in out.splitlines() if not line.startswith("  ")]
    assert len(lines) == 5
    header = lines[0]
    assert header.split() == list(HEADER)
    # Aligned: every row's cells start where the header's columns do.
    starts = [header.index(name) for name in HEADER]
    for line, state in zip(lines[1:], ALL, strict=True):
        cells = line.split()
        assert cells[2] == state
        assert line[starts[2] :].startswith(state)
        assert line[starts[1] :].startswith(setup.labels[state])
    assert lines[1].split()[-1] == "no"
    assert [line.split()[-1] for line in lines[2:]] == ["yes", "yes", "yes"]
    assert lines[3].split()[3] == "0s"  # expired: nothing left
    assert lines[4].split()[3:] == ["-", "-", "-", "yes"]  # missing
    fresh_left = lines[1].split()[3]
    assert re.fullmatch(r"4m[45]\ds", fresh_left), fresh_left


def test_colour_on_a_terminal(setup: Setup, moto_server: Any) -> None:
    config = setup.config(*ALL)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rotator", "--config", str(config), "status"],
            cwd=REPO_ROOT,
            env=status_env(moto_server.endpoint),
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
        )
        os.close(follower)
        follower = -1
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(30) == 1
        assert proc.stderr is not None
        proc.stderr.close()
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    out = b"".join(chunks).decode()
    assert "\x1b[32m" in out  # fresh: green
    assert "\x1b[33m" in out  # due: yellow
    assert "\x1b[31m" in out  # expired, missing: red
    plain = ANSI.sub("", out).replace("\r\n", "\n")
    table = [line for line in plain.splitlines() if not line.startswith("  ")]
    assert [line.split()[2] for line in table[1:]] == list(ALL)


@pytest.mark.parametrize(
    ("states", "code"),
    [
        (("fresh", "due"), 0),
        (("fresh", "expired"), 1),
        (("fresh", "missing"), 1),
    ],
)
def test_exit_code_is_non_zero_only_when_a_target_is_missing_or_expired(
    setup: Setup,
    run_status: Callable[..., subprocess.CompletedProcess[str]],
    states: tuple[str, ...],
    code: int,
) -> None:
    result = run_status(setup.config(*states), "--json")
    assert result.returncode == code, result.stderr
    assert [row["state"] for row in json.loads(result.stdout)] == list(states)


# ------------------------------------------------------------------------------------------
# render, unit-level
# ------------------------------------------------------------------------------------------

ROWS = [
    Row("alpha", "secretsmanager:alpha/token", "fresh", "2031-05-04T12:00:00Z",
        "2031-05-04T12:05:00Z", 290.0, False),
    Row("alpha", "file:/run/alpha.json", "due", "2031-05-04T11:55:50Z",
        "2031-05-04T12:00:50Z", 50.0, True),
    Row("beta", "ssm:/beta/token", "expired", "2031-05-04T11:53:20Z",
        "2031-05-04T11:58:20Z", -100.0, True),
    Row("beta", "file:/run/beta.json", "missing", is_due=True),
]  # fmt: skip


def test_render_with_colour_has_ansi_codes_and_the_same_layout() -> None:
    coloured = render(ROWS, colour=True)
    plain = render(ROWS, colour=False)
    assert "\x1b[" not in plain
    assert "\x1b[1m" in coloured  # bold header
    assert "\x1b[32mfresh" in coloured
    assert "\x1b[33mdue" in coloured
    assert "\x1b[31mexpired" in coloured
    assert "\x1b[31mmissing" in coloured
    assert "\x1b[0m" in coloured
    stripped = [line.rstrip() for line in ANSI.sub("", coloured).splitlines()]
    assert stripped == plain.splitlines()
    assert plain.splitlines()[1].split()[3] == "4m50s"
