"""The error hierarchy. Every error carries a one-line, secret-free message.

Each class says whether it is transient (worth a retry) and which exit code the
CLI maps it to, so the retry policy and the CLI never inspect messages.
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3


class RotatorError(Exception):
    """Root of every error rotator raises on purpose."""

    is_transient: bool = False
    exit_code: int = EXIT_FAILED


class ConfigError(RotatorError):
    """The configuration is missing, malformed or inconsistent."""

    exit_code = EXIT_USAGE


class SecretSourceError(RotatorError):
    """The client secret could not be resolved from its configured source."""

    exit_code = EXIT_USAGE


class KeySourceError(SecretSourceError):
    """The private key is missing, unreadable, encrypted or of the wrong type (exit 2)."""


class TokenEndpointError(RotatorError):
    """The token endpoint failed; carries the method, URL (no query) and status."""

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        status: int | None = None,
        error: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.error = error
        self.description = description


class TokenEndpointUnavailable(TokenEndpointError):
    """Connection error, timeout, 5xx or 429: worth a retry."""

    is_transient = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class CredentialsRejected(TokenEndpointError):
    """invalid_client / unauthorized_client: the client id or secret is wrong."""

    exit_code = EXIT_REJECTED


class InvalidGrant(TokenEndpointError):
    """The refresh token was rejected; the cure is a fresh client_credentials grant."""


class TokenRequestRejected(TokenEndpointError):
    """Any other 4xx (invalid_scope, unsupported_grant_type, ...): not retried."""


class InvalidTokenResponse(TokenEndpointError):
    """The endpoint answered 2xx with something that is not a usable token."""


class VerificationFailed(RotatorError):
    """verify_url did not accept the new token."""


class StoreError(RotatorError):
    """A target store failed; the message names the resource and the IAM action."""

    def __init__(self, message: str, *, target: str = "", action: str = "") -> None:
        super().__init__(message)
        self.target = target
        self.action = action


class PublishFailed(StoreError):
    """At least one target did not take the token; the others did."""

    def __init__(self, failures: Sequence[tuple[str, StoreError]]) -> None:
        text = "; ".join(str(err) for _, err in failures)
        super().__init__(f"publish failed for {len(failures)} target(s): {text}")
        self.failures = list(failures)
        self.is_transient = all(err.is_transient for _, err in failures)


class StoreUnavailable(StoreError):
    """Throttling, 5xx or a dropped connection: worth a retry."""

    is_transient = True


class StoreAccessDenied(StoreError):
    """The caller lacks an IAM permission (or a KMS grant)."""


class StoreNotFound(StoreError):
    """The secret or parameter does not exist (and may not be created)."""


class StoreValueTooLarge(StoreError):
    """The value exceeds what the backend accepts; refused before any call."""


class StoreQuotaExceeded(StoreError):
    """A service quota refused the write (Secrets Manager's LimitExceededException):
    waiting seconds does not help, so it is not retried in a loop."""


class WriteRefused(StoreError):
    """rotator itself refused to write to a target (it would run into a quota)."""

    exit_code = EXIT_USAGE


class StoreRejected(StoreError):
    """Validation or any other non-transient refusal by the backend."""


class VerificationUnavailable(VerificationFailed):
    """verify_url could not be reached or answered 5xx: worth a retry."""

    is_transient = True


class TokenUnavailable(RotatorError):
    """The store holds no usable token (missing, unreadable or expired)."""
