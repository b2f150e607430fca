"""Read many targets in few calls: SSM parameters with GetParameters (10 names a call),
Secrets Manager secrets with BatchGetSecretValue (20 a call).

Used where many targets are read at once (the daemon's start-up, where fresh published
tokens are adopted, and ``rotator status``) instead of one GetParameter per target. A
batch that fails (e.g. a role without ``secretsmanager:BatchGetSecretValue``) is logged
and left out: each store then reads itself as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rotator.errors import StoreError
from rotator.stores.base import Reading, TokenStore

if TYPE_CHECKING:
    from rotator.rotation import CredentialRotator

__all__ = ["read_batched", "seed_batched"]

log = logging.getLogger("rotator")


def read_batched(stores: Iterable[TokenStore]) -> dict[str, Reading]:
    """Readings of the SSM and Secrets Manager stores among ``stores``, keyed by store name;
    others (and any a batch could not vouch for) omitted."""
    from rotator.stores.secretsmanager import SecretsManagerStore
    from rotator.stores.ssm import SsmStore

    groups: dict[tuple[type, int], list[Any]] = {}
    for store in stores:
        if isinstance(store, SsmStore | SecretsManagerStore):
            groups.setdefault((type(store), store.client_id), []).append(store)
    readings: dict[str, Reading] = {}
    for group in groups.values():
        try:
            readings.update(group[0].get_batch(group))
        except StoreError as exc:
            log.warning("batched read failed, reading targets one by one: %s", exc)
    return readings


def seed_batched(rotators: Iterable[CredentialRotator]) -> None:
    """Read every rotator's SSM and Secrets Manager targets in batches and hand each its
    readings, so that the first steps (adopting fresh tokens at start-up) make no reads of
    their own."""
    rotators = list(rotators)
    readings = read_batched(store for rotator in rotators for store in rotator.stores)
    for rotator in rotators:
        rotator.seed(readings)
