"""A rotator TOML configuration from plain dicts, and the usual targets.

``write_config(path, [credential(name, token_url, targets, **refresh)], **top)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CLIENT_ID = "oms-client"
CLIENT_SECRET = "oms-secret"
SECRET_ENV = "OMS_CLIENT_SECRET"
SECRET_ID = "oms/token"
PARAMETER = "/oms/token"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for everything we write
    raise TypeError(f"no TOML for {value!r}")


def credential(
    name: str,
    token_url: str,
    targets: Sequence[Mapping[str, Any]],
    *,
    verify_url: str | None = None,
    **refresh: float,
) -> dict[str, Any]:
    """One ``[[credentials]]`` table; ``refresh`` goes to ``[credentials.refresh]``."""
    cred: dict[str, Any] = {
        "name": name,
        "token_url": token_url,
        "client_id": CLIENT_ID,
        "client_secret_env": SECRET_ENV,
        "targets": list(targets),
    }
    if verify_url is not None:
        cred["verify_url"] = verify_url
    if refresh:
        cred["refresh"] = dict(refresh)
    return cred


def write_config(path: Path, credentials: Sequence[Mapping[str, Any]], **top: Any) -> Path:
    lines = [f"{key} = {_toml(value)}" for key, value in top.items()]
    for cred in credentials:
        lines.append("\n[[credentials]]")
        lines += [f"{k} = {_toml(v)}" for k, v in cred.items() if k not in ("refresh", "targets")]
        if cred.get("refresh"):
            lines.append("[credentials.refresh]")
            lines += [f"{k} = {_toml(v)}" for k, v in cred["refresh"].items()]
        for target in cred["targets"]:
            lines.append("[[credentials.targets]]")
            lines += [f"{k} = {_toml(v)}" for k, v in target.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def sm_target(secret_id: str = SECRET_ID, **extra: Any) -> dict[str, Any]:
    return {"type": "secretsmanager", "secret_id": secret_id, "create": True, **extra}


def ssm_target(parameter: str = PARAMETER) -> dict[str, Any]:
    return {"type": "ssm", "parameter": parameter}


def file_target(path: Path) -> dict[str, Any]:
    return {"type": "file", "path": str(path)}


# ---------------------------------------------------------------- reload tests


def file_credential(
    name: str, token_url: str, client_id: str, folder: Path, *targets: str, extra: str = ""
) -> str:
    """One ``[[credentials]]`` table as text: the secret from ``SECRET_<NAME>``, ``extra``
    lines, a file target ``<folder>/<target>.json`` per target."""
    tables = "".join(
        f'\n  [[credentials.targets]]\n  type = "file"\n  path = "{folder / t}.json"\n'
        for t in targets
    )
    return (
        f'[[credentials]]\nname = "{name}"\ntoken_url = "{token_url}"\n'
        f'client_id = "{client_id}"\nclient_secret_env = "SECRET_{name.upper()}"\n'
        f"{extra}{tables}\n"
    )


def replace_config(path: Path, text: str, *, top: str = "") -> None:
    """Write ``text`` after the health server's settings (a free port on 127.0.0.1) and
    ``top``, atomically, as a ConfigMap update is."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f'metrics_port = 0\nmetrics_address = "127.0.0.1"\n{top}{text}')
    tmp.replace(path)


def probe_vars(path: Path, probe: str, verify_url: str | None, interval: float) -> dict[str, str]:
    """``ROTATOR_*`` for a daemon publishing to the file ``path`` and probing every
    ``interval`` s, by ``introspection`` or at ``verify_url``; health on a free port."""
    env = {
        "ROTATOR_FILE_PATH": str(path),
        "ROTATOR_PROBE_INTERVAL_SECONDS": str(interval),
        "ROTATOR_METRICS_PORT": "0",
        "ROTATOR_METRICS_ADDRESS": "127.0.0.1",
    }
    if probe == "introspection":
        env["ROTATOR_PROBE"] = "introspection"
    else:
        assert verify_url is not None
        env["ROTATOR_VERIFY_URL"] = verify_url
    return env
