"""The container convention: ROTATOR_* variables turned into the mapping a TOML file
gives (one credential), plus the names errors call each key by. The values are
checked by the one validator (rotator.config.parse); here only what exists in this
mode alone: unknown names, and which variables go together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rotator.config.parse import Names
from rotator.errors import ConfigError

CREDENTIAL_NAME = "default"  # ROTATOR_CREDENTIAL_NAME unset

# variable -> key of the credential's table
CREDENTIAL_VARS = {
    "ROTATOR_CREDENTIAL_NAME": "name",
    "ROTATOR_TOKEN_URL": "token_url",
    "ROTATOR_CLIENT_ID": "client_id",
    "ROTATOR_CLIENT_SECRET_FILE": "client_secret_file",
    "ROTATOR_SCOPE": "scope",
    "ROTATOR_AUTH_METHOD": "auth_method",
    "ROTATOR_PRIVATE_KEY_FILE": "private_key_file",
    "ROTATOR_PRIVATE_KEY_ID": "private_key_id",
    "ROTATOR_SIGNING_ALG": "signing_alg",
    "ROTATOR_VERIFY_URL": "verify_url",
    "ROTATOR_PROBE": "probe",
    "ROTATOR_PROBE_INTERVAL_SECONDS": "probe_interval_seconds",
}
# target type -> variable -> key of the target's table; the first variable makes the target
TARGET_VARS = {
    "secretsmanager": {
        "ROTATOR_SECRETSMANAGER_SECRET_ID": "secret_id",
        "ROTATOR_FORMAT": "format",
        "ROTATOR_KMS_KEY_ID": "kms_key_id",
        "ROTATOR_SECRETSMANAGER_CREATE": "create",
        "ROTATOR_SECRETSMANAGER_MAX_WRITES_PER_DAY": "max_writes_per_day",
    },
    "ssm": {
        "ROTATOR_SSM_PARAMETER": "parameter",
        "ROTATOR_FORMAT": "format",
        "ROTATOR_KMS_KEY_ID": "kms_key_id",
    },
    "file": {
        "ROTATOR_FILE_PATH": "path",
        "ROTATOR_FORMAT": "format",
        "ROTATOR_FILE_MODE": "mode",
        "ROTATOR_FILE_OWNER": "owner",
        "ROTATOR_FILE_GROUP": "group",
    },
}
# process-level: given by the environment in both modes (a TOML file that sets one wins)
PROCESS_VARS = {
    "ROTATOR_METRICS_PORT": "metrics_port",
    "ROTATOR_METRICS_ADDRESS": "metrics_address",
    "ROTATOR_MAX_WORKERS": "max_workers",
}
_FILE_ONLY = ("ROTATOR_FILE_MODE", "ROTATOR_FILE_OWNER", "ROTATOR_FILE_GROUP")
_SECRET, _SECRET_FILE = "ROTATOR_CLIENT_SECRET", "ROTATOR_CLIENT_SECRET_FILE"

# Every variable of the convention (one credential, no file).
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

NAMES = Names(
    top={key: var for var, key in PROCESS_VARS.items()},
    credential={key: var for var, key in CREDENTIAL_VARS.items()},
    targets={kind: {key: var for var, key in table.items()} for kind, table in TARGET_VARS.items()},
)


def to_mapping(env: Mapping[str, str], *, require_client: bool = True) -> dict[str, Any]:
    """The one credential the ROTATOR_* variables describe, as a TOML file's mapping.
    An unset or empty variable leaves its key out (its default applies)."""
    targets = _targets(env)
    credential: dict[str, Any] = {"name": CREDENTIAL_NAME, "targets": targets}
    credential.update({key: env[var] for var, key in CREDENTIAL_VARS.items() if env.get(var)})
    if "probe_interval_seconds" in credential:
        credential["probe_interval_seconds"] = _number(credential["probe_interval_seconds"])
    has_secret, has_file = _SECRET in env, bool(env.get(_SECRET_FILE))
    if has_secret and has_file:
        raise ConfigError(f"set {_SECRET} or {_SECRET_FILE}, not both")
    if has_secret:
        credential["client_secret_env"] = _SECRET  # the variable holding the secret
    method = credential.get("auth_method")
    if method == "private_key_jwt" and (has_secret or has_file):
        raise ConfigError(
            f"ROTATOR_AUTH_METHOD=private_key_jwt sends no client secret; unset "
            f"{_SECRET} / {_SECRET_FILE}"
        )
    if require_client:
        _check_required(credential, method)
    return {"credentials": [credential], **process_mapping(env)}


def process_mapping(env: Mapping[str, str]) -> dict[str, str]:
    """The process-level keys the environment gives (both modes)."""
    return {key: env[var] for var, key in PROCESS_VARS.items() if env.get(var)}


def _targets(env: Mapping[str, str]) -> list[dict[str, Any]]:
    if not env.get("ROTATOR_FILE_PATH"):
        stray = [k for k in _FILE_ONLY if env.get(k)]
        if stray:
            raise ConfigError(f"{', '.join(stray)} set without ROTATOR_FILE_PATH (a file target)")
    targets = []
    for kind, table in TARGET_VARS.items():
        first = next(iter(table))
        if not env.get(first):
            continue
        target: dict[str, Any] = {"type": kind}
        target.update({key: env[var] for var, key in table.items() if env.get(var)})
        if "create" in target:
            target["create"] = _bool(target["create"])
        targets.append(target)
    if not targets:
        raise ConfigError(
            "no configuration: pass --config PATH (or set ROTATOR_CONFIG), or set at least one of "
            "ROTATOR_SECRETSMANAGER_SECRET_ID, ROTATOR_SSM_PARAMETER, ROTATOR_FILE_PATH"
        )
    return targets


def _check_required(credential: Mapping[str, Any], method: Any) -> None:
    needs = ["ROTATOR_TOKEN_URL", "ROTATOR_CLIENT_ID"]
    if method == "private_key_jwt":
        needs.append("ROTATOR_PRIVATE_KEY_FILE")
    elif not ({"client_secret_env", "client_secret_file"} & set(credential)):
        needs.append(f"{_SECRET} or {_SECRET_FILE}")
    missing = [var for var in needs if CREDENTIAL_VARS.get(var) not in credential]
    if missing:
        raise ConfigError("missing environment variable(s): " + ", ".join(missing))


def _bool(value: str) -> bool | str:
    """A variable's spellings of true and false; anything else is left for the
    validator to refuse, by name."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    return value


def _number(raw: str) -> float | str:
    """A variable's number of seconds; anything else is left for the validator to refuse."""
    try:
        return float(raw) if raw.strip().isascii() else raw
    except ValueError:
        return raw


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


def is_known_env_name(name: str) -> bool:
    """Whether a ROTATOR_* name is one this tool reads, or one Kubernetes injects."""
    return name in ENV_KEYS or is_service_link(name)


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
