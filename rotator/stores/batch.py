"""Read many targets in few calls: SSM parameters with GetParameters (10 names a call),
Secrets Manager secrets with BatchGetSecretValue (20 a call).

Used where many targets are read at once (the daemon's start-up, where fresh published
tokens are adopted, and ``rotator status``) instead of one GetParameter per target. A
batch that fails (e.g. a role without ``secretsmanager:BatchGetSecretValue``) is logged
and left out: each store then reads itself as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from rotator.errors import StoreError
from rotator.stores.base import Reading, TokenStore

if TYPE_CHECKING:
    from rotator.rotation import CredentialRotator

__all__ = ["IN_FLIGHT", "in_chunks", "read_batched", "seed_batched"]

log = logging.getLogger("rotator")

# Batch calls in flight at once. One after the other, 500 GetParameters (5,000 targets)
# take 500 round trips (10-30 ms each on AWS): longer than the pace allows. Each call
# still waits for its pacer (rotator.pacing), so the rate stays under AWS's.
IN_FLIGHT = 8

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def in_chunks(
    call: Callable[[Sequence[_Item]], _Result], items: Sequence[_Item], size: int
) -> list[_Result]:
    """``call`` on each run of ``size`` items, up to IN_FLIGHT at once; results in order.
    The first chunk's exception (in order) is raised once all have finished."""
    chunks = [items[start : start + size] for start in range(0, len(items), size)]
    if len(chunks) <= 1:
        return [call(chunk) for chunk in chunks]
    with ThreadPoolExecutor(min(IN_FLIGHT, len(chunks)), "rotator-batch") as pool:
        return list(pool.map(call, chunks))


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
