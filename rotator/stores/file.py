"""A local file as a token store: atomic, private, and a true compare-and-set.

Writers on one machine serialise on ``fcntl.flock`` of a sidecar
``<path>.lock`` held around read-compare-write, so a later token is never
replaced by an earlier one. The value goes to a fresh temp file
``.<name>.tmp`` in the same folder (``O_CREAT|O_EXCL|O_NOFOLLOW``), which gets
the target's owner, group and mode (default 0600) before anything is written
to it, is fsynced and renamed over the target: readers see the old or the new
value, never a torn one, and never a file with other permissions. The store
refuses to follow a symlink or to replace anything that is not a regular file.

The folder is not fsynced after the rename (it was, until issue 14: three syscalls and
0.17 ms of CPU per write). The rename is atomic on its own; a folder fsync only makes
it durable across a power loss, and after one the file holds the previous token,
whole, which the daemon reads at its next start and replaces if it is due: for a
token that lives minutes the durability bought nothing a user can see.

A read that finds the file as it was last read (same inode, change and
modification times, size: one ``lstat``) returns that reading instead of opening
and decoding the file again: each step reads a target before it decides and again
under the lock before it writes. A reading is remembered only when the file was
last changed more than ``SETTLED_NS`` before it was read, so that a replacement
within the file system's timestamp granularity (a few ms) cannot look unchanged.

The temp file's name is fixed per target and only ever used under the lock, so
a writer removes a dead writer's leftover by its name: a write never lists the
folder, and costs the same with 5 or 5,000 files beside it. ``sweep_temp_files``
removes leftovers (this name and the random names of older versions) once at
start-up, with one listing per folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from rotator.errors import (
    StoreAccessDenied,
    StoreError,
    StoreNotFound,
    StoreRejected,
    StoreUnavailable,
)
from rotator.stores.base import PutResult, Reading, decode_reading
from rotator.token import Token, encode

__all__ = ["DEFAULT_MODE", "FileStore", "sweep_temp_files"]

log = logging.getLogger(__name__)

DEFAULT_MODE = 0o600
_LOCK_MODE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TRANSIENT = frozenset({errno.EAGAIN, errno.EINTR, errno.EIO, errno.ENOSPC, errno.EDQUOT})
# A reading is remembered only of a file last changed longer ago than this (see above).
SETTLED_NS = 1_000_000_000


class FileStore:
    """Publishes the token to one file."""

    def __init__(
        self,
        path: Path,
        *,
        fmt: str = "json",
        mode: int = DEFAULT_MODE,
        uid: int | None = None,
        gid: int | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if mode & ~0o777 or mode & 0o002:
            raise ValueError(f"file mode {mode:#o}: permission bits only, never world-writable")
        self._path = Path(path)
        self._lock_path = _lock_path(self._path)
        self._tmp_path = _tmp_path(self._path)
        self._fmt = fmt
        self._mode = mode
        self._uid = uid
        self._gid = gid
        # (inode, ctime, mtime, size) of the file last read, and that reading
        self._known: tuple[tuple[int, int, int, int], Reading] | None = None
        self._now_ns = now_ns  # the wall clock file times are compared with

    def __repr__(self) -> str:
        return f"FileStore({str(self._path)!r}, fmt={self._fmt!r}, mode={self._mode:#o})"

    @property
    def name(self) -> str:
        return f"file:{self._path}"

    @property
    def format(self) -> str:
        return self._fmt

    @property
    def path(self) -> Path:
        return self._path

    def get(self) -> Reading:
        known = self._known
        if known is not None:
            try:
                st = os.lstat(self._path)
            except FileNotFoundError:
                return Reading()
            except OSError as exc:
                raise self._error(exc, "read") from exc
            if stat.S_ISREG(st.st_mode) and _identity(st) == known[0]:
                return known[1]
        return self._read()

    def _read(self) -> Reading:
        try:
            fd = os.open(self._path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return Reading()
        except OSError as exc:
            raise self._error(exc, "read") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StoreRejected(
                    f"read of {self._path} refused: not a regular file",
                    target=str(self._path),
                    action="read",
                )
            data = _read_all(fd, st.st_size)
        except OSError as exc:
            raise self._error(exc, "read") from exc
        finally:
            os.close(fd)
        version = f"{st.st_ino}:{st.st_mtime_ns}"
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            return Reading(value="", version=version, problem="file is not UTF-8 text")
        reading = decode_reading(value, self._fmt, version)
        settled = max(st.st_ctime_ns, st.st_mtime_ns) < self._now_ns() - SETTLED_NS
        self._known = (_identity(st), reading) if settled else None
        return reading

    def put(self, token: Token, basis: Reading | None = None) -> PutResult:
        # `basis` needs no special handling: under the lock the fresh read is
        # authoritative, which makes this a compare-and-set on its own.
        del basis
        value = encode(token, self._fmt)
        with self._locked():
            current = self.get()
            if current.holds_later(token):
                return current.kept()
            version = self._write(value.encode("utf-8"))
            self._known = None  # just written: the next read reads it
        return PutResult(token, is_ours=True, version=version)

    def ping(self) -> None:
        folder = self._path.parent
        if not folder.is_dir():
            raise StoreNotFound(
                f"folder {folder} of {self._path} does not exist",
                target=str(self._path),
                action="ping",
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreAccessDenied(
                f"folder {folder} of {self._path} is not writable",
                target=str(self._path),
                action="ping",
            )
        try:
            st = self._path.lstat()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error(exc, "ping") from exc
        if not stat.S_ISREG(st.st_mode):
            raise StoreRejected(
                f"{self._path} is not a regular file (symlinks are refused)",
                target=str(self._path),
                action="ping",
            )

    # -- internals ---------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            with _flocked(self._lock_path):
                yield
        except _LockError as exc:
            raise self._error(exc.cause, "lock", self._lock_path) from exc.cause

    def _write(self, data: bytes) -> str:
        tmp = self._tmp_path
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        try:
            try:
                fd = os.open(tmp, flags, DEFAULT_MODE)
            except FileExistsError:
                # Under the lock, an existing temp file is a dead writer's: remove it by
                # name and create ours (O_EXCL: never a file someone else made).
                tmp.unlink()
                fd = os.open(tmp, flags, DEFAULT_MODE)
        except OSError as exc:
            raise self._error(exc, "write", tmp) from exc
        try:
            try:
                self._chown(fd, tmp)
                os.fchmod(fd, self._mode)  # whatever the umask says, before any byte
                _write_all(fd, data)
                os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            tmp.replace(self._path)  # atomic rename, like os.replace
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._error(exc, "write") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        # rename keeps the inode and mtime, so this is what get() reports next.
        return f"{st.st_ino}:{st.st_mtime_ns}"

    def _chown(self, fd: int, tmp: Path) -> None:
        if self._uid is None and self._gid is None:
            return
        uid = -1 if self._uid is None else self._uid
        gid = -1 if self._gid is None else self._gid
        try:
            os.fchown(fd, uid, gid)
        except PermissionError as exc:
            raise StoreAccessDenied(
                f"chown of {tmp} to uid {uid} gid {gid} (-1: unchanged) denied: only root "
                "sets another owner, and a group must be one rotator's user belongs to",
                target=str(self._path),
                action="write",
            ) from exc

    def _error(self, exc: OSError, action: str, path: Path | None = None) -> StoreError:
        where = path or self._path
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        code = errno.errorcode.get(exc.errno or 0, "")
        detail = f"{reason} ({code})" if code else reason
        target = str(self._path)
        if exc.errno in (errno.EACCES, errno.EPERM):
            return StoreAccessDenied(
                f"{action} of {where} denied: {detail}", target=target, action=action
            )
        if exc.errno == errno.ELOOP:
            return StoreRejected(
                f"{action} of {where} refused: it is a symlink, which is not followed",
                target=target,
                action=action,
            )
        if exc.errno == errno.ENOENT:
            return StoreNotFound(
                f"{action} of {where} failed: folder {where.parent} does not exist",
                target=target,
                action=action,
            )
        if exc.errno in _TRANSIENT:
            return StoreUnavailable(
                f"{action} of {where} failed: {detail}", target=target, action=action
            )
        return StoreRejected(f"{action} of {where} failed: {detail}", target=target, action=action)


class _LockError(Exception):
    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


@contextlib.contextmanager
def _flocked(lock_path: Path) -> Iterator[None]:
    flags = os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC
    try:
        fd = os.open(lock_path, flags, _LOCK_MODE)
    except OSError as exc:
        raise _LockError(exc) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


_HEX = frozenset("0123456789abcdef")


def _leftover_of(name: str, targets: set[str]) -> str | None:
    """The target a temp file name belongs to: ``.<target>.tmp``, or the
    ``.<target>.<16 hex>.tmp`` of older versions; None for anything else."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    inner = name[1:-4]
    if inner in targets:
        return inner
    target, dot, suffix = inner[:-17], inner[-17:-16], inner[-16:]
    if dot == "." and len(suffix) == 16 and _HEX.issuperset(suffix) and target in targets:
        return target
    return None


def sweep_temp_files(paths: Iterable[Path]) -> int:
    """Remove the temp files that dead writers left beside these targets: one listing
    per folder, each removal under its target's lock (a live writer is waited for,
    never robbed of its temp file). Returns how many were removed; never raises."""
    by_folder: dict[Path, set[str]] = {}
    for path in paths:
        by_folder.setdefault(Path(path).parent, set()).add(Path(path).name)
    removed = 0
    for folder, targets in by_folder.items():
        try:
            with os.scandir(folder) as entries:
                found = [
                    (entry.path, owner)
                    for entry in entries
                    if (owner := _leftover_of(entry.name, targets)) is not None
                    and entry.is_file(follow_symlinks=False)
                ]
        except OSError:
            continue  # a missing folder is reported by the store itself
        for leftover, owner in found:
            with contextlib.suppress(OSError, _LockError), _flocked(_lock_path(folder / owner)):
                Path(leftover).unlink()
                removed += 1
                log.info("removed temp file %s left by a writer that died", leftover)
    return removed


def _read_all(fd: int, size: int) -> bytes:
    """The whole file: one read when it returns exactly the size fstat gave although one
    byte more was asked for (the end of the file); read on to the end otherwise (it grew,
    shrank, or the file system answered short)."""
    first = os.read(fd, size + 1)
    if len(first) == size:
        return first
    chunks = [first]
    while chunk := os.read(fd, 65_536):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes whenever a file is replaced or rewritten (see ``SETTLED_NS``)."""
    return (st.st_ino, st.st_ctime_ns, st.st_mtime_ns, st.st_size)
