"""Frozen settings from a TOML file or, for one credential, from the environment.

Both sources become the same mapping and one validator checks it (``parse``); errors
name the key as the user wrote it (a TOML key path or a ROTATOR_* variable) and the
bad value, never a secret. Secrets are never inline: the config names where the
client secret comes from.

Modules: ``schema`` (the frozen dataclasses, the defaults, the closed sets),
``values`` (checks of single values), ``parse`` (mapping -> Settings), ``env``
(ROTATOR_* variables -> mapping), ``process`` (log level and format, the config
path, the once interval).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rotator.config.env import (
    ENV_KEYS,
    NAMES,
    check_env_names,
    is_known_env_name,
    is_service_link,
    process_mapping,
    to_mapping,
    unknown_env_keys,
)
from rotator.config.parse import Names, extra_params, from_mapping, probe_settings
from rotator.config.process import Process, once_interval, process_settings
from rotator.config.schema import (
    ASSERTION_LIFETIME_SECONDS,
    AUTH_METHODS,
    INTROSPECTION_SUFFIX,
    JWT_METHODS,
    KEY_SOURCES,
    MAX_ASSERTION_LIFETIME_SECONDS,
    PROBE_INTERVAL_SECONDS,
    PROBES,
    RESERVED_PARAMS,
    SECRET_SOURCES,
    SIGNING_ALGS,
    TARGET_TYPES,
    AuthMethod,
    Client,
    Credential,
    JwtAuth,
    Refresh,
    SecretSource,
    Settings,
    Target,
)
from rotator.config.values import check_ca_bundle, connect_host, is_loopback
from rotator.errors import ConfigError

__all__ = [
    "ASSERTION_LIFETIME_SECONDS",
    "AUTH_METHODS",
    "ENV_KEYS",
    "INTROSPECTION_SUFFIX",
    "JWT_METHODS",
    "KEY_SOURCES",
    "MAX_ASSERTION_LIFETIME_SECONDS",
    "PROBES",
    "PROBE_INTERVAL_SECONDS",
    "RESERVED_PARAMS",
    "SECRET_SOURCES",
    "SIGNING_ALGS",
    "TARGET_TYPES",
    "AuthMethod",
    "Client",
    "ConfigError",
    "Credential",
    "JwtAuth",
    "Process",
    "Refresh",
    "SecretSource",
    "Settings",
    "Target",
    "check_ca_bundle",
    "check_env_names",
    "connect_host",
    "environ",
    "extra_params",
    "from_env",
    "from_mapping",
    "is_known_env_name",
    "is_loopback",
    "is_service_link",
    "load",
    "once_interval",
    "probe_settings",
    "process_settings",
    "unknown_env_keys",
]


def environ(env: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """`env`, or the process's environment: the one place it is read."""
    return os.environ if env is None else env


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
    env = environ(env)
    check_env_names(env)
    if path is None and env.get("ROTATOR_CONFIG"):
        path = env["ROTATOR_CONFIG"]
    if path is None:
        return from_env(env, require_client=require_client)
    data = _read_toml(Path(path))
    # Process-level keys: the environment gives those the file does not set.
    given = process_mapping(env)
    if "metrics_host" in data:
        given.pop("metrics_address", None)
    extra = {key: value for key, value in given.items() if key not in data}
    return from_mapping(
        {**data, **extra},
        source=str(Path(path)),
        require_client=require_client,
        names=Names(top={key: NAMES.top[key] for key in extra}),
        config_path=str(path),
    )


def from_env(env: Mapping[str, str], *, require_client: bool = True) -> Settings:
    """One credential from the container convention (ROTATOR_* variables).

    An unknown ROTATOR_* variable is an error (a typo would otherwise silently
    drop a target or a secret); its value is never shown.
    """
    check_env_names(env)
    data = to_mapping(env, require_client=require_client)
    return from_mapping(data, source="environment", require_client=require_client, names=NAMES)


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only this path needs it

    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {str(path)!r}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
