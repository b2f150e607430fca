"""Token stores: one module per backend behind the TokenStore protocol.

The AWS stores take a ready boto3 client (built once at the composition root),
so importing this package does not import boto3.
"""

from rotator.stores.base import PutResult, Reading, TokenStore
from rotator.stores.file import FileStore
from rotator.stores.memory import MemoryStore
from rotator.stores.secretsmanager import SecretsManagerStore
from rotator.stores.ssm import SsmStore

__all__ = [
    "FileStore",
    "MemoryStore",
    "PutResult",
    "Reading",
    "SecretsManagerStore",
    "SsmStore",
    "TokenStore",
]
