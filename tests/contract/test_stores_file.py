"""What only the file and memory stores do: file permissions, symlinks, locking and
racing writers (threads and processes); the memory store's seams."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.errors import (
    StoreError,
    StoreNotFound,
    StoreRejected,
    StoreUnavailable,
)
from rotator.stores import FileStore, MemoryStore
from rotator.token import encode
from tests.contract.test_store_contract import BASE, make_token

REPO = Path(__file__).resolve().parents[2]


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
