"""SSM Parameter Store (SecureString) as a token store.

Parameter Store has no conditional write, so ``put`` never replaces a token that
expires later than the one it writes, judged by a read just before the write: the
rotation step's own read when it is at most ``FRESH_READ`` (0.25 s) old (the common
case: the step reads, fetches a token, writes; two calls), else a re-read (three).
A window remains between that read and the write: two writers that both read the old
value can both write, and the one that writes last wins even if its token
expires first. The loser's token stays valid until it expires, so readers are
never handed a dead token, only one with a shorter remaining life; the next
rotation of the other writer repairs it. Run one rotator per parameter (or use
Secrets Manager) where this matters.

Values up to 4,096 bytes are written in the free Standard tier, larger ones
(up to 8,192) in the Advanced tier. Versions are never labelled: a label on
the oldest of the 100 kept versions would make every later write fail with
``ParameterMaxVersionLimitExceeded``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from rotator.errors import StoreError, StoreUnavailable, StoreValueTooLarge
from rotator.stores.aws import error_code, map_aws_error
from rotator.stores.base import PutResult, Reading, decode_reading
from rotator.stores.batch import in_chunks
from rotator.token import Token, encode

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_ssm.type_defs import PutParameterResultTypeDef

__all__ = ["FRESH_READ", "IAM_ACTIONS", "MAX_ADVANCED_BYTES", "MAX_STANDARD_BYTES", "SsmStore"]

log = logging.getLogger(__name__)

# Every IAM action the calls below need (a test checks the two agree). A
# customer managed KMS key also needs kms:Decrypt and kms:Encrypt on that key.
IAM_ACTIONS: tuple[str, ...] = ("ssm:GetParameter", "ssm:GetParameters", "ssm:PutParameter")

MAX_STANDARD_BYTES = 4_096
MAX_ADVANCED_BYTES = 8_192
# A reading at most this old (seconds) serves as the read before a write. The step reads,
# fetches a token (tens of milliseconds from Keycloak) and writes: its read is as recent
# as a re-read would be once the write waits for its PutParameter pacer slot.
FRESH_READ = 0.25

_GET = "ssm:GetParameter"
_GET_MANY = "ssm:GetParameters"
_BATCH = 10  # GetParameters takes at most 10 names
_PUT = "ssm:PutParameter"
_AWS_ERRORS = (ClientError, BotoCoreError)
Tier = Literal["Standard", "Advanced"]


class SsmStore:
    """Publishes the token as one SecureString parameter."""

    def __init__(
        self,
        client: SSMClient,
        parameter: str,
        *,
        fmt: str = "json",
        kms_key_id: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not parameter:
            raise ValueError("parameter must not be empty")
        self._client = client
        self._parameter = parameter
        self._fmt = fmt
        self._kms_key_id = kms_key_id
        self._monotonic = monotonic

    def __repr__(self) -> str:
        return f"SsmStore({self._parameter!r}, fmt={self._fmt!r})"

    @property
    def name(self) -> str:
        return f"ssm:{self._parameter}"

    @property
    def format(self) -> str:
        return self._fmt

    @property
    def client_id(self) -> int:
        """Stores with the same client_id can be read together (``get_batch``)."""
        return id(self._client)

    def get(self) -> Reading:
        try:
            response = self._client.get_parameter(Name=self._parameter, WithDecryption=True)
        except _AWS_ERRORS as exc:
            if error_code(exc) == "ParameterNotFound":
                return Reading(read_at=self._monotonic())
            raise self._error(exc, _GET) from exc
        parameter = response.get("Parameter")
        if not parameter or "Value" not in parameter:
            # a cut-off answer parses as an empty 200: say so, and let it be retried
            raise StoreUnavailable(
                f"{_GET} on {self._parameter}: incomplete response from AWS",
                target=self._parameter,
                action=_GET,
            )
        return self._reading(parameter)

    def get_batch(self, stores: Sequence[SsmStore]) -> dict[str, Reading]:
        """Read ``stores`` (which share this store's client) with GetParameters, 10 names a
        call; missing parameters read as missing. Keyed by store name."""
        by_name = {store._parameter: store for store in stores}

        def read(chunk: Sequence[str]) -> dict[str, Reading]:
            try:
                response = self._client.get_parameters(Names=list(chunk), WithDecryption=True)
            except _AWS_ERRORS as exc:
                raise self._error(exc, _GET_MANY) from exc
            found = {p["Name"]: p for p in response.get("Parameters", []) if "Name" in p}
            missing = set(response.get("InvalidParameters", []))
            readings: dict[str, Reading] = {}
            for name in chunk:
                store = by_name[name]
                if name in found and "Value" in found[name]:
                    readings[store.name] = store._reading(found[name])
                elif name in missing:
                    readings[store.name] = Reading(read_at=store._monotonic())
                # else: not in the answer (cut off): the store reads itself later
            return readings

        readings: dict[str, Reading] = {}
        for part in in_chunks(read, list(by_name), _BATCH):
            readings.update(part)
        return readings

    def _reading(self, parameter: Mapping[str, Any]) -> Reading:
        value = str(parameter["Value"])
        version = str(parameter["Version"]) if "Version" in parameter else None
        return decode_reading(value, self._fmt, version, read_at=self._monotonic())

    def _is_fresh(self, reading: Reading | None) -> bool:
        """``reading`` is recent enough to stand for a read right before a write."""
        if reading is None or reading.read_at is None:
            return False
        return 0 <= self._monotonic() - reading.read_at <= FRESH_READ

    def put(self, token: Token, basis: Reading | None = None) -> PutResult:
        value = encode(token, self._fmt)
        size = len(value.encode("utf-8"))
        if size > MAX_ADVANCED_BYTES:
            raise StoreValueTooLarge(
                f"{_PUT} on {self._parameter} refused: value is {size} bytes, "
                f"Parameter Store allows at most {MAX_ADVANCED_BYTES} (Advanced tier)",
                target=self._parameter,
                action=_PUT,
            )
        if basis is not None and basis.holds_later(token):
            return basis.kept()
        # No conditional write exists: judge by a read right before the write.
        current = basis if self._is_fresh(basis) else self._read_before_write()
        if current is not None and current.holds_later(token):
            return current.kept()
        tier: Tier = "Standard" if size <= MAX_STANDARD_BYTES else "Advanced"
        try:
            response = self._put_parameter(value, tier)
        except _AWS_ERRORS as exc:
            if not (tier == "Standard" and _is_downgrade_refusal(exc)):
                raise self._error(exc, _PUT, value) from exc
            log.info("%s is an Advanced parameter already: writing Advanced", self.name)
            try:
                response = self._put_parameter(value, "Advanced")
            except _AWS_ERRORS as retry_exc:
                raise self._error(retry_exc, _PUT, value) from retry_exc
        version = response.get("Version")
        return PutResult(token, is_ours=True, version=None if version is None else str(version))

    def _read_before_write(self) -> Reading | None:
        """A fresh reading; None when the value cannot be decrypted (then it is replaced)."""
        try:
            return self.get()
        except StoreError as exc:
            if not _is_undecryptable(exc.__cause__):
                raise
            # The value is encrypted with a key we cannot use any more (deleted with
            # its stack, disabled, or no kms:Decrypt): what it holds is unknown and
            # unreadable to every consumer too, so overwriting it is the only repair.
            log.warning("%s cannot be decrypted (%s): overwriting it", self.name, exc)
            return None

    def ping(self) -> None:
        try:
            self._client.get_parameter(Name=self._parameter, WithDecryption=True)
        except _AWS_ERRORS as exc:
            if error_code(exc) == "ParameterNotFound":
                return  # put creates it
            raise self._error(exc, _GET) from exc

    def _put_parameter(self, value: str, tier: Tier) -> PutParameterResultTypeDef:
        key: dict[str, Any] = {"KeyId": self._kms_key_id} if self._kms_key_id else {}
        return self._client.put_parameter(
            Name=self._parameter,
            Value=value,
            Type="SecureString",
            Overwrite=True,
            Tier=tier,
            **key,
        )

    def _error(self, exc: Exception, action: str, value: str = "") -> StoreError:
        return map_aws_error(exc, target=self._parameter, action=action, redact=(value,))


# What GetParameter(WithDecryption) answers when the value's KMS key cannot be used:
# InvalidKeyId ("... is pending deletion", "... is disabled", "does not exist"),
# or AccessDeniedException whose message is KMS's ("The ciphertext refers to a
# customer master key that does not exist ..." / "... kms:Decrypt ...").
_KMS_READ_CODES = frozenset(
    {"InvalidKeyId", "KMSInvalidStateException", "KMSNotFoundException", "KMSDisabledException"}
)


def _is_undecryptable(exc: BaseException | None) -> bool:
    """A read failed because the stored value cannot be decrypted, not for lack of access."""
    if not isinstance(exc, ClientError):
        return False
    code = error_code(exc)
    if code in _KMS_READ_CODES or (code.startswith("KMS") and "AccessDenied" in code):
        return True
    message = str((exc.response.get("Error") or {}).get("Message", "")).lower()
    return code in {"AccessDeniedException", "AccessDenied"} and (
        "kms" in message or "ciphertext" in message
    )


def _is_downgrade_refusal(exc: Exception) -> bool:
    """AWS refuses a Standard write to a parameter that is Advanced already."""
    if not isinstance(exc, ClientError):
        return False
    message = str((exc.response.get("Error") or {}).get("Message", "")).lower()
    return "downgrade" in message or "advanced-parameter tier" in message
