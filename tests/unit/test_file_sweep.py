"""Leftover temp files: removed once at start-up (one listing per folder) and, for the
file being written, by name on every write; a write never lists the folder."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rotator.app import build
from rotator.commands import sweep_file_targets
from rotator.config import from_mapping
from rotator.stores.file import FileStore, sweep_temp_files
from rotator.token import Token

LEGACY = "0123456789abcdef"  # the random suffix older versions used


def token(offset: int = 0) -> Token:
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC) + timedelta(seconds=offset)
    return Token(f"tok-{offset}", "Bearer", at, at + timedelta(seconds=300))


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_startup_sweep_removes_only_leftovers_of_the_configured_targets(tmp_path: Path) -> None:
    keep = [
        ".other.json.tmp",  # a file rotator does not write
        f".other.json.{LEGACY}.tmp",
        ".t.json.notes.tmp",  # not a 16-hex suffix
        f".t.json.{LEGACY.upper()}.tmp",
        "t.json.tmp",  # no leading dot
        "t.json",
    ]
    for name in keep:
        (tmp_path / name).write_text("x")
    (tmp_path / ".u.json.tmp").mkdir()  # not a regular file: left alone
    (tmp_path / f".t.json.{LEGACY}.tmp").write_text("half a tok")
    (tmp_path / ".t.json.tmp").write_text("")
    (tmp_path / f".u.json.{'f' * 16}.tmp").write_text("x")
    removed = sweep_temp_files([tmp_path / "t.json", tmp_path / "u.json"])
    assert removed == 3
    assert names(tmp_path) == sorted([*keep, ".u.json.tmp", "t.json.lock", "u.json.lock"])


def test_a_write_removes_a_dead_writers_temp_file_by_name(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    (tmp_path / ".t.json.tmp").write_text('{"access_token": "half')
    FileStore(path).put(token())
    assert names(tmp_path) == ["t.json", "t.json.lock"]
    assert json.loads(path.read_text())["access_token"] == "tok-0"


def test_the_once_and_run_commands_sweep_every_file_target(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for folder, name in ((a, "one.json"), (a, "two.json"), (b, "three.json")):
        (folder / f".{name}.tmp").write_text("")
    settings = from_mapping(
        {
            "credentials": [
                {
                    "name": f"c{i}",
                    "token_url": "https://kc.example/token",
                    "client_id": "c",
                    "client_secret_env": "S",
                    "targets": [{"type": "file", "path": str(path)}],
                }
                for i, path in enumerate([a / "one.json", a / "two.json", b / "three.json"])
            ]
        }
    )
    sweep_file_targets(build(settings))
    assert names(a) == ["one.json.lock", "two.json.lock"]
    assert names(b) == ["three.json.lock"]


_COUNT_LISTINGS = """
import json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from rotator.stores.file import FileStore, sweep_temp_files
from rotator.token import Token

listed = []
def audit(event, args):
    if event in ("os.scandir", "os.listdir"):
        listed.append(str(args[0]))
sys.addaudithook(audit)
folder = Path(sys.argv[1])
paths = [folder / f"t{i}.json" for i in range(20)]
sweep_temp_files(paths)
at_startup = len(listed)
at = datetime(2026, 11, 28, tzinfo=UTC)
for i, path in enumerate(paths):
    FileStore(path).put(Token(f"tok{i}", "Bearer", at, at + timedelta(seconds=300)))
print(json.dumps({"startup": at_startup, "writes": len(listed) - at_startup}))
"""


def test_one_listing_at_startup_and_none_per_write(tmp_path: Path) -> None:
    for i in range(200):
        (tmp_path / f"neighbour-{i}.json").write_text("{}")
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_LISTINGS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == {"startup": 1, "writes": 0}
