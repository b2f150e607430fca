"""Token stores: one module per backend behind the TokenStore protocol.

The AWS stores take a ready boto3 client (built once at the composition root).
Backends are imported on first use, so a file-only run never loads botocore.
"""

from __future__ import annotations

import importlib
from typing import Any

from rotator.stores.base import PutResult, Reading, TokenStore

__all__ = [
    "FileStore",
    "MemoryStore",
    "PutResult",
    "Reading",
    "SecretsManagerStore",
    "SsmStore",
    "TokenStore",
]

_LAZY = {
    "FileStore": "rotator.stores.file",
    "MemoryStore": "rotator.stores.memory",
    "SecretsManagerStore": "rotator.stores.secretsmanager",
    "SsmStore": "rotator.stores.ssm",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rotator.stores' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
