"""A local file as a token store: atomic, private, and a true compare-and-set.

Writers on one machine serialise on ``fcntl.flock`` of a sidecar
``<path>.lock`` held around read-compare-write, so a later token is never
replaced by an earlier one. The value goes to a fresh 0600 temp file in the
same folder (``O_CREAT|O_EXCL|O_NOFOLLOW``), is fsynced and renamed over the
target, then the folder is fsynced: readers see the old or the new value,
never a torn one. The store refuses to follow a symlink or to replace anything
that is not a regular file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from rotator.errors import (
    StoreAccessDenied,
    StoreError,
    StoreNotFound,
    StoreRejected,
    StoreUnavailable,
)
from rotator.stores.base import PutResult, Reading
from rotator.token import Token, decode, encode

__all__ = ["FileStore"]

log = logging.getLogger(__name__)

_MODE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TRANSIENT = frozenset({errno.EAGAIN, errno.EINTR, errno.EIO, errno.ENOSPC, errno.EDQUOT})


class FileStore:
    """Publishes the token to one file."""

    def __init__(self, path: Path, *, fmt: str = "json") -> None:
        self._path = Path(path)
        self._lock_path = self._path.with_name(self._path.name + ".lock")
        self._fmt = fmt

    def __repr__(self) -> str:
        return f"FileStore({str(self._path)!r}, fmt={self._fmt!r})"

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
            data = _read_all(fd)
        except OSError as exc:
            raise self._error(exc, "read") from exc
        finally:
            os.close(fd)
        version = f"{st.st_ino}:{st.st_mtime_ns}"
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            return Reading(value="", version=version, problem="file is not UTF-8 text")
        try:
            token = decode(value, self._fmt)
        except ValueError as exc:
            return Reading(value=value, version=version, problem=f"{exc} ({self._fmt} format)")
        return Reading(value=value, token=token, version=version)

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
        flags = os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC
        try:
            fd = os.open(self._lock_path, flags, _MODE)
        except OSError as exc:
            raise self._error(exc, "lock", self._lock_path) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _sweep_temp_files(self) -> None:
        """Remove temp files of writers that died before their rename. Called with
        the lock held, so no live writer has one open."""
        prefix, suffix = f".{self._path.name}.", ".tmp"
        with contextlib.suppress(OSError), os.scandir(self._path.parent) as entries:
            for entry in entries:
                name = entry.name
                if (
                    name.startswith(prefix)
                    and name.endswith(suffix)
                    and len(name) == len(prefix) + 16 + len(suffix)
                    and entry.is_file(follow_symlinks=False)
                ):
                    with contextlib.suppress(OSError):
                        Path(entry.path).unlink()

    def _write(self, data: bytes) -> str:
        folder = self._path.parent
        self._sweep_temp_files()
        tmp = folder / f".{self._path.name}.{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        try:
            fd = os.open(tmp, flags, _MODE)
        except OSError as exc:
            raise self._error(exc, "write", tmp) from exc
        try:
            try:
                os.fchmod(fd, _MODE)  # whatever the umask says
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
        _fsync_dir(folder)
        # rename keeps the inode and mtime, so this is what get() reports next.
        return f"{st.st_ino}:{st.st_mtime_ns}"

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


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65_536):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    except OSError as exc:
        log.warning("cannot open folder %s to fsync it: %s", folder, exc.strerror)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.warning("fsync of folder %s failed: %s", folder, exc.strerror)
    finally:
        os.close(fd)
