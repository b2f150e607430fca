"""Checks of single values. Each takes the name the user knows the value by (a TOML
key path or a ROTATOR_* variable) and says it, with the bad value, in its error:
never a secret (no secret is ever inline) and never user info from a URL."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from rotator.errors import ConfigError

C = TypeVar("C", bound=str)


class Where:
    """Where a key sits, as errors name it: ``path.key`` in a TOML file, or the
    ROTATOR_* variable that gave the key (``names``, in environment mode). A plain
    class: a dataclass costs start-up time on every cron run for nothing here."""

    __slots__ = ("names", "path")

    def __init__(self, path: str, names: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.names: Mapping[str, str] = names or {}

    def __call__(self, key: str) -> str:
        return self.names.get(key) or (f"{self.path}.{key}" if self.path else key)

    def setting(self, key: str, value: str) -> str:
        """``key = "value"`` as the user wrote it (``ROTATOR_KEY=value`` in the environment)."""
        var = self.names.get(key)
        return f"{var}={value}" if var else f'{self(key)} = "{value}"'

    def at(self, path: str, names: Mapping[str, str] | None = None) -> Where:
        return Where(path, self.names if names is None else names)


def check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        names = ", ".join(prefix + k for k in unknown)
        raise ConfigError(
            f"unknown configuration key(s): {names} (allowed: {', '.join(sorted(allowed))})"
        )


def check_unique(values: list[str], where: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{where}: duplicate {value!r}")
        seen.add(value)


def string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string: {value!r}")
    return value.strip()


def opt_string(value: Any, where: str) -> str | None:
    return None if value is None else string(value, where)


def name(value: Any, where: str) -> str:
    text = string(value, where)
    if not all(c.isalnum() or c in "-_." for c in text):
        raise ConfigError(f"{where} may hold only letters, digits, '-', '_' and '.': {text!r}")
    return text


def choice(value: Any, choices: tuple[C, ...], where: str) -> C:
    for option in choices:
        if value == option:
            return option
    raise ConfigError(f"{where} must be one of {', '.join(choices)}: {value!r}")


def seconds(value: Any, where: str, *, zero_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number: {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok):
        raise ConfigError(f"{where} must be a positive number: {value!r}")
    return number


def opt_count(value: Any, where: str) -> int | None:
    """A positive whole number (TOML integer or its decimal digits in the environment)."""
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} must be a whole number >= 1: {value!r}")
    return value


def port(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} must be a port number: {value!r}") from exc
    if isinstance(value, bool) or not 0 <= number <= 65535:
        raise ConfigError(f"{where} must be a port number (0-65535): {value!r}")
    return number


def address(value: Any, where: str) -> str:
    text = string(value, where)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text != "localhost":
        try:
            ipaddress.ip_address(text)
        except ValueError as exc:
            raise ConfigError(
                f"{where} must be an IP address to bind to (or localhost): {text!r}"
            ) from exc
    return text


def workers(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} must be a whole number of threads: {value!r}") from exc
    if isinstance(value, bool) or not 1 <= number <= 256:
        raise ConfigError(f"{where} must be between 1 and 256: {value!r}")
    return number


def ca_bundle(value: Any, where: str) -> str | None:
    path = opt_string(value, where)
    if path is not None:
        check_ca_bundle(path, where)
    return path


def check_ca_bundle(path: str, where: str) -> None:
    """A CA bundle must be a readable file or directory: checked when the configuration
    is loaded, so a bad one is a configuration error (exit 2), not a failure per call."""
    bundle = Path(path)
    try:
        if bundle.is_dir():
            next(bundle.iterdir(), None)
        else:
            with bundle.open("rb") as handle:
                handle.read(1)
    except FileNotFoundError as exc:
        raise ConfigError(f"{where}: CA bundle not found: {path!r}") from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{where}: cannot read CA bundle {path!r}: {reason}") from exc


def is_loopback(host: str | None) -> bool:
    """Only `localhost`, 127.0.0.0/8 and ::1: a `*.localhost` name may resolve through DNS."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# Characters that parsers disagree on (urlsplit vs urllib3/requests) or that no
# well-formed URL holds: refused outright instead of guessing which host is meant.
_AMBIGUOUS_URL_CHARS = frozenset('\\ \t\r\n"<>^`{|}')


def connect_host(url: str) -> str | None:
    """The host the HTTP library (urllib3) will connect to, lower-cased. Checked when
    the HTTP client is built (urllib3 is loaded then anyway), not at config load."""
    from urllib3.util import parse_url

    host = parse_url(url).host
    return None if host is None else host.strip("[]").lower()


# URLs already accepted: a fleet's credentials repeat one token URL, and its check
# (every character, then urlsplit and the loopback test) cost ~0.1 ms each time.
_ACCEPTED_URLS: set[str] = set()


def url(value: Any, where: str) -> str:
    text = string(value, where)
    if text in _ACCEPTED_URLS:
        return text
    shown = "" if "@" in text else f": {text!r}"  # user info may hold a password
    invalid = ConfigError(f"{where} is not a valid URL{shown}")
    if not text.isascii() or any(c in _AMBIGUOUS_URL_CHARS or not c.isprintable() for c in text):
        raise invalid
    try:
        parts = urlsplit(text)
        has_userinfo = "@" in parts.netloc
        hostname = parts.hostname
    except ValueError:  # its message quotes the URL, user info (a password) included
        raise invalid from None
    # Before any message that echoes the URL: user info may hold a password.
    if has_userinfo:
        raise ConfigError(f"{where} must not embed credentials in the URL")
    if parts.scheme not in ("https", "http") or not hostname:
        raise ConfigError(f"{where} must be an https:// URL: {text!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"{where}: plain http:// is refused except to a loopback address; use https: {text!r}"
        )
    if len(_ACCEPTED_URLS) < 4096:  # bounded: reloads may bring new ones
        _ACCEPTED_URLS.add(text)
    return text
