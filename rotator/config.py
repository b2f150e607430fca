"""Frozen settings from a TOML file or, for one credential, from the environment.

Errors name the key and the bad value (never a secret). Secrets are never
inline: the config names where the client secret comes from.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rotator.errors import ConfigError

AUTH_METHODS = ("client_secret_post", "client_secret_basic", "client_secret_jwt", "private_key_jwt")
JWT_METHODS = ("client_secret_jwt", "private_key_jwt")
TARGET_TYPES = ("secretsmanager", "ssm", "file")
SECRET_SOURCES = (
    "client_secret_env",
    "client_secret_file",
    "client_secret_secretsmanager",
    "client_secret_ssm",
)
KEY_SOURCES = (
    "private_key_env",
    "private_key_file",
    "private_key_secretsmanager",
    "private_key_ssm",
)
# Signing algorithms per JWT method; the first is the default.
SIGNING_ALGS = {"private_key_jwt": ("RS256", "ES256", "PS256"), "client_secret_jwt": ("HS256",)}
ASSERTION_LIFETIME_SECONDS = 60.0
MAX_ASSERTION_LIFETIME_SECONDS = 600.0
# Form fields rotator itself sets: extra_params may never override them.
RESERVED_PARAMS = (
    "client_secret",
    "client_id",
    "grant_type",
    "client_assertion",
    "client_assertion_type",
    "refresh_token",
    "scope",
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
    "ROTATOR_FILE_MODE",
    "ROTATOR_FILE_OWNER",
    "ROTATOR_FILE_GROUP",
    "ROTATOR_KMS_KEY_ID",
    "ROTATOR_FORMAT",
    "ROTATOR_SCOPE",
    "ROTATOR_AUTH_METHOD",
    "ROTATOR_PRIVATE_KEY_FILE",
    "ROTATOR_PRIVATE_KEY_ID",
    "ROTATOR_SIGNING_ALG",
    "ROTATOR_VERIFY_URL",
    "ROTATOR_CREDENTIAL_NAME",
    "ROTATOR_METRICS_PORT",
    "ROTATOR_METRICS_ADDRESS",
    "ROTATOR_MAX_WORKERS",
    "ROTATOR_LOG_LEVEL",
    "ROTATOR_LOG_FORMAT",
    "ROTATOR_ONCE_INTERVAL",
    "ROTATOR_PROBE",
    "ROTATOR_PROBE_INTERVAL_SECONDS",
)
# How the daemon checks that the published token still works (issue 13).
PROBES = ("verify_url", "introspection", "off")
PROBE_INTERVAL_SECONDS = 60.0
INTROSPECTION_SUFFIX = "/introspect"

_FILE_ONLY_ENV = ("ROTATOR_FILE_MODE", "ROTATOR_FILE_OWNER", "ROTATOR_FILE_GROUP")


@dataclass(frozen=True)
class SecretSource:
    """Where the client secret (kind in SECRET_SOURCES) or the private key (kind in
    KEY_SOURCES) is read from."""

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
    mode: int | None = None  # file targets: permission bits (None: 0600)
    owner: int | None = None  # file targets: uid to chown to (None: unchanged)
    group: int | None = None  # file targets: gid to chown to (None: unchanged)
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
    # The whole exchange (connect, headers, body) of one token request or verify
    # call: requests' read timeout is per socket read, so a server that drips a
    # byte at a time would otherwise hold the job for ever.
    request_deadline_seconds: float = 30.0


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
    jwt: JwtAuth | None = None  # set for client_secret_jwt and private_key_jwt
    extra_params: tuple[tuple[str, str], ...] = ()  # extra token-request form fields
    # The published-token probe: "verify_url" (GET it), "introspection" (RFC 7662) or
    # "off"; None when verify_url is unset and no probe was asked for.
    probe: str | None = None
    probe_interval_seconds: float = PROBE_INTERVAL_SECONDS  # 0: no probe
    introspection_url: str | None = None

    @property
    def probe_url(self) -> str | None:
        """What the probe asks, or None when the credential is not probed."""
        if self.probe_interval_seconds <= 0 or self.probe in (None, "off"):
            return None
        if self.probe == "introspection":
            return self.introspection_url or self.token_url + INTROSPECTION_SUFFIX
        return self.verify_url


@dataclass(frozen=True)
class JwtAuth:
    """RFC 7523 client authentication: how each client assertion is signed."""

    signing_alg: str
    key_source: SecretSource | None = None  # private_key_jwt only
    key_id: str | None = None  # the JWS "kid" header
    assertion_lifetime_seconds: float = ASSERTION_LIFETIME_SECONDS


@dataclass(frozen=True)
class Settings:
    credentials: tuple[Credential, ...]
    metrics_port: int | None = None
    metrics_address: str = "0.0.0.0"  # noqa: S104 - a container's probe port must be reachable
    readiness_margin_seconds: float = 30.0
    source: str = "environment"
    max_workers: int | None = None  # None: one per credential plus one, at most 32
    # Process-level keys the TOML file set itself (they win over the environment).
    file_keys: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def metrics_host(self) -> str:
        """The former name of `metrics_address`."""
        return self.metrics_address

    @property
    def workers(self) -> int:
        """Threads that run rotation jobs in the daemon."""
        if self.max_workers is not None:
            return self.max_workers
        return min(32, len(self.credentials) + 1)

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
    check_env_names(env)
    if path is None and env.get("ROTATOR_CONFIG"):
        path = env["ROTATOR_CONFIG"]
    if path is not None:
        settings = _from_file(Path(path), require_client=require_client)
        return with_process_env(settings, env, file_sets=settings.file_keys)
    return from_env(env, require_client=require_client)


# Process-level settings: the environment gives them in both modes; a TOML file
# that sets one wins. (Log level/format and the once interval are read by the CLI.)
def with_process_env(
    settings: Settings, env: Mapping[str, str], *, file_sets: frozenset[str] = frozenset()
) -> Settings:
    """`settings` with the process-level values the environment gives and the file does not."""
    from dataclasses import replace

    parsers: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
        "metrics_port": ("ROTATOR_METRICS_PORT", _port),
        "metrics_address": ("ROTATOR_METRICS_ADDRESS", _address),
        "max_workers": ("ROTATOR_MAX_WORKERS", _workers),
    }
    changes = {
        key: parse(env[name], name)
        for key, (name, parse) in parsers.items()
        if key not in file_sets and env.get(name)
    }
    return replace(settings, **changes) if changes else settings


def _from_file(path: Path, *, require_client: bool) -> Settings:
    import tomllib  # only this path needs it

    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {str(path)!r}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    return from_mapping(data, source=str(path), require_client=require_client)


def from_mapping(
    data: Mapping[str, Any], *, source: str = "config", require_client: bool = True
) -> Settings:
    _check_keys(
        data,
        {
            "credentials",
            "metrics_port",
            "metrics_address",
            "metrics_host",
            "max_workers",
            "readiness_margin_seconds",
        },
        "",
    )
    if "metrics_address" in data and "metrics_host" in data:
        raise ConfigError("give metrics_address or its old name metrics_host, not both")
    creds_raw = data.get("credentials")
    if not isinstance(creds_raw, list) or not creds_raw:
        raise ConfigError(f"{source}: at least one [[credentials]] table is required")
    credentials = tuple(
        _credential(item, f"credentials[{i}]", require_client=require_client)
        for i, item in enumerate(creds_raw)
    )
    _check_unique([c.name for c in credentials], "credentials[].name")
    port = data.get("metrics_port")
    address_key = "metrics_host" if "metrics_host" in data else "metrics_address"
    workers = data.get("max_workers")
    file_keys = frozenset(k for k in ("metrics_port", "max_workers") if k in data)
    return Settings(
        credentials=credentials,
        metrics_port=None if port is None else _port(port, "metrics_port"),
        metrics_address=_address(data.get(address_key, "0.0.0.0"), address_key),  # noqa: S104
        readiness_margin_seconds=_seconds(
            data.get("readiness_margin_seconds", 30.0), "readiness_margin_seconds", zero_ok=True
        ),
        source=source,
        max_workers=None if workers is None else _workers(workers, "max_workers"),
        file_keys=file_keys | ({"metrics_address"} if address_key in data else set()),
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
    *KEY_SOURCES,
    "private_key_region",
    "private_key_id",
    "signing_alg",
    "assertion_lifetime_seconds",
    "extra_params",
    "probe",
    "probe_interval_seconds",
    "introspection_url",
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
    if "private_key" in item:
        raise ConfigError(
            f"{where}.private_key: keys are never inline; use one of " + ", ".join(KEY_SOURCES)
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
    auth_method = _choice(
        item.get("auth_method", "client_secret_post"), AUTH_METHODS, f"{where}.auth_method"
    )
    jwt = _jwt_auth(
        item, auth_method, where, has_secret=secret_source is not None, required=require_client
    )
    if secret_source is None and require_client and auth_method != "private_key_jwt":
        raise ConfigError(f"{where}: the client secret needs one of {', '.join(SECRET_SOURCES)}")
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
        ca_bundle=_ca_bundle(item.get("ca_bundle"), f"{where}.ca_bundle"),
        refresh=_refresh(refresh_raw, f"{where}.refresh"),
        jwt=jwt,
        extra_params=extra_params(item.get("extra_params", {}), f"{where}.extra_params"),
        **probe_settings(
            item.get("probe"),
            item.get("probe_interval_seconds", PROBE_INTERVAL_SECONDS),
            item.get("introspection_url"),
            has_verify_url=verify_url is not None,
            where=where,
        ),
    )


def probe_settings(
    probe: Any, interval: Any, introspection_url: Any, *, has_verify_url: bool, where: str
) -> dict[str, Any]:
    """The probe keys of one credential, checked together."""
    key = f"{where}." if where else ""
    chosen = None if probe is None else _choice(probe, PROBES, f"{key}probe")
    if chosen is None and has_verify_url:
        chosen = "verify_url"
    if chosen == "verify_url" and not has_verify_url:
        raise ConfigError(f'{key}probe = "verify_url" needs a verify_url')
    url = None
    if introspection_url is not None:
        if chosen != "introspection":
            raise ConfigError(f'{key}introspection_url applies only to probe = "introspection"')
        url = _url(introspection_url, f"{key}introspection_url")
    return {
        "probe": chosen,
        "probe_interval_seconds": _seconds(interval, f"{key}probe_interval_seconds", zero_ok=True),
        "introspection_url": url,
    }


def _jwt_auth(
    item: Mapping[str, Any], method: str, where: str, *, has_secret: bool, required: bool = True
) -> JwtAuth | None:
    """The RFC 7523 keys of one credential, checked against its auth_method."""
    jwt_keys = ("signing_alg", "assertion_lifetime_seconds")
    key_keys = (*KEY_SOURCES, "private_key_region", "private_key_id")
    if method not in JWT_METHODS:
        for key in (*jwt_keys, *key_keys):
            if key in item:
                raise ConfigError(
                    f"{where}.{key} applies only to auth_method = "
                    f"{' or '.join(JWT_METHODS)}, not {method}"
                )
        return None
    if method == "client_secret_jwt":
        for key in key_keys:
            if key in item:
                raise ConfigError(
                    f"{where}.{key}: client_secret_jwt signs with the client secret; "
                    "a private key is for private_key_jwt"
                )
        key_source = None
    else:
        if has_secret:
            raise ConfigError(
                f"{where}: private_key_jwt sends no client secret; remove "
                + ", ".join(k for k in SECRET_SOURCES if k in item)
            )
        sources = [k for k in KEY_SOURCES if k in item]
        if len(sources) > 1 or (required and not sources):
            raise ConfigError(
                f"{where}: private_key_jwt needs exactly one of {', '.join(KEY_SOURCES)}"
            )
        key_source = (
            SecretSource(
                kind=sources[0],
                ref=_str(item[sources[0]], f"{where}.{sources[0]}"),
                region=_opt_str(item.get("private_key_region"), f"{where}.private_key_region"),
            )
            if sources
            else None
        )
    algs = SIGNING_ALGS[method]
    lifetime = _seconds(
        item.get("assertion_lifetime_seconds", ASSERTION_LIFETIME_SECONDS),
        f"{where}.assertion_lifetime_seconds",
    )
    if lifetime > MAX_ASSERTION_LIFETIME_SECONDS:
        raise ConfigError(
            f"{where}.assertion_lifetime_seconds must be at most "
            f"{MAX_ASSERTION_LIFETIME_SECONDS:g} (an assertion is short-lived): {lifetime:g}"
        )
    return JwtAuth(
        signing_alg=_choice(item.get("signing_alg", algs[0]), algs, f"{where}.signing_alg"),
        key_source=key_source,
        key_id=_opt_str(item.get("private_key_id"), f"{where}.private_key_id"),
        assertion_lifetime_seconds=lifetime,
    )


def extra_params(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """The extra_params table as (field, value) pairs; a list value repeats the field
    (RFC 8707 allows several ``resource``). Fields rotator sets itself are refused."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table of form fields")
    pairs: list[tuple[str, str]] = []
    for key, raw in value.items():
        if key in RESERVED_PARAMS:
            hint = "use the scope key" if key == "scope" else "rotator sets it itself"
            raise ConfigError(f"{where}.{key} may not be overridden ({hint})")
        if not key.strip() or key != key.strip():
            raise ConfigError(f"{where}: bad form field name {key!r}")
        values = raw if isinstance(raw, list) else [raw]
        if not values or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{where}.{key} must be a string or a list of strings")
        pairs.extend((key, v) for v in values)
    return tuple(pairs)


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
    if kind == "file":
        allowed |= {"mode", "owner", "group"}
    else:
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
        **_file_permissions(item, where),
    )


def _file_permissions(item: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`mode`/`owner`/`group` of a file target (rotator/filemode.py), None where unset.
    `where` names the keys: a TOML table's path, or "ROTATOR_FILE" for ROTATOR_FILE_*."""
    from rotator.filemode import parse_group, parse_mode, parse_owner

    sep = "_" if where == "ROTATOR_FILE" else "."
    parsers = {"mode": parse_mode, "owner": parse_owner, "group": parse_group}
    found: dict[str, Any] = {}
    for key, parse in parsers.items():
        value = item.get(key)
        name = f"{where}{sep}{key.upper() if sep == '_' else key}"
        found[key] = None if value in (None, "") else parse(value, name)
    return found


def from_env(env: Mapping[str, str], *, require_client: bool = True) -> Settings:
    """One credential from the container convention (ROTATOR_* variables).

    An unknown ROTATOR_* variable is an error (a typo would otherwise silently
    drop a target or a secret); its value is never shown.
    """
    check_env_names(env)
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
    stray = [k for k in _FILE_ONLY_ENV if env.get(k)] if not env.get("ROTATOR_FILE_PATH") else []
    if stray:
        raise ConfigError(f"{', '.join(stray)} set without ROTATOR_FILE_PATH (a file target)")
    if env.get("ROTATOR_FILE_PATH"):
        targets.append(
            Target(
                "file",
                env["ROTATOR_FILE_PATH"],
                format=fmt,
                **_file_permissions(
                    {k: env.get(f"ROTATOR_FILE_{k.upper()}") for k in ("mode", "owner", "group")},
                    "ROTATOR_FILE",
                ),
            )
        )
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
    auth_method = _choice(
        env.get("ROTATOR_AUTH_METHOD") or "client_secret_post", AUTH_METHODS, "ROTATOR_AUTH_METHOD"
    )
    jwt = _jwt_from_env(env, auth_method, has_secret=source is not None)
    if require_client:
        needs: tuple[tuple[str, object], ...] = (
            ("ROTATOR_TOKEN_URL", token_url),
            ("ROTATOR_CLIENT_ID", client_id),
        )
        if auth_method == "private_key_jwt":
            needs += (("ROTATOR_PRIVATE_KEY_FILE", jwt and jwt.key_source),)
        else:
            needs += (("ROTATOR_CLIENT_SECRET or ROTATOR_CLIENT_SECRET_FILE", source),)
        missing = [k for k, v in needs if not v]
        if missing:
            raise ConfigError("missing environment variable(s): " + ", ".join(missing))
    if token_url is not None:
        token_url = _url(token_url, "ROTATOR_TOKEN_URL")
    verify_url = env.get("ROTATOR_VERIFY_URL") or None
    name = env.get("ROTATOR_CREDENTIAL_NAME") or "default"
    credential = Credential(
        name=_name(name, "ROTATOR_CREDENTIAL_NAME"),
        token_url=token_url or "",
        client_id=client_id or "",
        secret_source=source,
        targets=tuple(targets),
        scope=env.get("ROTATOR_SCOPE") or None,
        auth_method=auth_method,
        verify_url=None if verify_url is None else _url(verify_url, "ROTATOR_VERIFY_URL"),
        jwt=jwt,
        **_probe_from_env(env, has_verify_url=verify_url is not None),
    )
    return with_process_env(Settings(credentials=(credential,), source="environment"), env)


def _probe_from_env(env: Mapping[str, str], *, has_verify_url: bool) -> dict[str, Any]:
    """ROTATOR_PROBE and ROTATOR_PROBE_INTERVAL_SECONDS, checked as their TOML keys."""
    raw = env.get("ROTATOR_PROBE_INTERVAL_SECONDS") or None
    interval: Any = PROBE_INTERVAL_SECONDS
    if raw is not None:
        try:
            interval = float(raw) if raw.strip().isascii() else raw
        except ValueError:
            interval = raw  # _seconds names it
    try:
        return probe_settings(
            env.get("ROTATOR_PROBE") or None,
            interval,
            None,
            has_verify_url=has_verify_url,
            where="",
        )
    except ConfigError as exc:
        message = str(exc).replace("probe_interval_seconds", "ROTATOR_PROBE_INTERVAL_SECONDS")
        message = message.replace("probe must", "ROTATOR_PROBE must")
        message = message.replace('probe = "verify_url"', "ROTATOR_PROBE=verify_url")
        raise ConfigError(message) from None


def is_known_env_name(name: str) -> bool:
    """Whether a ROTATOR_* name is one this tool reads, or one Kubernetes injects."""
    return name in ENV_KEYS or is_service_link(name)


_ENV_JWT_KEYS = (
    ("ROTATOR_PRIVATE_KEY_FILE", "private_key_file"),
    ("ROTATOR_PRIVATE_KEY_ID", "private_key_id"),
    ("ROTATOR_SIGNING_ALG", "signing_alg"),
)


def _jwt_from_env(env: Mapping[str, str], method: str, *, has_secret: bool) -> JwtAuth | None:
    """ROTATOR_PRIVATE_KEY_FILE / _ID and ROTATOR_SIGNING_ALG, checked as their TOML keys."""
    item = {key: env[var] for var, key in _ENV_JWT_KEYS if env.get(var)}
    if method == "private_key_jwt" and has_secret:
        raise ConfigError(
            "ROTATOR_AUTH_METHOD=private_key_jwt sends no client secret; unset "
            "ROTATOR_CLIENT_SECRET / ROTATOR_CLIENT_SECRET_FILE"
        )
    try:
        return _jwt_auth(item, method, "environment", has_secret=False, required=False)
    except ConfigError as exc:  # name the variables, not the TOML keys
        message = str(exc)
        for var, key in _ENV_JWT_KEYS:
            message = message.replace(f"environment.{key}", var)
        raise ConfigError(message) from None


def unknown_env_keys(env: Mapping[str, str]) -> list[str]:
    """ROTATOR_* variables this tool does not know (likely typos)."""
    return sorted(k for k in env if k.startswith("ROTATOR_") and not is_known_env_name(k))


def check_env_names(env: Mapping[str, str]) -> None:
    """The typo check, in both modes: an unknown ROTATOR_* name is an error; its value
    is never shown."""
    unknown = unknown_env_keys(env)
    if unknown:
        raise ConfigError(
            f"unknown environment variable(s): {', '.join(unknown)} "
            f"(known: {', '.join(k for k in ENV_KEYS if k != 'ROTATOR_CONFIG')})"
        )


def is_service_link(name: str) -> bool:
    """A variable Kubernetes injects for a Service named `rotator` (service links).

    Every pod in the namespace gets ROTATOR_SERVICE_HOST, ROTATOR_SERVICE_PORT[_<port
    name>], ROTATOR_PORT and ROTATOR_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]; none of
    them is a setting of ours, so the typo check leaves them alone. No setting of
    ours may ever start with ROTATOR_SERVICE_ or ROTATOR_PORT_.
    """
    return (
        name == "ROTATOR_PORT"
        or name.startswith("ROTATOR_PORT_")
        or name.startswith("ROTATOR_SERVICE_")
    )


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
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} must be a port number: {value!r}") from exc
    if isinstance(value, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"{where} must be a port number (0-65535): {value!r}")
    return port


def _address(value: Any, where: str) -> str:
    address = _str(value, where)
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if address != "localhost":
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise ConfigError(
                f"{where} must be an IP address to bind to (or localhost): {address!r}"
            ) from exc
    return address


def _workers(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} must be a whole number of threads: {value!r}") from exc
    if isinstance(value, bool) or not 1 <= number <= 256:
        raise ConfigError(f"{where} must be between 1 and 256: {value!r}")
    return number


def _ca_bundle(value: Any, where: str) -> str | None:
    path = _opt_str(value, where)
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


def _url(value: Any, where: str) -> str:
    url = _str(value, where)
    shown = "" if "@" in url else f": {url!r}"  # user info may hold a password
    invalid = ConfigError(f"{where} is not a valid URL{shown}")
    if not url.isascii() or any(c in _AMBIGUOUS_URL_CHARS or not c.isprintable() for c in url):
        raise invalid
    try:
        parts = urlsplit(url)
        has_userinfo = "@" in parts.netloc
        hostname = parts.hostname
    except ValueError:
        raise invalid from None
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
