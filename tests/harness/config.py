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
