"""Token stores: one module per backend behind the TokenStore protocol.

The AWS stores take a ready boto3 client (built once at the composition root).
Backends are imported on first use, so a file-only run never loads botocore.
"""

from __future__ import annotations

from rotator._lazy import lazy_attributes
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

__getattr__ = lazy_attributes(
    __name__,
    {
        "FileStore": "rotator.stores.file",
        "MemoryStore": "rotator.stores.memory",
        "SecretsManagerStore": "rotator.stores.secretsmanager",
        "SsmStore": "rotator.stores.ssm",
    },
)
