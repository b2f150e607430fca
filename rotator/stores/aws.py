"""Map botocore failures onto the StoreError hierarchy.

One function decides what is worth a retry (throttling, 5xx, a dropped
connection), what is a permission problem, what is missing and what is a plain
refusal, so the stores never inspect codes themselves. Messages are one line,
name the IAM action and the resource, and never carry the stored value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import urllib3.exceptions
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from rotator.errors import (
    StoreAccessDenied,
    StoreError,
    StoreNotFound,
    StoreQuotaExceeded,
    StoreRejected,
    StoreUnavailable,
)

__all__ = ["error_code", "map_aws_error"]

THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyUpdates",
        "ProvisionedThroughputExceeded",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
SERVER_CODES = frozenset(
    {
        "InternalServiceError",
        "InternalServiceErrorException",
        "InternalFailure",
        "InternalServerError",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
DENIED_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "UnauthorizedOperation",
        "KMSAccessDeniedException",
        "KMSAccessDenied",
    }
)
# Secrets Manager answers these when the caller may not use the secret's KMS key.
KMS_DENIED_CODES = frozenset({"DecryptionFailure", "EncryptionFailure"})
# A quota, not a rate: botocore counts LimitExceededException as throttling, rotator must not.
QUOTA_CODES = frozenset({"LimitExceededException", "ServiceQuotaExceededException"})
NOT_FOUND_CODES = frozenset({"ResourceNotFoundException", "ParameterNotFound"})

_MAX_MESSAGE = 300
_XML_CODE = re.compile(r"<Code>([^<]*)</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else).

    Recovers the code from an XML error body that a JSON-protocol client could
    not parse (moto answers IAM denials that way: botocore then reports the
    HTTP status as the code).
    """
    if not isinstance(exc, ClientError):
        return ""
    return _code_and_message(exc)[0]


def map_aws_error(
    exc: Exception,
    *,
    target: str,
    action: str,
    redact: Iterable[str] = (),
) -> StoreError:
    """The StoreError for a failed boto3 call; use as ``raise map_aws_error(...) from exc``.

    ``target`` names the resource (secret id, parameter name), ``action`` the
    IAM action (``secretsmanager:PutSecretValue``). Strings in ``redact`` (the
    value being written) are blanked out of the message should AWS ever echo
    them.
    """
    secrets = [s for s in redact if s]

    def make(cls: type[StoreError], text: str) -> StoreError:
        return cls(_one_line(f"{action} on {target} {text}", secrets), target=target, action=action)

    if isinstance(exc, ClientError):
        code, message = _code_and_message(exc)
        status = _status(exc)
        detail = f"{code}: {message}" if message else code
        if code in QUOTA_CODES:
            return make(StoreQuotaExceeded, f"refused by a service quota: {detail}")
        if code in THROTTLING_CODES or status == 429:
            return make(StoreUnavailable, f"throttled: {detail}")
        if code in SERVER_CODES or (status is not None and status >= 500):
            return make(StoreUnavailable, f"unavailable: {detail}")
        if code in NOT_FOUND_CODES:
            return make(StoreNotFound, f"not found: {message or code}")
        if _is_kms_denial(code, message):
            return make(StoreAccessDenied, f"denied by KMS: {detail}")
        if code in DENIED_CODES or status == 403:
            return make(StoreAccessDenied, f"denied: {message or code}")
        return make(StoreRejected, f"rejected: {detail}")
    if isinstance(exc, NoCredentialsError):
        return make(StoreAccessDenied, "denied: no AWS credentials found")
    if isinstance(exc, PartialCredentialsError):
        return make(StoreAccessDenied, "denied: incomplete AWS credentials")
    if isinstance(exc, CredentialRetrievalError):
        # IMDS, ECS or IRSA did not answer in time: usually passes.
        return make(StoreUnavailable, f"unavailable: cannot fetch AWS credentials: {exc}")
    if isinstance(exc, BotoConnectionError | HTTPClientError | ConnectionClosedError):
        return make(StoreUnavailable, f"unavailable: {type(exc).__name__}: {exc}")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        # urllib3 / requests / socket failures botocore did not wrap.
        return make(StoreUnavailable, f"unavailable: {type(exc).__name__}: {exc}")
    if isinstance(exc, ParamValidationError):
        # botocore may quote a parameter value here: keep only the class name.
        return make(StoreRejected, "rejected: request failed botocore parameter validation")
    if isinstance(exc, BotoCoreError):
        return make(StoreRejected, f"rejected: {type(exc).__name__}: {exc}")
    return make(StoreRejected, f"failed: {type(exc).__name__}")


def _code_and_message(exc: ClientError) -> tuple[str, str]:
    error: dict[str, Any] = dict(exc.response.get("Error") or {})
    code = str(error.get("Code") or "")
    message = str(error.get("Message") or "")
    if message.lstrip().startswith("<"):
        xml_code = _XML_CODE.search(message)
        xml_message = _XML_MESSAGE.search(message)
        if xml_code:
            code = xml_code.group(1)
        message = xml_message.group(1) if xml_message else ""
    if not code:
        status = _status(exc)
        code = str(status) if status is not None else "Unknown"
    return code, message


def _status(exc: ClientError) -> int | None:
    meta: dict[str, Any] = dict(exc.response.get("ResponseMetadata") or {})
    status = meta.get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def _is_kms_denial(code: str, message: str) -> bool:
    if code in KMS_DENIED_CODES:
        return True
    if code.startswith("KMS") and "AccessDenied" in code:
        return True
    return code in {"AccessDeniedException", "AccessDenied"} and "kms" in message.lower()


def _one_line(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text
