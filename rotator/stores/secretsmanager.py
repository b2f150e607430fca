"""AWS Secrets Manager as a token store, with a compare-and-set publish.

A new value is written as a version labelled ``RotatorPending`` and then promoted
with ``UpdateSecretVersionStage(AWSCURRENT, MoveToVersionId=new,
RemoveFromVersionId=<the version we read>)``. That call fails with
``InvalidParameterException`` when another writer moved ``AWSCURRENT`` first,
so two rotators racing on one secret never overwrite a later token with an
earlier one: the loser re-reads and adopts the winner (or tries again when its
own token is the later one).

Every read asks for ``VersionStage="AWSCURRENT"`` explicitly (moto may
otherwise return a stale version).

A rotation in the common case is three calls: the step's ``GetSecretValue`` (the
basis), ``PutSecretValue(VersionStages=["RotatorPending"])`` and the promoting
``UpdateSecretVersionStage``. The label stays on the promoted version: a staging
label is attached to one version at a time, so the next ``PutSecretValue`` moves
it off (AWS and moto alike), and no separate call is needed to remove it. Only a
version that was *not* promoted (another writer won the compare-and-set) has it
removed at once. The label is rotator's own, not ``AWSPENDING``: AWSPENDING on a
version that is not AWSCURRENT tells AWS's ``RotateSecret`` that a rotation is in
progress, and moto treats a replayed ``PutSecretValue`` (same ClientRequestToken,
same value: a no-op on AWS) of a version labelled AWSPENDING as a new write that
drops AWSCURRENT from it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from rotator.errors import (
    StoreError,
    StoreNotFound,
    StoreRejected,
    StoreUnavailable,
    StoreValueTooLarge,
)
from rotator.stores.aws import error_code, map_aws_error
from rotator.stores.base import PutResult, Reading, decode_reading
from rotator.stores.batch import in_chunks
from rotator.token import Token, encode

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

__all__ = ["IAM_ACTIONS", "MAX_VALUE_BYTES", "SecretsManagerStore", "request_token"]

log = logging.getLogger(__name__)

# Every IAM action the calls below need (a test checks the two agree). A
# customer managed KMS key also needs kms:Decrypt and kms:GenerateDataKey on it.
IAM_ACTIONS: tuple[str, ...] = (
    "secretsmanager:GetSecretValue",
    "secretsmanager:BatchGetSecretValue",
    "secretsmanager:DescribeSecret",
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:ListSecretVersionIds",
)

MAX_VALUE_BYTES = 65_536
CAS_ATTEMPTS = 3

_GET = "secretsmanager:GetSecretValue"
_GET_MANY = "secretsmanager:BatchGetSecretValue"
_BATCH = 20  # BatchGetSecretValue takes at most 20 secret ids
_DESCRIBE = "secretsmanager:DescribeSecret"
_CREATE = "secretsmanager:CreateSecret"
_PUT = "secretsmanager:PutSecretValue"
_STAGE = "secretsmanager:UpdateSecretVersionStage"
_LIST = "secretsmanager:ListSecretVersionIds"
_CURRENT = "AWSCURRENT"
_PENDING = "RotatorPending"  # rotator's own staging label: see the module docstring
_AWS_ERRORS = (ClientError, BotoCoreError)
_REQUEST_TOKEN_CONTEXT = b"rotator secretsmanager ClientRequestToken v1"


def request_token(secret_id: str, value: str) -> str:
    """The ``ClientRequestToken`` (and so the VersionId) for writing ``value`` to a secret.

    Derived from what is written, so a retry of the same token is a no-op on AWS (same
    token, same value: AWS returns the existing version) and two replicas publishing the
    same token converge on one version, instead of each attempt creating a version toward
    the quota. 64 hex digits of SHA-256 over a fixed context, the secret id and the value.

    Safe to show: VersionIds are visible to anyone allowed ``ListSecretVersionIds`` or
    ``DescribeSecret``, less than ``GetSecretValue``. The value holds the access token,
    which carries at least 128 unpredictable bits (a JWT's signature, or a random opaque
    token), and SHA-256 is preimage-resistant: the digest neither reveals the token nor
    lets anyone test guesses faster than guessing a valid token outright. Only someone who
    already holds the token could confirm it is the published one.
    """
    digest = hashlib.sha256()
    for part in (_REQUEST_TOKEN_CONTEXT, secret_id.encode("utf-8"), value.encode("utf-8")):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class SecretsManagerStore:
    """Publishes the token as the ``AWSCURRENT`` version of one secret."""

    def __init__(
        self,
        client: SecretsManagerClient,
        secret_id: str,
        *,
        fmt: str = "json",
        create: bool = False,
        kms_key_id: str | None = None,
    ) -> None:
        if not secret_id:
            raise ValueError("secret_id must not be empty")
        self._client = client
        self._secret_id = secret_id
        self._fmt = fmt
        self._create = create
        self._kms_key_id = kms_key_id

    def __repr__(self) -> str:
        return f"SecretsManagerStore({self._secret_id!r}, fmt={self._fmt!r})"

    @property
    def name(self) -> str:
        return f"secretsmanager:{self._secret_id}"

    @property
    def format(self) -> str:
        return self._fmt

    @property
    def client_id(self) -> int:
        """Stores with the same client_id can be read together (``get_batch``)."""
        return id(self._client)

    def get(self) -> Reading:
        try:
            response = self._client.get_secret_value(
                SecretId=self._secret_id, VersionStage=_CURRENT
            )
        except _AWS_ERRORS as exc:
            if error_code(exc) == "ResourceNotFoundException":
                # No secret, or a secret that has no AWSCURRENT value yet.
                return Reading()
            raise self._error(exc, _GET) from exc
        if response.get("VersionId") is None:
            # a cut-off answer parses as an empty 200: say so, and let it be retried
            raise StoreUnavailable(
                f"{_GET} on {self._secret_id}: incomplete response from AWS",
                target=self._secret_id,
                action=_GET,
            )
        return self._reading(response)

    def get_batch(self, stores: Sequence[SecretsManagerStore]) -> dict[str, Reading]:
        """Read ``stores`` (which share this store's client) with BatchGetSecretValue, 20
        secrets a call; keyed by store name. Missing secrets read as missing.

        BatchGetSecretValue takes no VersionStage: AWS answers each secret's AWSCURRENT
        version (as GetSecretValue does without one), and every entry carries its
        ``VersionStages``. An entry that is not labelled AWSCURRENT (moto answers the
        secret's first "default" version, stale after a staged publish) or any other error
        is left out: that store then reads itself with GetSecretValue(AWSCURRENT)."""
        by_id = {store._secret_id: store for store in stores}

        def read(chunk: Sequence[str]) -> dict[str, Reading]:
            try:
                response = self._client.batch_get_secret_value(SecretIdList=list(chunk))
            except _AWS_ERRORS as exc:
                raise self._error(exc, _GET_MANY) from exc
            readings: dict[str, Reading] = {}
            for entry in response.get("SecretValues", []):
                store = _match(by_id, entry.get("Name"), entry.get("ARN"))
                if (
                    store is not None
                    and entry.get("VersionId")
                    and _CURRENT in entry.get("VersionStages", [])
                ):
                    readings[store.name] = store._reading(entry)
            for error in response.get("Errors", []):
                store = by_id.get(str(error.get("SecretId", "")))
                if store is not None and error.get("ErrorCode") == "ResourceNotFoundException":
                    readings[store.name] = Reading()
            return readings

        readings: dict[str, Reading] = {}
        for part in in_chunks(read, list(by_id), _BATCH):
            readings.update(part)
        return readings

    def _reading(self, response: Mapping[str, Any]) -> Reading:
        version = str(response["VersionId"])
        value = response.get("SecretString")
        if value is None:
            return Reading(
                value="",
                version=version,
                problem="secret holds SecretBinary, not a SecretString",
            )
        return decode_reading(value, self._fmt, version)

    def put(self, token: Token, basis: Reading | None = None) -> PutResult:
        value = encode(token, self._fmt)
        size = len(value.encode("utf-8"))
        if size > MAX_VALUE_BYTES:
            raise StoreValueTooLarge(
                f"{_PUT} on {self._secret_id} refused: value is {size} bytes, "
                f"Secrets Manager allows at most {MAX_VALUE_BYTES}",
                target=self._secret_id,
                action=_PUT,
            )
        if basis is None:
            basis = self.get()
        if basis.holds_later(token):
            return basis.kept()
        if basis.value == value:
            # already published (a retried step, a replica that adopted it): no new version
            return PutResult(token, is_ours=True, version=basis.version)
        if basis.is_missing and self._create:
            version = self._create_secret(value)
            if version is not None:
                return PutResult(token, is_ours=True, version=version)
            basis = self.get()  # someone else created it meanwhile
            if basis.holds_later(token):
                return basis.kept()
        return self._publish(token, value, basis)

    def ping(self) -> None:
        try:
            described = self._client.describe_secret(SecretId=self._secret_id)
        except _AWS_ERRORS as exc:
            if error_code(exc) == "ResourceNotFoundException":
                if self._create:
                    return
                raise self._not_found(_DESCRIBE) from exc
            raise self._error(exc, _DESCRIBE) from exc
        primary = described.get("PrimaryRegion")
        if primary and primary != self._client.meta.region_name:
            raise self._replica(_DESCRIBE, primary)

    def versions_created_since(self, cutoff: datetime) -> int:
        """Versions of the secret created at or after ``cutoff`` (deprecated ones too: they
        count toward AWS's version quota until they are 24 hours old)."""
        count = 0
        options: dict[str, Any] = {}
        while True:
            try:
                page = self._client.list_secret_version_ids(
                    SecretId=self._secret_id, IncludeDeprecated=True, MaxResults=100, **options
                )
            except _AWS_ERRORS as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return 0
                raise self._error(exc, _LIST) from exc
            for version in page.get("Versions", []):
                created = version.get("CreatedDate")
                if created is not None and created >= cutoff:
                    count += 1
            token = page.get("NextToken")
            if not token:
                return count
            options = {"NextToken": token}

    # -- internals ---------------------------------------------------------

    def _create_secret(self, value: str) -> str | None:
        """Create the secret holding ``value``; None when it already exists."""
        token = request_token(self._secret_id, value)
        key: dict[str, Any] = {"KmsKeyId": self._kms_key_id} if self._kms_key_id else {}
        try:
            response = self._client.create_secret(
                Name=self._secret_id,
                SecretString=value,
                ClientRequestToken=token,
                **key,
            )
        except _AWS_ERRORS as exc:
            if error_code(exc) == "ResourceExistsException":
                return None
            raise self._error(exc, _CREATE, value) from exc
        log.info("created secret %s", self._secret_id)
        return response.get("VersionId", token)

    def _publish(self, token: Token, value: str, basis: Reading) -> PutResult:
        new = request_token(self._secret_id, value)
        try:
            response = self._client.put_secret_value(
                SecretId=self._secret_id,
                SecretString=value,
                ClientRequestToken=new,
                VersionStages=[_PENDING],
            )
        except _AWS_ERRORS as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise self._not_found(_PUT) from exc
            if _is_replica_refusal(exc):
                raise self._replica(_PUT, self._primary_region()) from exc
            raise self._error(exc, _PUT, value) from exc
        if _CURRENT in response.get("VersionStages", []):
            # The first version of an empty secret becomes AWSCURRENT at once.
            return PutResult(token, is_ours=True, version=new)
        promoted = False
        try:
            result = self._promote(token, new, basis)
            promoted = result.version == new
            return result
        finally:
            if not promoted:
                # Another writer won (or the promotion failed): our version must not
                # stay labelled pending. A promoted one keeps it until the next Put.
                self._drop_pending(new)

    def _promote(self, token: Token, new: str, basis: Reading) -> PutResult:
        for _ in range(CAS_ATTEMPTS):
            try:
                if basis.version is None:
                    self._client.update_secret_version_stage(
                        SecretId=self._secret_id,
                        VersionStage=_CURRENT,
                        MoveToVersionId=new,
                    )
                else:
                    self._client.update_secret_version_stage(
                        SecretId=self._secret_id,
                        VersionStage=_CURRENT,
                        MoveToVersionId=new,
                        RemoveFromVersionId=basis.version,
                    )
            except _AWS_ERRORS as exc:
                if error_code(exc) != "InvalidParameterException":
                    raise self._error(exc, _STAGE) from exc
                # Another writer moved AWSCURRENT since our read.
                basis = self.get()
                if basis.version == new:
                    return PutResult(token, is_ours=True, version=new)
                if basis.holds_later(token):
                    log.info("%s: another writer published a later token", self.name)
                    return basis.kept()
                continue
            return PutResult(token, is_ours=True, version=new)
        raise StoreUnavailable(
            f"{_STAGE} on {self._secret_id} lost the compare-and-set {CAS_ATTEMPTS} times "
            "to other writers",
            target=self._secret_id,
            action=_STAGE,
        )

    def _drop_pending(self, new: str) -> None:
        try:
            self._client.update_secret_version_stage(
                SecretId=self._secret_id,
                VersionStage=_PENDING,
                RemoveFromVersionId=new,
            )
        except _AWS_ERRORS as exc:
            # Harmless: the label moves to the next writer's version anyway.
            mapped = map_aws_error(exc, target=self._secret_id, action=_STAGE)
            log.warning("%s: could not remove %s: %s", self.name, _PENDING, mapped)

    def _error(self, exc: Exception, action: str, value: str = "") -> StoreError:
        return map_aws_error(exc, target=self._secret_id, action=action, redact=(value,))

    def _primary_region(self) -> str | None:
        try:
            return self._client.describe_secret(SecretId=self._secret_id).get("PrimaryRegion")
        except _AWS_ERRORS:
            return None

    def _replica(self, action: str, primary: str | None) -> StoreRejected:
        region = self._client.meta.region_name
        where = f"region {primary}" if primary else "its primary region"
        return StoreRejected(
            f"{action} on {self._secret_id} refused: the secret in {region} is a read-only "
            f"replica; write to the primary secret in {where} (set the target's region "
            f"to {primary or 'the primary region'})",
            target=self._secret_id,
            action=action,
        )

    def _not_found(self, action: str) -> StoreNotFound:
        return StoreNotFound(
            f"{action} on {self._secret_id}: the secret does not exist; "
            "create it or set `create = true`",
            target=self._secret_id,
            action=action,
        )


def _match(
    by_id: Mapping[str, SecretsManagerStore], name: object, arn: object
) -> SecretsManagerStore | None:
    """The store a batch entry answers: its secret id is the entry's name or ARN."""
    for key in (name, arn):
        if isinstance(key, str) and key in by_id:
            return by_id[key]
    return None


def _is_replica_refusal(exc: Exception) -> bool:
    """AWS refuses writes to a replica secret ("Operation not permitted on a replica")."""
    if not isinstance(exc, ClientError):
        return False
    return "replica" in str((exc.response.get("Error") or {}).get("Message", "")).lower()
