"""Frozen settings from a TOML file or, for one credential, from the environment.

Errors name the key and the bad value (never a secret). Secrets are never
inline: the config names where the client secret comes from.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rotator.errors import ConfigError

AUTH_METHODS = ("client_secret_post", "client_secret_basic")
TARGET_TYPES = ("secretsmanager", "ssm", "file")
SECRET_SOURCES = (
    "client_secret_env",
    "client_secret_file",
    "client_secret_secretsmanager",
    "client_secret_ssm",
)
# Environment variables of the container convention (one credential, no file).
ENV_KEYS = (
    "ROTATOR_CONFIG",
    "ROTATOR_TOKEN_URL",
    "ROTATOR_CLIENT_ID",
    "ROTATOR_CLIENT_SECRET",
    "ROTATOR_CLIENT_SECRET_FILE",
    "ROTATOR_SECRETSMANAGER_SECRET_ID",
    "ROTATOR_SECRETSMANAGER_CREATE",
    "ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY",
    "ROTATOR_SECRETSMANAGER_WRITES_PER_SECOND",  # rotator.pacing
    "ROTATOR_SSM_WRITES_PER_SECOND",
    "ROTATOR_SSM_READS_PER_SECOND",
    "ROTATOR_SSM_PARAMETER",
    "ROTATOR_FILE_PATH",
    "ROTATOR_KMS_KEY_ID",
    "ROTATOR_FORMAT",
    "ROTATOR_SCOPE",
    "ROTATOR_AUTH_METHOD",
    "ROTATOR_VERIFY_URL",
    "ROTATOR_CREDENTIAL_NAME",
    "ROTATOR_METRICS_PORT",
    "ROTATOR_LOG_LEVEL",
    "ROTATOR_LOG_FORMAT",
    "ROTATOR_ONCE_INTERVAL",
)


@dataclass(frozen=True)
class SecretSource:
    """Where the client secret is read from: kind is one of SECRET_SOURCES."""

    kind: str
    ref: str
    region: str | None = None


@dataclass(frozen=True)
class Target:
    type: str
    ref: str  # secret id, parameter name or file path
    format: str = "json"
    kms_key_id: str | None = None
    create: bool = False
    region: str | None = None
    # Secrets Manager only: refuse a cadence that creates more versions a day (None: 90)
    max_writes_per_day: int | None = None

    @property
    def label(self) -> str:
        return f"{self.type}:{self.ref}"


@dataclass(frozen=True)
class Refresh:
    """When to refresh and how hard to retry; plain seconds at this boundary."""

    ratio: float = 0.75  # refresh at this fraction of the token's lifetime
    jitter_ratio: float = 0.05  # minus up to this fraction of the lifetime, at random
    safety_margin_seconds: float = 30.0  # never later than this before expiry
    max_retry_wait_seconds: float = 30.0  # cap between attempts (and <= lifetime / 4)
    retry_budget_seconds: float = 60.0  # how long `once` keeps retrying
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class Credential:
    name: str
    token_url: str
    client_id: str
    secret_source: SecretSource | None
    targets: tuple[Target, ...]
    scope: str | None = None
    auth_method: str = "client_secret_post"
    verify_url: str | None = None
    ca_bundle: str | None = None
    refresh: Refresh = field(default_factory=Refresh)


@dataclass(frozen=True)
class Settings:
    credentials: tuple[Credential, ...]
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"  # noqa: S104 - a container's probe port must be reachable
    readiness_margin_seconds: float = 30.0
    source: str = "environment"

    def credential(self, name: str | None) -> Credential:
        if name is None:
            return self.credentials[0]
        for cred in self.credentials:
            if cred.name == name:
                return cred
        known = ", ".join(c.name for c in self.credentials)
        msg = f"no credential named {name!r} (configured: {known})"
        raise ConfigError(msg)


# ---------------------------------------------------------------- loading


def load(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    *,
    require_client: bool = True,
) -> Settings:
    """Load settings: the TOML file at `path` (or $ROTATOR_CONFIG), else the environment.

    ``require_client=False`` lets a consumer (``rotator get``) configure only
    the targets it reads.
    """
    env = os.environ if env is None else env
    if path is None and env.get("ROTATOR_CONFIG"):
        path = env["ROTATOR_CONFIG"]
    if path is not None:
        return _from_file(Path(path), require_client=require_client)
    return from_env(env, require_client=require_client)


def _from_file(path: Path, *, require_client: bool) -> Settings:
    import tomllib  # only this path needs it

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {str(path)!r}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    return from_mapping(data, source=str(path), require_client=require_client)


def from_mapping(
    data: Mapping[str, Any], *, source: str = "config", require_client: bool = True
) -> Settings:
    _check_keys(
        data, {"credentials", "metrics_port", "metrics_host", "readiness_margin_seconds"}, ""
    )
    creds_raw = data.get("credentials")
    if not isinstance(creds_raw, list) or not creds_raw:
        raise ConfigError(f"{source}: at least one [[credentials]] table is required")
    credentials = tuple(
        _credential(item, f"credentials[{i}]", require_client=require_client)
        for i, item in enumerate(creds_raw)
    )
    _check_unique([c.name for c in credentials], "credentials[].name")
    port = data.get("metrics_port")
    return Settings(
        credentials=credentials,
        metrics_port=None if port is None else _port(port, "metrics_port"),
        metrics_host=_str(data.get("metrics_host", "0.0.0.0"), "metrics_host"),  # noqa: S104
        readiness_margin_seconds=_seconds(
            data.get("readiness_margin_seconds", 30.0), "readiness_margin_seconds", zero_ok=True
        ),
        source=source,
    )


_CRED_KEYS = {
    "name",
    "token_url",
    "client_id",
    *SECRET_SOURCES,
    "client_secret_region",
    "scope",
    "auth_method",
    "verify_url",
    "ca_bundle",
    "refresh",
    "targets",
}
_REFRESH_KEYS = set(Refresh.__dataclass_fields__)


def _credential(item: Any, where: str, *, require_client: bool) -> Credential:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where} must be a table")
    if "client_secret" in item:
        raise ConfigError(
            f"{where}.client_secret: secrets are never inline; use one of "
            + ", ".join(SECRET_SOURCES)
        )
    _check_keys(item, _CRED_KEYS, where)
    name = _name(item.get("name"), f"{where}.name")
    where = f"credentials[{name}]"
    token_url = item.get("token_url")
    client_id = item.get("client_id")
    sources = [k for k in SECRET_SOURCES if k in item]
    if require_client or token_url is not None:
        token_url = _url(token_url, f"{where}.token_url")
    if require_client or client_id is not None:
        client_id = _str(client_id, f"{where}.client_id")
    if len(sources) > 1:
        raise ConfigError(f"{where}: give exactly one of {', '.join(SECRET_SOURCES)}, not several")
    secret_source = None
    if sources:
        kind = sources[0]
        secret_source = SecretSource(
            kind=kind,
            ref=_str(item[kind], f"{where}.{kind}"),
            region=_opt_str(item.get("client_secret_region"), f"{where}.client_secret_region"),
        )
    elif require_client:
        raise ConfigError(f"{where}: the client secret needs one of {', '.join(SECRET_SOURCES)}")
    auth_method = _choice(
        item.get("auth_method", "client_secret_post"), AUTH_METHODS, f"{where}.auth_method"
    )
    verify_url = item.get("verify_url")
    refresh_raw = item.get("refresh", {})
    if not isinstance(refresh_raw, Mapping):
        raise ConfigError(f"{where}.refresh must be a table")
    targets_raw = item.get("targets")
    if not isinstance(targets_raw, list) or not targets_raw:
        raise ConfigError(f"{where}: at least one [[credentials.targets]] table is required")
    targets = tuple(_target(t, f"{where}.targets[{i}]") for i, t in enumerate(targets_raw))
    _check_unique([t.label for t in targets], f"{where}.targets")
    return Credential(
        name=name,
        token_url=token_url or "",
        client_id=client_id or "",
        secret_source=secret_source,
        targets=targets,
        scope=_opt_str(item.get("scope"), f"{where}.scope"),
        auth_method=auth_method,
        verify_url=None if verify_url is None else _url(verify_url, f"{where}.verify_url"),
        ca_bundle=_opt_str(item.get("ca_bundle"), f"{where}.ca_bundle"),
        refresh=_refresh(refresh_raw, f"{where}.refresh"),
    )


def _refresh(data: Mapping[str, Any], where: str) -> Refresh:
    _check_keys(data, _REFRESH_KEYS, where)
    values: dict[str, float] = {}
    for key, value in data.items():
        values[key] = _seconds(value, f"{where}.{key}", zero_ok=key == "jitter_ratio")
    refresh = Refresh(**values)
    if not 0 < refresh.ratio < 1:
        raise ConfigError(f"{where}.ratio must be between 0 and 1 (exclusive): {refresh.ratio!r}")
    if not 0 <= refresh.jitter_ratio < refresh.ratio:
        raise ConfigError(
            f"{where}.jitter_ratio must be >= 0 and below ratio: {refresh.jitter_ratio!r}"
        )
    return refresh


_TARGET_REF_KEYS = {"secretsmanager": "secret_id", "ssm": "parameter", "file": "path"}


def _target(item: Any, where: str) -> Target:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where} must be a table")
    kind = _choice(item.get("type"), TARGET_TYPES, f"{where}.type")
    ref_key = _TARGET_REF_KEYS[kind]
    allowed = {"type", ref_key, "name", "format", "region"}
    if kind != "file":
        allowed.add("kms_key_id")
    if kind == "secretsmanager":
        allowed |= {"create", "max_writes_per_day"}
    _check_keys(item, allowed, where)
    if ref_key in item and "name" in item:
        raise ConfigError(f"{where}: give {ref_key!r} or 'name', not both")
    ref = _str(item.get(ref_key, item.get("name")), f"{where}.{ref_key}")
    if kind == "ssm" and not ref.startswith("/") and "/" in ref:
        raise ConfigError(f"{where}.parameter: a hierarchical name must start with '/': {ref!r}")
    create = item.get("create", False)
    if not isinstance(create, bool):
        raise ConfigError(f"{where}.create must be true or false: {create!r}")
    return Target(
        type=kind,
        ref=ref,
        format=_choice(item.get("format", "json"), ("json", "raw"), f"{where}.format"),
        kms_key_id=_opt_str(item.get("kms_key_id"), f"{where}.kms_key_id"),
        create=create,
        region=_opt_str(item.get("region"), f"{where}.region"),
        max_writes_per_day=_opt_count(
            item.get("max_writes_per_day"), f"{where}.max_writes_per_day"
        ),
    )


def from_env(env: Mapping[str, str], *, require_client: bool = True) -> Settings:
    """One credential from the container convention (ROTATOR_* variables).

    An unknown ROTATOR_* variable is an error (a typo would otherwise silently
    drop a target or a secret); its value is never shown.
    """
    unknown = unknown_env_keys(env)
    if unknown:
        raise ConfigError(
            f"unknown environment variable(s): {', '.join(unknown)} "
            f"(known: {', '.join(k for k in ENV_KEYS if k != 'ROTATOR_CONFIG')})"
        )
    targets: list[Target] = []
    kms = env.get("ROTATOR_KMS_KEY_ID") or None
    fmt = _choice(env.get("ROTATOR_FORMAT") or "json", ("json", "raw"), "ROTATOR_FORMAT")
    if env.get("ROTATOR_SECRETSMANAGER_SECRET_ID"):
        targets.append(
            Target(
                "secretsmanager",
                env["ROTATOR_SECRETSMANAGER_SECRET_ID"],
                format=fmt,
                kms_key_id=kms,
                create=_bool(
                    env.get("ROTATOR_SECRETSMANAGER_CREATE", "false"),
                    "ROTATOR_SECRETSMANAGER_CREATE",
                ),
                max_writes_per_day=_opt_count(
                    env.get("ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY") or None,
                    "ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY",
                ),
            )
        )
    if env.get("ROTATOR_SSM_PARAMETER"):
        targets.append(Target("ssm", env["ROTATOR_SSM_PARAMETER"], format=fmt, kms_key_id=kms))
    if env.get("ROTATOR_FILE_PATH"):
        targets.append(Target("file", env["ROTATOR_FILE_PATH"], format=fmt))
    if not targets:
        raise ConfigError(
            "no configuration: pass --config PATH (or set ROTATOR_CONFIG), or set at least one of "
            "ROTATOR_SECRETSMANAGER_SECRET_ID, ROTATOR_SSM_PARAMETER, ROTATOR_FILE_PATH"
        )
    token_url = env.get("ROTATOR_TOKEN_URL") or None
    client_id = env.get("ROTATOR_CLIENT_ID") or None
    has_secret = "ROTATOR_CLIENT_SECRET" in env
    has_file = bool(env.get("ROTATOR_CLIENT_SECRET_FILE"))
    if has_secret and has_file:
        raise ConfigError("set ROTATOR_CLIENT_SECRET or ROTATOR_CLIENT_SECRET_FILE, not both")
    source = None
    if has_file:
        source = SecretSource("client_secret_file", env["ROTATOR_CLIENT_SECRET_FILE"])
    elif has_secret:
        source = SecretSource("client_secret_env", "ROTATOR_CLIENT_SECRET")
    if require_client:
        missing = [
            k
            for k, v in (
                ("ROTATOR_TOKEN_URL", token_url),
                ("ROTATOR_CLIENT_ID", client_id),
                ("ROTATOR_CLIENT_SECRET or ROTATOR_CLIENT_SECRET_FILE", source),
            )
            if not v
        ]
        if missing:
            raise ConfigError("missing environment variable(s): " + ", ".join(missing))
    if token_url is not None:
        token_url = _url(token_url, "ROTATOR_TOKEN_URL")
    verify_url = env.get("ROTATOR_VERIFY_URL") or None
    name = env.get("ROTATOR_CREDENTIAL_NAME") or "default"
    port = env.get("ROTATOR_METRICS_PORT") or None
    credential = Credential(
        name=_name(name, "ROTATOR_CREDENTIAL_NAME"),
        token_url=token_url or "",
        client_id=client_id or "",
        secret_source=source,
        targets=tuple(targets),
        scope=env.get("ROTATOR_SCOPE") or None,
        auth_method=_choice(
            env.get("ROTATOR_AUTH_METHOD") or "client_secret_post",
            AUTH_METHODS,
            "ROTATOR_AUTH_METHOD",
        ),
        verify_url=None if verify_url is None else _url(verify_url, "ROTATOR_VERIFY_URL"),
    )
    return Settings(
        credentials=(credential,),
        metrics_port=None if port is None else _port(port, "ROTATOR_METRICS_PORT"),
        source="environment",
    )


def unknown_env_keys(env: Mapping[str, str]) -> list[str]:
    """ROTATOR_* variables this tool does not know (likely typos)."""
    return sorted(k for k in env if k.startswith("ROTATOR_") and k not in ENV_KEYS)


# ---------------------------------------------------------------- validators


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        names = ", ".join(prefix + k for k in unknown)
        raise ConfigError(
            f"unknown configuration key(s): {names} (allowed: {', '.join(sorted(allowed))})"
        )


def _check_unique(values: list[str], where: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{where}: duplicate {value!r}")
        seen.add(value)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string: {value!r}")
    return value.strip()


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _name(value: Any, where: str) -> str:
    name = _str(value, where)
    if not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"{where} may hold only letters, digits, '-', '_' and '.': {name!r}")
    return name


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}: {value!r}")
    return str(value)


def _bool(value: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{where} must be true or false: {value!r}")


def _seconds(value: Any, where: str, *, zero_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number: {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero_ok):
        raise ConfigError(f"{where} must be a positive number: {value!r}")
    return number


def _opt_count(value: Any, where: str) -> int | None:
    """A positive whole number (TOML integer or its decimal digits in the environment)."""
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} must be a whole number >= 1: {value!r}")
    return value


def _port(value: Any, where: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a port number: {value!r}") from None
    if isinstance(value, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"{where} must be a port number (0-65535): {value!r}")
    return port


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url(value: Any, where: str) -> str:
    url = _str(value, where)
    try:
        parts = urlsplit(url)
        has_userinfo = "@" in parts.netloc
        hostname = parts.hostname
    except ValueError:
        shown = "" if "@" in url else f": {url!r}"  # user info may hold a password
        raise ConfigError(f"{where} is not a valid URL{shown}") from None
    # Before any message that echoes the URL: user info may hold a password.
    if has_userinfo:
        raise ConfigError(f"{where} must not embed credentials in the URL")
    if parts.scheme not in ("https", "http") or not hostname:
        raise ConfigError(f"{where} must be an https:// URL: {url!r}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"{where}: plain http:// is refused except to a loopback address; use https: {url!r}"
        )
    return url
