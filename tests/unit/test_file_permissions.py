"""A `file` target's mode, owner and group: parsed with clear errors, applied before the
rename (never visible otherwise), and never world-writable."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.app import AwsClients, build_store
from rotator.config import from_env, from_mapping
from rotator.errors import ConfigError, StoreAccessDenied
from rotator.filemode import parse_group, parse_mode, parse_owner
from rotator.stores.file import FileStore
from rotator.token import Token

NOBODY = 65534
IS_ROOT = os.geteuid() == 0


def make_token(seconds: int = 300, *, issued: int = 0) -> Token:
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC) + timedelta(seconds=issued)
    return Token(
        access_token=f"tok-{seconds}-{issued}",
        token_type="Bearer",
        issued_at=at,
        expires_at=at + timedelta(seconds=seconds),
    )


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def file_config(**target: object) -> dict[str, object]:
    return {
        "credentials": [
            {
                "name": "oms",
                "token_url": "https://kc.example/token",
                "client_id": "oms",
                "client_secret_env": "S",
                "targets": [{"type": "file", "path": "/run/rotator/t.json", **target}],
            }
        ]
    }


# -- parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mode"),
    [("0640", 0o640), ("640", 0o640), ("0o440", 0o440), ("0600", 0o600), (0o644, 0o644)],
)
def test_modes_accepted(value: object, mode: int) -> None:
    assert parse_mode(value, "m") == mode


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("0666", "world-writable"),
        ("0602", "world-writable"),
        (0o777, "world-writable"),
        ("0750", "no execute bit"),
        ("04600", "permission bits only"),
        ("0040", "owner must keep read"),
        ("0000", "owner must keep read"),
        (640, "TOML integer is decimal"),
        (-1, "permission bits only"),
        ("rw-r-----", "octal mode"),
        ("0x1a4", "octal mode"),
        ("0689", "octal mode"),
        ("", "octal mode"),
        (True, "octal string"),
        (6.4, "octal string"),
    ],
)
def test_bad_modes_are_refused_with_a_clear_line(value: object, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mode(value, "targets[0].mode")
    message = str(info.value)
    assert words in message and message.startswith("targets[0].mode")
    assert "\n" not in message


def test_no_accepted_mode_is_world_writable() -> None:
    for mode in range(0o1000):
        try:
            parsed = parse_mode(f"{mode:04o}", "m")
        except ConfigError:
            continue
        assert parsed == mode and not parsed & 0o002 and not parsed & 0o111


def test_owner_and_group_by_name_or_id() -> None:
    assert parse_owner("root", "o") == 0
    assert parse_owner("1234", "o") == 1234
    assert parse_owner(1234, "o") == 1234
    assert parse_group("0", "g") == 0
    with pytest.raises(ConfigError, match=r"no such user on this machine: 'no-such-user-x'"):
        parse_owner("no-such-user-x", "t.owner")
    with pytest.raises(ConfigError, match="no such group"):
        parse_group("no-such-group-x", "t.group")
    for bad in ("", "a b", "-1", -1, 2**32, "x" * 40, 1.5):
        with pytest.raises(ConfigError):
            parse_owner(bad, "t.owner")


def test_toml_keys_reach_the_target() -> None:
    settings = from_mapping(file_config(mode="0640", owner="1234", group="root"))
    target = settings.credentials[0].targets[0]
    assert (target.mode, target.owner, target.group) == (0o640, 1234, 0)
    default = from_mapping(file_config()).credentials[0].targets[0]
    assert (default.mode, default.owner, default.group) == (None, None, None)
    store = build_store(target, AwsClients())
    assert isinstance(store, FileStore) and "mode=0o640" in repr(store)


def test_toml_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"credentials\[oms\]\.targets\[0\]\.mode 0o666"):
        from_mapping(file_config(mode="0666"))
    with pytest.raises(ConfigError, match=r"targets\[0\]\.owner: no such user"):
        from_mapping(file_config(owner="no-such-user-x"))
    ssm = file_config()
    ssm["credentials"][0]["targets"] = [{"type": "ssm", "parameter": "/p", "mode": "0640"}]  # type: ignore[index]
    with pytest.raises(ConfigError, match="mode"):
        from_mapping(ssm)


def test_environment_variables() -> None:
    env = {
        "ROTATOR_TOKEN_URL": "https://kc.example/token",
        "ROTATOR_CLIENT_ID": "oms",
        "ROTATOR_CLIENT_SECRET": "s",
        "ROTATOR_FILE_PATH": "/run/rotator/t.json",
        "ROTATOR_FILE_MODE": "0640",
        "ROTATOR_FILE_GROUP": "0",
    }
    target = from_env(env).credentials[0].targets[0]
    assert (target.mode, target.owner, target.group) == (0o640, None, 0)
    with pytest.raises(ConfigError, match="ROTATOR_FILE_MODE 0o646 is world-writable"):
        from_env({**env, "ROTATOR_FILE_MODE": "646"})
    without_file = {k: v for k, v in env.items() if k != "ROTATOR_FILE_PATH"}
    without_file["ROTATOR_SSM_PARAMETER"] = "/p"
    with pytest.raises(ConfigError, match="set without ROTATOR_FILE_PATH"):
        from_env(without_file)


# -- writing -----------------------------------------------------------------


def test_mode_is_applied_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    old = os.umask(0o077)
    try:
        FileStore(path, mode=0o640).put(make_token())
    finally:
        os.umask(old)
    assert mode_of(path) == 0o640
    FileStore(path).put(make_token(issued=5))  # default again
    assert mode_of(path) == 0o600


def test_a_world_writable_file_is_replaced_by_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    path.write_text("planted")
    path.chmod(0o666)
    FileStore(path, mode=0o644).put(make_token())
    assert mode_of(path) == 0o644
    assert json.loads(path.read_text())["access_token"] == "tok-300-0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token.json", "token.json.lock"]


def test_store_refuses_a_world_writable_mode(tmp_path: Path) -> None:
    for mode in (0o666, 0o602, 0o4600):
        with pytest.raises(ValueError, match="never world-writable"):
            FileStore(tmp_path / "t.json", mode=mode)


# The temp file, at the moment it is renamed over the target, already has the final
# mode and owner: a reader never sees the token with other permissions.
_RENAME_PROBE = """
import json, os, stat, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from rotator.stores.file import FileStore
from rotator.token import Token

seen = []
def audit(event, args):
    if event == "os.rename":
        st = os.lstat(args[0])
        seen.append([stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size])
    if event == "os.scandir" or event == "os.listdir":
        seen.append(["listed", str(args[0])])
sys.addaudithook(audit)
path = Path(sys.argv[1])
mode, uid, gid = int(sys.argv[2], 8), json.loads(sys.argv[3]), json.loads(sys.argv[4])
store = FileStore(path, mode=mode, uid=uid, gid=gid)
at = datetime(2026, 11, 28, tzinfo=UTC)
for i in range(3):
    store.put(Token(f"tok{i}", "Bearer", at + timedelta(seconds=i),
                    at + timedelta(seconds=300 + i)))
print(json.dumps(seen))
"""


def _probe(path: Path, mode: str, uid: int | None, gid: int | None) -> list[list[object]]:
    out = subprocess.run(
        [sys.executable, "-c", _RENAME_PROBE, str(path), mode, json.dumps(uid), json.dumps(gid)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: list[list[object]] = json.loads(out.stdout)
    return result


def test_mode_is_set_before_the_rename_and_no_write_lists_the_folder(tmp_path: Path) -> None:
    for i in range(50):  # neighbours: a write must not look at them
        (tmp_path / f"other-{i}.json").write_text("{}")
    path = tmp_path / "token.json"
    seen = _probe(path, "0640", None, None)
    assert len(seen) == 3, seen  # three renames, no listing
    for mode, _uid, _gid, size in seen:
        assert mode == 0o640 and isinstance(size, int) and size > 0
    assert mode_of(path) == 0o640


@pytest.mark.skipif(not IS_ROOT, reason="giving a file away needs root (CAP_CHOWN)")
def test_owner_and_group_are_set_before_the_rename(tmp_path: Path) -> None:
    path = tmp_path / "token.json"
    seen = _probe(path, "0440", NOBODY, NOBODY)
    assert [s[:3] for s in seen] == [[0o440, NOBODY, NOBODY]] * 3
    st = path.lstat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o440)
    # rotator (root) still reads it back for the compare-and-set: a later token wins,
    # an earlier one is kept out.
    store = FileStore(path, mode=0o440, uid=NOBODY, gid=NOBODY)
    assert store.get().token is not None
    kept = store.put(make_token(issued=-(12 * 3600 + 60)))  # 1 min before the probe's
    assert not kept.is_ours


def test_a_refused_chown_fails_the_write_and_keeps_the_published_file() -> None:
    with tempfile.TemporaryDirectory(prefix="rotator-chown-", dir="/tmp") as name:
        folder = Path(name)
        folder.chmod(0o755)  # the unprivileged child must reach it
        _refused_chown(folder)


def _refused_chown(folder: Path) -> None:
    path = folder / "token.json"
    good = make_token()
    FileStore(path).put(good)
    before = path.read_bytes()
    if IS_ROOT:  # drop root in a child, as a real deployment without CAP_CHOWN would be
        folder.chmod(0o777)
        os.chown(path, NOBODY, NOBODY)
        os.chown(folder / "token.json.lock", NOBODY, NOBODY)
        code = _as_nobody(lambda: FileStore(path, uid=0).put(make_token(issued=9)))
        assert code == 7, code
    else:
        with pytest.raises(StoreAccessDenied, match="chown of .* to uid 0"):
            FileStore(path, uid=0).put(make_token(issued=9))
    assert path.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["token.json", "token.json.lock"]


def _as_nobody(func: object) -> int:
    """Run `func` in a forked child without root: 7 = StoreAccessDenied naming the chown."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            assert callable(func)
            func()
            code = 3
        except StoreAccessDenied as exc:
            code = 7 if "chown of" in str(exc) and "uid 0" in str(exc) else 5
        except BaseException:
            code = 9
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
