"""Permissions of a `file` target: `mode`, `owner` and `group`, parsed at the config boundary.

A mode is an octal string (``"0640"``, ``"640"``, ``"0o640"``) or a TOML integer (write it
as the octal literal ``0o640``: a decimal ``640`` is ``0o1200`` and is refused). Only
read/write permission bits are accepted; the owner must keep read access (rotator reads
the file back for its compare-and-set) and the file is never world-writable.

An owner or group is a name (looked up once, at load time) or a numeric id.
"""

from __future__ import annotations

import grp
import pwd
import re
from collections.abc import Callable

from rotator.errors import ConfigError

__all__ = ["parse_group", "parse_mode", "parse_owner"]

_OCTAL = re.compile(r"(?:0o|0)?([0-7]{1,4})")
_ID = re.compile(r"[0-9]{1,10}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")
_ALLOWED_BITS = 0o666
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to chown


def parse_mode(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f'{where} must be an octal string such as "0640": {value!r}')
    if isinstance(value, str):
        match = _OCTAL.fullmatch(value.strip())
        if match is None:
            raise ConfigError(f'{where} must be an octal mode such as "0640": {value!r}')
        mode = int(match.group(1), 8)
    else:
        mode = value
    shown = f"{mode:#o}" if 0 <= mode <= 0o7777 else repr(value)
    if not 0 <= mode <= 0o777:
        hint = (
            ' (a TOML integer is decimal: write the mode as a string, "0640", or as 0o640)'
            if isinstance(value, int)
            else ""
        )
        raise ConfigError(f"{where} {shown}: permission bits only (0 to 0777){hint}")
    if mode & 0o002:
        raise ConfigError(f"{where} {shown} is world-writable: anyone could replace the token")
    if mode & ~_ALLOWED_BITS:
        raise ConfigError(f"{where} {shown}: a token file takes read/write bits, no execute bit")
    if not mode & 0o400:
        raise ConfigError(
            f"{where} {shown}: the owner must keep read access (rotator reads the file back)"
        )
    return mode


def parse_owner(value: object, where: str) -> int:
    return _resolve(value, where, "user", lambda name: pwd.getpwnam(name).pw_uid)


def parse_group(value: object, where: str) -> int:
    return _resolve(value, where, "group", lambda name: grp.getgrnam(name).gr_gid)


def _resolve(value: object, where: str, kind: str, lookup: Callable[[str], int]) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{where} must be a {kind} name or a numeric id: {value!r}")
    if isinstance(value, int) or _ID.fullmatch(value):
        number = int(value)
        if not 0 <= number <= _MAX_ID:
            raise ConfigError(f"{where}: {kind} id out of range: {value!r}")
        return number
    if not _NAME.fullmatch(value):
        raise ConfigError(f"{where} must be a {kind} name or a numeric id: {value!r}")
    try:
        return lookup(value)
    except KeyError as exc:
        raise ConfigError(f"{where}: no such {kind} on this machine: {value!r}") from exc
