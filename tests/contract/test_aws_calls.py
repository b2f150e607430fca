"""AWS calls per publish in the common case, through the AWS-limits proxy in front of moto.

A rotation step reads its targets (the basis), fetches a token and publishes it:

* SSM: the step's read stands for the read before the write when it is at most
  ``FRESH_READ`` old: one ``PutParameter`` after it (2 calls a rotation); an older basis
  is read again first (3);
* Secrets Manager: ``PutSecretValue(RotatorPending)`` and the promoting
  ``UpdateSecretVersionStage`` (3 calls a rotation with the step's read); the pending
  label stays on the promoted version until the next Put moves it, and is removed only
  from a version that was not promoted.
"""

from __future__ import annotations

from typing import Any

from rotator.stores import SecretsManagerStore, SsmStore
from rotator.stores.ssm import FRESH_READ
from tests.contract.test_store_contract import PARAMETER, SECRET_ID, make_token
from tests.contract.test_stores_specific import record_calls, stages


class Monotonic:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ssm_publish_after_a_fresh_read_is_one_call(aws_limits: Any) -> None:
    clock = Monotonic()
    store = SsmStore(aws_limits.client("ssm"), PARAMETER, monotonic=clock)
    assert store.put(make_token("json", 300)).is_ours  # nothing read: reads first
    basis = store.get()
    clock.now += FRESH_READ  # the token fetch took a second
    calls = record_calls(store._client)
    token = make_token("json", 600)
    assert store.put(token, basis).is_ours
    assert calls == ["PutParameter"]
    assert store.get().token == token


def test_ssm_publish_after_an_old_read_reads_again(aws_limits: Any) -> None:
    clock = Monotonic()
    ours = SsmStore(aws_limits.client("ssm"), PARAMETER, monotonic=clock)
    theirs = SsmStore(aws_limits.client("ssm"), PARAMETER)
    ours.put(make_token("json", 100, tag="old"))
    basis = ours.get()
    clock.now += FRESH_READ + 0.5  # a slow fetch (retries): the read is too old to trust
    winner = make_token("json", 900, tag="winner")
    assert theirs.put(winner).is_ours
    calls = record_calls(ours._client)
    result = ours.put(make_token("json", 600, tag="mine"), basis)
    assert calls == ["GetParameter"]
    assert (result.is_ours, result.published) == (False, winner)
    assert ours.get().token == winner


def test_ssm_missing_parameter_read_is_fresh_too(aws_limits: Any) -> None:
    clock = Monotonic()
    store = SsmStore(aws_limits.client("ssm"), PARAMETER, monotonic=clock)
    basis = store.get()
    assert basis.is_missing
    calls = record_calls(store._client)
    assert store.put(make_token("json", 300), basis).is_ours
    assert calls == ["PutParameter"]


def test_ssm_write_within_the_fresh_window_is_the_documented_race(aws_limits: Any) -> None:
    """Parameter Store has no conditional write: a write that lands between our read and
    our write (now: within FRESH_READ of the step's read) is replaced by a token that is
    itself valid for a whole lifetime (see rotator/stores/ssm.py)."""
    clock = Monotonic()
    ours = SsmStore(aws_limits.client("ssm"), PARAMETER, monotonic=clock)
    theirs = SsmStore(aws_limits.client("ssm"), PARAMETER)
    ours.put(make_token("json", 100, tag="old"))
    basis = ours.get()
    theirs.put(make_token("json", 900, tag="winner"))
    mine = make_token("json", 600, tag="mine")
    assert ours.put(mine, basis).is_ours
    assert ours.get().token == mine


def test_sm_publish_is_two_calls_and_leaves_no_unpromoted_pending(aws_limits: Any) -> None:
    store = SecretsManagerStore(aws_limits.client("secretsmanager"), SECRET_ID, create=True)
    store.put(make_token("json", 300))
    versions = []
    for expires_in in (600, 900, 1200):
        basis = store.get()
        calls = record_calls(store._client)
        token = make_token("json", expires_in)
        result = store.put(token, basis)
        assert result.is_ours
        assert calls == ["PutSecretValue", "UpdateSecretVersionStage"]
        versions.append(result.version)
    now = stages(aws_limits)
    assert [v for v, s in now.items() if "RotatorPending" in s] == [versions[-1]]
    assert now[versions[-1]] == ["AWSCURRENT", "RotatorPending"]
    assert now[versions[-2]] == ["AWSPREVIOUS"]
    assert store.get().token == token
    # one version per token published: the create, then three puts
    assert aws_limits.limits.versions_created(SECRET_ID) == 4
