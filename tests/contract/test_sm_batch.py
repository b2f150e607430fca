"""Secrets Manager targets read in batches (BatchGetSecretValue, 20 secrets a call).

AWS answers each secret's AWSCURRENT version; moto answers the secret's first ("default")
version, stale once a later version was promoted. The store trusts only entries labelled
AWSCURRENT (others read themselves with GetSecretValue), and the AWS-limits proxy answers
the batch as AWS does, so tests through it count what AWS would be asked.
"""

from __future__ import annotations

from typing import Any

from rotator.stores import SecretsManagerStore
from rotator.stores.batch import read_batched
from tests.contract.test_store_contract import make_token
from tests.contract.test_stores_specific import record_calls


def published(
    client: Any, count: int, *, rotations: int
) -> tuple[list[SecretsManagerStore], list[Any]]:
    """``count`` secrets, each created then rotated ``rotations`` times (the staged way)."""
    stores = [SecretsManagerStore(client, f"batch/s{k:02d}", create=True) for k in range(count)]
    tokens = []
    for k, store in enumerate(stores):
        token = make_token("json", 300, tag=f"s{k}-0")
        store.put(token)
        for r in range(rotations):
            token = make_token("json", 600 + 300 * r, tag=f"s{k}-{r + 1}")
            store.put(token, store.get())
        tokens.append(token)
    return stores, tokens


def test_batch_reads_current_tokens_20_a_call(aws_limits: Any) -> None:
    client = aws_limits.client("secretsmanager")
    stores, tokens = published(client, 25, rotations=1)
    missing = SecretsManagerStore(client, "batch/missing")
    calls = record_calls(client)
    readings = read_batched([*stores, missing])
    assert calls == ["BatchGetSecretValue", "BatchGetSecretValue"]  # 26 ids: 20 + 6
    assert [readings[s.name].token for s in stores] == tokens
    assert readings[missing.name].is_missing


def test_batch_entry_not_labelled_current_is_read_again(aws: Any) -> None:
    """Plain moto answers the stale first version: it is not used."""
    client = aws.client("secretsmanager")
    stores, tokens = published(client, 3, rotations=1)
    raw = client.batch_get_secret_value(SecretIdList=[s._secret_id for s in stores])
    assert all("AWSCURRENT" not in e["VersionStages"] for e in raw["SecretValues"])  # the quirk
    readings = read_batched(stores)
    assert readings == {}  # nothing vouched for: each store reads itself
    assert [s.get().token for s in stores] == tokens
